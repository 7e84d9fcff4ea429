"""See and hear as a :class:`Task`: an object is seen, its name is heard, later one brings back the other.

Params are :class:`SeeHearParams`: every :class:`~onebigstate.data.streams.StreamConfig` knob
(the training streams: split ``train``, a fresh random word-to-object pairing in every
stream) plus where the held-out set comes from (``test_split``: ``novel`` words never heard
in training, spoken by test voices, about test scans). Batch ``step`` of a run with data seed
``s`` is ``generate_streams(params, batch_size, batch_seed(s, step))``; the held-out set is
``generate_streams(params with split=test_split, test_size, heldout_seed(s))``.

Inputs are packed steps ``[B, T, F + 2]`` (features, modality id, continuous flag:
``StreamBatch.packed``); labels ``[B, T]`` hold the answer on query steps (objects 0..9, words
from 10) and -100 elsewhere. The model is a :class:`StreamSeqModel`: the packed steps go
through a :class:`~onebigstate.encoders.MultimodalEncoder`, and the continuous flags (image
steps continuous, words discrete) reach OBS.

The encoder is first pretrained on single steps of the training split (``pretrain_steps``,
:mod:`onebigstate.tasks.seeandhear_pretrain`: which digit, which word), the same for every model.

Scoring: a word query's answer is an object, an image query's a word, and the kind of query is
plain from the input, so the prediction is the argmax over the answer's own group of outputs
(the 10 objects, or the words). Chance for word->object is 1 in 10.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from onebigstate.data.layout import StreamLayout
from onebigstate.data.seeandhear import load_seeandhear
from onebigstate.data.streams import IGNORE, WORD_TARGET_OFFSET, StreamConfig, generate_streams, n_targets
from onebigstate.encoders import MultimodalEncoder
from onebigstate.nets.stack import ModelConfig, SeqModel
from onebigstate.tasks.base import Task, TaskConfig, batch_seed, heldout_seed
from onebigstate.tasks.registry import register_task
from onebigstate.tasks.seeandhear_pretrain import pretrain_cached


class SeeHearParams(StreamConfig):
    """The training streams' :class:`StreamConfig`, and the split of the held-out set."""

    test_split: Literal["test", "novel"] = Field(
        "novel", description="held-out streams: novel (words never heard in training) or test (digit words); "
                             "both with test voices and test scans")
    pretrain_steps: int = Field(300, ge=0, description="batches of encoder pretraining on single training steps "
                                                        "(seeandhear_pretrain.py) before sequence training; 0: none")
    freeze_encoder: bool = Field(False, description="keep the (pretrained) encoder fixed during sequence training")


# the params that are not StreamConfig knobs
TASK_KEYS = {"test_split", "pretrain_steps", "freeze_encoder"}


class PackedStreamEncoder(nn.Module):
    """Packed steps ``[B, T, F + 2]`` -> ``[B, T, D]`` through a :class:`MultimodalEncoder`."""

    def __init__(self, layout: StreamLayout, d_model: int):
        super().__init__()
        self.layout = layout
        self.multimodal = MultimodalEncoder(layout, d_model)

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        return self.multimodal(packed)[0]


class StreamSeqModel(SeqModel):
    """:class:`SeqModel` on packed multimodal steps: the continuous flags are read from the
    packed input's last channel (unless given) and handed to the mixers that use them."""

    def __init__(self, cfg: ModelConfig, n_out: int, layout: StreamLayout):
        super().__init__(cfg, n_out, encoder=PackedStreamEncoder(layout, cfg.d_model))
        self.layout = layout

    def hidden(self, x: torch.Tensor, states: list | None = None,
               continuous: torch.Tensor | None = None, *, in_place: bool = False) -> tuple[torch.Tensor, list]:
        if x.dim() != 3 or x.shape[-1] != self.layout.packed_dim:
            raise ValueError(f"expected packed steps [B, T, {self.layout.packed_dim}], got {tuple(x.shape)}")
        if continuous is None:
            continuous = x[..., -1] > 0.5
        return super().hidden(x, states, continuous, in_place=in_place)


