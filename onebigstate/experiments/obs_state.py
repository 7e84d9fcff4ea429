"""A look inside a trained OBS model after one see-and-hear stream: what it wrote, and the
circuits of a word and of the object it named.

Axis letters: ``N`` nodes, ``K`` circuit slots.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from onebigstate.data.streams import PAIR_VIEW, PAIR_WORD, StreamBatch
from onebigstate.nets.obs_mixer import OBSMixer
from onebigstate.nets.stack import SeqModel


@dataclass
class PairingView:
    """One stream's big state after the stream and the circuits of one of its pairings."""

    delta: torch.Tensor        # [N, N] S_T - S_0: everything the stream wrote
    touched: torch.Tensor      # [N, N] bool, entries written at least once
    pairing_delta: torch.Tensor  # [N, N] S_t - S_0 right after the pairing's word (step t)
    object_nodes: list[int]    # circuit of the pairing's object (last frame of its first view)
    word_nodes: list[int]      # circuit of the pairing's word (its first exposure)
    object_class: int
    word: str
    object_step: int
    word_step: int


def first_obs_mixer(model: SeqModel) -> OBSMixer:
    for m in model.mixers:
        if isinstance(m, OBSMixer):
            return m
    raise ValueError(f"model {model.cfg.name} has no OBS layer to look inside")


@torch.no_grad()
def _run(model: SeqModel, x: torch.Tensor, obs: OBSMixer):
    was_training = model.training
    model.eval()
    try:
        _, states = model(x)
    finally:
        model.train(was_training)
    st = states[list(model.mixers).index(obs)]
    return st, obs.last_stats


@torch.no_grad()
def inspect_pairing(model: SeqModel, batch: StreamBatch, stream: int = 0, pairing: int = 0) -> PairingView:
    """Run stream ``stream`` of ``batch`` through ``model`` from a fresh state and return the
    first OBS layer's circuits of pairing ``pairing`` and its state: ``delta``/``touched`` after
    the whole stream, ``pairing_delta`` right after the pairing's word was heard."""
    obs = first_obs_mixer(model)
    x = batch.packed()[stream: stream + 1].to(model.head.weight.dtype)
    st, stats = _run(model, x, obs)
    obj, word = int(batch.pair_objects[stream, pairing]), int(batch.pair_words[stream, pairing])
    event, item = batch.event[stream], batch.item[stream]
    word_steps = ((event == PAIR_WORD) & (item == word)).nonzero().flatten()
    view_steps = ((event == PAIR_VIEW) & (item == obj)).nonzero().flatten()
    t_word = int(word_steps[0])
    t_obj = int(view_steps[view_steps < t_word].max())

    def circuit(t: int) -> list[int]:
        k = int(stats.k_hard[0, t])
        return stats.circuit_idx[0, t, :k].tolist()

    s0 = obs.initial_matrix().to(st.dtype)
    at_pairing, _ = _run(model, x[:, : t_word + 1], obs)
    return PairingView(delta=(st.as_dense()[0] - s0).float(), touched=st.touched[0].clone(),
                       pairing_delta=(at_pairing.as_dense()[0] - s0).float(),
                       object_nodes=circuit(t_obj), word_nodes=circuit(t_word), object_class=obj,
                       word=batch.words[word], object_step=t_obj, word_step=t_word)
