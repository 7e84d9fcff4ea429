"""Evaluations of a trained cell beyond the trainer's held-out metrics.

``grouped_accuracy`` scores a :class:`~onebigstate.tasks.common.Grouped` set per group; with a
``window`` it streams each sequence through the model in windows of that many tokens, carrying
the model's state from one window to the next (lifelong mode; every model in the library
carries its state: recurrent ones their recurrent state, attention its KV cache).
``written_entries`` counts, for OBS, the entries of the big state actually written while the
model reads held-out sequences (``StateStore.entries_written()``), per stream.
"""
from __future__ import annotations

from typing import Any

import torch
from tqdm import tqdm

from onebigstate.tasks.base import Task
from onebigstate.tasks.common import IGNORE, Grouped


def _device_dtype(model) -> tuple[torch.device, torch.dtype]:
    w = model.head.weight
    return w.device, w.dtype


@torch.no_grad()
def grouped_accuracy(model, data: Grouped, batch_size: int = 64, window: int = 0,
                     on_window=None, progress: bool = False, start_states: list | None = None) -> dict[str, float]:
    """Accuracy per group name (and ``all``) over the scored positions of ``data``.

    ``on_window(states, tokens_read)``, if given, is called after every window (for probes that
    watch the state along a stream); states it returns replace the carried ones (a shared state
    synced with other processes, ``distributed/shared_state.py``). ``progress`` shows a bar over
    the windows read. ``start_states`` (one batch of streams only) start the streams instead of
    fresh states; they are advanced in place."""
    if start_states is not None and data.inputs.shape[0] > batch_size:
        raise ValueError(f"start_states are the states of one batch, but {data.inputs.shape[0]} streams are read "
                         f"in batches of {batch_size}")
    device, _ = _device_dtype(model)
    was_training = model.training
    model.eval()
    n_groups = len(data.names)
    correct = torch.zeros(n_groups + 1, dtype=torch.float64)
    total = torch.zeros(n_groups + 1, dtype=torch.float64)
    try:
        B, T = data.inputs.shape
        step = window if window > 0 else T
        bar = tqdm(total=-(-B // batch_size) * -(-T // step), disable=not progress, desc="eval windows",
                   dynamic_ncols=True)
        for b0 in range(0, B, batch_size):
            states = start_states
            for t0 in range(0, T, step):
                x = data.inputs[b0:b0 + batch_size, t0:t0 + step].to(device)
                y = data.labels[b0:b0 + batch_size, t0:t0 + step].to(device)
                g = data.groups[b0:b0 + batch_size, t0:t0 + step].to(device)
                h, states = model.hidden(x, states, in_place=True)   # the old window is not read again
                bar.update()
                if on_window is not None:
                    states = on_window(states, t0 + x.shape[1]) or states
                mask = y != IGNORE
                if not mask.any():
                    continue
                pred = model.head(h[mask]).argmax(-1)
                right = (pred == y[mask]).double().cpu()
                grp = g[mask].cpu()
                correct.index_add_(0, grp, right)
                total.index_add_(0, grp, torch.ones_like(right))
                correct[-1] += right.sum()
                total[-1] += right.numel()
    finally:
        model.train(was_training)
    out = {name: float(correct[i] / total[i]) if total[i] else float("nan") for i, name in enumerate(data.names)}
    out["all"] = float(correct[-1] / total[-1]) if total[-1] else float("nan")
    return out


@torch.no_grad()
def written_entries(model, task: Task, n: int = 32) -> dict[str, float] | None:
    """Mean (over ``n`` held-out sequences) of the big-state entries written, summed over layers;
    ``None`` for models whose states do not count written entries (every model but OBS)."""
    inputs, _ = task.test_set()
    device, dtype = _device_dtype(model)
    x = inputs[:n].to(device)
    if x.is_floating_point():
        x = x.to(dtype)
    was_training = model.training
    model.eval()
    try:
        _, states = model.hidden(x, None)
    finally:
        model.train(was_training)
    counts = [s.entries_written().double() for s in states if hasattr(s, "entries_written")]
    if not counts:
        return None
    per_stream = torch.stack(counts).sum(0)
    return {"mean": float(per_stream.mean()), "max": float(per_stream.max())}


def heldout_metrics(model, task: Task, batch_size: int, train_len: int = 0,
                    progress: bool = False) -> dict[str, float]:
    """Held-out metrics of a trained model on ``task`` (which may be set longer than training).

    Token sequences longer than ``train_len`` are read in windows of ``train_len`` tokens, the
    state carried (the same numbers as one pass, see :func:`grouped_accuracy`), so memory stays
    that of the training length (Mamba's parallel scan at 4096 tokens, batch 64, needed > 19 GB);
    they report accuracy only. Others get the task's own metrics (``trainer.evaluate``).
    """
    from onebigstate.training.trainer import evaluate
    inputs, labels = task.test_set()
    if train_len and inputs.dim() == 2 and inputs.shape[1] > train_len:
        data = Grouped(inputs, labels, torch.where(labels != IGNORE, 0, -1), ["all"])
        return {"accuracy": grouped_accuracy(model, data, batch_size, window=train_len, progress=progress)["all"]}
    return evaluate(model, task, batch_size, (inputs, labels))


def run_eval(ev, model, task: Task, cfg, final_metrics: dict[str, float] | None = None) -> dict[str, Any]:
    """Columns of one :class:`~onebigstate.bench.cells.Eval` on a trained model. ``final_metrics``: the
    trainer's own held-out metrics of this model (its ``results.json``), which kind ``metrics`` shows
    instead of evaluating the held-out set a second time."""
    from onebigstate.tasks.registry import build_task
    if ev.kind == "params":
        other = build_task(cfg.task.model_copy(update={"params": {**cfg.task.params, **ev.params}}))
        train_len = int(cfg.task.params.get("seq_len", 0))
        return {ev.label: heldout_metrics(model, other, cfg.train.eval_batch_size, train_len)["accuracy"]}
    if ev.kind == "grouped":
        acc = grouped_accuracy(model, task.grouped_test_set(), cfg.train.eval_batch_size)
        return {k: v for k, v in acc.items() if k != "all" or len(acc) == 1}
    if ev.kind == "lifelong":
        acc = grouped_accuracy(model, task.lifelong_set(), cfg.train.eval_batch_size, window=ev.window)
        return {k: v for k, v in acc.items() if k != "all"}
    if ev.kind == "recall":
        return recall_columns(model, cfg, ev.params)
    if ev.kind == "metrics":
        if final_metrics is None:
            raise ValueError("eval kind 'metrics' shows the trainer's final held-out metrics: pass final_metrics")
        return {column: final_metrics[name] for name, column in ev.params["columns"].items()}
    raise ValueError(f"unknown eval kind '{ev.kind}'")


# StreamConfig keys the recall grid sets itself
_RECALL_SET = ("split", "seq_len", "image_query_frac", "extra_words", "exposures", "delay_min", "delay_max")


def recall_columns(model, cfg, p: dict[str, Any]) -> dict[str, float]:
    """See-and-hear recall of a trained model, streamed with its state carried (``experiments/recall.py``).

    ``p``: ``delays`` (word->object after 1 exposure: columns ``d=D``), ``exposures`` (at
    ``exposure_delay`` steps: ``exp=E``), ``n_streams``, ``window``, ``batch_size``, ``seed``,
    ``object_to_word`` (a column ``obj->word`` at ``exposure_delay``, on the test split). The
    streams are the run's task params otherwise, on the novel split (words never heard in training)."""
    from onebigstate.data.streams import StreamConfig
    from onebigstate.experiments.recall import RecallGrid, measure_recall
    params = {k: v for k, v in cfg.task.params.items() if k in StreamConfig.model_fields and k not in _RECALL_SET}
    delay = int(p["exposure_delay"])
    grid = RecallGrid(tuple(p["exposures"]), tuple(p["delays"]), delay, 1)
    kw = dict(window=int(p.get("window", 512)), batch_size=int(p.get("batch_size", 32)))
    base = StreamConfig(**params, split="novel", image_query_frac=0.0, extra_words=False, exposures=[1],
                        delay_min=delay, delay_max=delay)
    res = measure_recall(model, base, grid, int(p["n_streams"]), int(p.get("seed", 12345)), **kw)
    cols = {f"d={d}": res.accuracy("word->object", 1, d)[0] for d in grid.delays}
    cols.update({f"exp={e}": res.accuracy("word->object", e, delay)[0] for e in grid.exposures})
    if p.get("object_to_word"):
        test = StreamConfig(**params, split="test", image_query_frac=1.0,
                            extra_words=bool(cfg.task.params.get("extra_words", False)), exposures=[1],
                            delay_min=delay, delay_max=delay)
        res = measure_recall(model, test, RecallGrid((1,), (delay,), delay, 1), int(p["n_streams"]),
                             int(p.get("seed", 12345)) + 1, **kw)
        cols["obj->word"] = res.accuracy("object->word", 1, delay)[0]
    return cols