def grouped_predictions(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Argmax within the answer's group: objects for labels < WORD_TARGET_OFFSET, words above.  [B, T]"""
    obj = outputs[..., :WORD_TARGET_OFFSET].argmax(-1)
    word = outputs[..., WORD_TARGET_OFFSET:].argmax(-1) + WORD_TARGET_OFFSET
    return torch.where(labels < WORD_TARGET_OFFSET, obj, word)


@register_task("seeandhear", SeeHearParams)
class SeeHearTask(Task):
    def __init__(self, cfg: TaskConfig, params: SeeHearParams):
        super().__init__(cfg, params)
        if params.seq_len is None:
            # a fixed length, so that state sizes (KV caches) can be reported per stream
            self.params = params.model_copy(update={"seq_len": params.length})
        self.data = load_seeandhear()
        self.n_out = n_targets(self.data)
        self.layout = StreamLayout(image_shape=tuple(self.data.images.shape[1:]), n_mels=self.data.word_mel.shape[2],
                                   audio_frames=self.data.word_mel.shape[3])
        self.d_input = self.layout.packed_dim

    def stream_config(self, split: str) -> StreamConfig:
        """The params as a :class:`StreamConfig` for ``split`` (extra words only where allowed)."""
        d = self.params.model_dump(exclude=TASK_KEYS)
        d["split"] = split
        if split == "novel":
            d["extra_words"] = False
        return StreamConfig(**d)

    def build_model(self, cfg: ModelConfig) -> StreamSeqModel:
        """The model, its encoder pretrained (``pretrain_steps``) from the task seed, frozen if asked."""
        model = StreamSeqModel(cfg, self.n_out, self.layout)
        encoder = model.embed.multimodal
        p = self.params
        if p.pretrain_steps:
            encoder.to(model.head.weight.dtype)
            settings = dict(steps=p.pretrain_steps, seed=self.cfg.seed, extra_words=p.extra_words,
                            image_jitter=p.image_jitter, image_noise=p.image_noise, audio_noise=p.audio_noise)
            self.pretrain_accuracy = pretrain_cached(encoder, self.data, **settings)
        if p.freeze_encoder:
            encoder.requires_grad_(False)
        return model

    def train_batch(self, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch = generate_streams(self.stream_config(self.params.split), batch_size,
                                 batch_seed(self.cfg.seed, step), self.data)
        return batch.packed(), batch.target

    def test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = generate_streams(self.stream_config(self.params.test_split), self.cfg.test_size,
                                 heldout_seed(self.cfg.seed), self.data)
        return batch.packed(), batch.target

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the query steps only, over the answer's group of outputs."""
        mask = labels != IGNORE
        return _grouped_ce(outputs[mask].float(), labels[mask], reduction="mean")

    def metrics(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return {k: s / max(n, 1.0) for k, (s, n) in self.metric_counts(outputs, labels).items()}

    def metric_counts(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict[str, tuple[float, float]]:
        mask = labels != IGNORE
        n = float(mask.sum())
        correct = float((grouped_predictions(outputs, labels)[mask] == labels[mask]).sum())
        loss_sum = float(_grouped_ce(outputs[mask].float(), labels[mask], reduction="sum")) if n else 0.0
        return {"loss": (loss_sum, n), "accuracy": (correct, n)}


def _grouped_ce(logits: torch.Tensor, labels: torch.Tensor, reduction: str) -> torch.Tensor:
    """Cross-entropy of ``logits [Q, C]`` with the other group's outputs masked out."""
    is_obj = (labels < WORD_TARGET_OFFSET).unsqueeze(1)
    col_obj = torch.arange(logits.shape[1], device=logits.device) < WORD_TARGET_OFFSET
    masked = logits.masked_fill(is_obj != col_obj.unsqueeze(0), float("-inf"))
    return F.cross_entropy(masked, labels, reduction=reduction)
