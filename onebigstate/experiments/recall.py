"""Cross-modal recall of a trained see-and-hear model against exposures and delay.

Axis letters: ``B`` streams, ``T`` steps, ``C`` outputs (objects, then words).

For each (exposures ``e``, delay ``d``) of a grid, held-out streams are made with
``StreamConfig(split=..., exposures=[e], delay_min=d, delay_max=d)`` (delays are exact) and
streamed through the model in windows of ``window`` steps with the model's state carried
from window to window (lifelong, as a deployed model would run): a 10,000-step delay is never
one giant window. Every model here carries its state (OBS: the big state and active set;
LSTM, Mamba, DeltaNet: their recurrent states; the Transformer: its whole KV cache, uncapped,
so attention at 10,000 steps sees every past step).

Scoring (as the task's): the argmax over the answer's group of outputs, objects for a word
query, words for an image query, so chance is 1 in 10 for word->object.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from onebigstate.data.seeandhear import SeeHearData
from onebigstate.data.streams import IGNORE, StreamBatch, StreamConfig, generate_streams, recall_counts
from onebigstate.nets.stack import SeqModel
from onebigstate.tasks.seeandhear_task import grouped_predictions


@dataclass
class RecallGrid:
    """Which conditions to measure: every exposure count at ``exposure_delay`` steps, and
    every delay after ``delay_exposures`` exposures."""

    exposures: tuple[int, ...] = (1, 2, 3, 5)
    delays: tuple[int, ...] = (10, 100, 1000, 10_000)
    exposure_delay: int = 100
    delay_exposures: int = 1

    def conditions(self) -> list[tuple[int, int]]:
        conds = [(e, self.exposure_delay) for e in self.exposures]
        conds += [(self.delay_exposures, d) for d in self.delays if (self.delay_exposures, d) not in conds]
        return conds


@dataclass
class RecallResult:
    """Correct and total answers per ``(query kind, exposures, delay)``, and seconds spent."""

    counts: dict[tuple[str, int, int], tuple[int, int]] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, counts: dict[tuple[str, int, int], tuple[int, int]]) -> None:
        for k, (c, n) in counts.items():
            c0, n0 = self.counts.get(k, (0, 0))
            self.counts[k] = (c0 + c, n0 + n)

    def accuracy(self, kind: str, exposures: int, delay: int) -> tuple[float, int]:
        """(accuracy, number of queries) of the queries whose requested delay was ``delay``.

        A query that landed on another query moves a few steps later; it counts for the delay
        it was asked for (the nearest one of the grid at or below its real delay).
        """
        c = n = 0
        for (k, e, d), (ci, ni) in self.counts.items():
            if k == kind and e == exposures and delay <= d < delay + max(8, delay // 10):
                c, n = c + ci, n + ni
        return (c / n if n else float("nan")), n

    def to_json(self) -> dict:
        return {"counts": [[k, e, d, c, n] for (k, e, d), (c, n) in self.counts.items()], "seconds": self.seconds}

    @staticmethod
    def from_json(d: dict) -> "RecallResult":
        return RecallResult({(k, e, dl): (c, n) for k, e, dl, c, n in d["counts"]}, d["seconds"])


@torch.no_grad()
def stream_predictions(model: SeqModel, batch: StreamBatch, window: int) -> torch.Tensor:
    """Grouped predictions ``[B, T]`` (-1 off the queries), streaming ``window`` steps at a time
    with the model's state carried from window to window."""
    was_training = model.training
    model.eval()
    dtype = model.head.weight.dtype
    device = model.head.weight.device
    packed = batch.packed()
    B, T, _ = packed.shape
    pred = torch.full((B, T), -1, dtype=torch.long)
    states = None
    try:
        for start in range(0, T, window):
            x = packed[:, start:start + window].to(device=device, dtype=dtype)
            y = batch.target[:, start:start + window]
            out, states = model(x, states, in_place=True)
            if (y != IGNORE).any():
                pred[:, start:start + window] = grouped_predictions(out.float().cpu(), y)
    finally:
        model.train(was_training)
    return pred.masked_fill(batch.target == IGNORE, -1)


def measure_recall(model: SeqModel, base: StreamConfig, grid: RecallGrid, n_streams: int, seed: int,
                   window: int = 512, batch_size: int = 32, data: SeeHearData | None = None) -> RecallResult:
    """Recall of ``model`` on the grid's conditions; streams from ``base`` with only the
    exposures and the delay changed (``base.split`` is the split measured). ``data``: the
    images and words to draw from (default the shipped ones; your own:
    :func:`onebigstate.data.user_items.with_user_items`)."""
    result = RecallResult()
    t0 = time.perf_counter()
    for e, d in grid.conditions():
        cfg = base.model_copy(update={"exposures": [e], "delay_min": d, "delay_max": d, "seq_len": None})
        cfg = StreamConfig(**cfg.model_dump())
        long = cfg.required_len > 4096
        for start in range(0, n_streams, batch_size):
            n = min(batch_size, n_streams - start)
            # a fixed seed per condition and chunk of streams: every model sees the same streams
            batch = generate_streams(cfg, n, seed + 7919 * e + 104_729 * d + start, data=data,
                                     dtype=torch.float16 if long else torch.float32)
            result.add(recall_counts(stream_predictions(model, batch, window), batch))
    result.seconds = time.perf_counter() - t0
    return result
