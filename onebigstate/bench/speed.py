"""The speed-and-memory suite, ``obs bench speed``: tokens/s and peak memory of OBS (each scan
backend) and every baseline, against sequence length, N and batch size.

What a cell measures (``SpeedCell.what``):

- ``scan``: the OBS scan op alone (``obs_scan`` over one window; addressing and projections done
  before, outside the timing), with the bench recipe's step switches (row_norm, circuit_direct 1);
- ``layer``: one ``OBSLayer`` (addressing, write-module projection, scan, read-out);
- ``model``: a model as the bench builds it (embedding, its mixer stack, output head; OBS: 1
  layer of N nodes with the recipe; baselines: 2 layers, 2 heads) on random tokens of a
  vocabulary of 256;
- ``train``: one training step of MQAR as the trainer runs it (forward, loss at the answers,
  backward, AdamW), vocabulary 8192.

``fwd`` is a forward pass without gradients (evaluation); ``fwd+bwd`` a forward pass with
gradients plus the backward pass (``train``: plus the optimizer step). Tokens/s = B x T / median
seconds over the repeats (as many as fit in a second, 1 to 5) after one warm-up forward+backward. Peak memory: CPU, the highest resident memory of
the process during one fwd+bwd above its resident memory once the model was built (VmHWM,
reset through /proc/self/clear_refs); CUDA, ``torch.cuda.max_memory_allocated`` above what was
allocated before. Every cell runs in a fresh process (``python -m onebigstate.bench.speed
--cell JSON``), so one cell's memory never counts in another's, with ``threads`` intra-op threads.

Sweeps are lists of cells built by :func:`grid`; the page (``bench/speed_report.py``) takes every
ratio from cells of the same run.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

VOCAB = 256               # model cells: a small head, so the mixers dominate
TRAIN_VOCAB = 8192        # train cells: MQAR as the benchmarks train it
WIDTH = 64
# the OBS scan backends measured by default, per device
OBS_BACKENDS = {"cpu": ("cpu", "reversible"), "cuda": ("triton", "reversible")}
# backends without the sparse store (their cells at sparse N are left out, not run as an error);
# every backend has it now (triton since 2026-12-05)
DENSE_ONLY: set[str] = set()


@dataclass(frozen=True)
class SpeedCell:
    what: str                  # scan | layer | model | train
    model: str                 # obs or a baseline's bench name
    batch: int
    seq_len: int
    backend: str | None = None     # OBS scan backend
    n_nodes: int | None = None     # OBS nodes (None: the bench's N)
    state_backend: str = "dense"
    width: int = WIDTH
    threads: int = 1
    pairs: int | None = None       # train cells: MQAR key-value pairs
    axis: str = ""                 # the sweep it belongs to: target, seq_len, n_nodes, batch

    @property
    def label(self) -> str:
        """The model as a table names it: ``obs (cpu)``, ``obs (reversible, sparse)``, ``deltanet``."""
        if self.model != "obs":
            return self.model
        extra = [self.backend or "auto"] + ([self.state_backend] if self.state_backend != "dense" else [])
        return f"obs ({', '.join(extra)})"

    @property
    def name(self) -> str:
        n = f"_N{self.n_nodes}" if self.n_nodes else ""
        return (f"{self.axis}__{self.what}__{self.label.replace(' ', '').replace(',', '-')}__B{self.batch}"
                f"_T{self.seq_len}{n}_t{self.threads}")


def grid(mode: str, device: str, threads: int, models: list[str] | None = None) -> list[SpeedCell]:
    """The cells of a run. ``quick``: a few tiny cells (seconds, for tests); ``cpu``: the CPU
    page (targets at 1 and ``threads`` threads, then the three sweeps at ``threads``); ``full``:
    the GPU grid (widths 64 and 256, T = 2048, B = 8 and 64, N = 1024 to 16384)."""
    from onebigstate.bench.cells import MODELS
    baselines = [m for m in (models or MODELS) if m != "obs"]
    with_obs = models is None or "obs" in models
    dev = "cuda" if device.startswith("cuda") else "cpu"
    backends = OBS_BACKENDS[dev]
    cells: list[SpeedCell] = []

    def obs(**kw):
        if with_obs:
            sparse = kw.get("state_backend", "dense") == "sparse"
            cells.extend(SpeedCell(model="obs", backend=b, **kw) for b in backends
                         if not (sparse and b in DENSE_ONLY))

    def every(**kw):
        obs(**kw)
        cells.extend(SpeedCell(model=m, **kw) for m in baselines)

    if mode == "quick":
        obs(what="scan", batch=2, seq_len=16, n_nodes=64, threads=threads, axis="target")
        every(what="model", batch=2, seq_len=32, n_nodes=64, threads=threads, axis="seq_len")
        obs(what="train", batch=2, seq_len=32, pairs=4, n_nodes=64, threads=threads, axis="target")
        return cells
    if mode == "cpu":
        for t in sorted({1, threads}):
            for n in (1024, 4096):     # the scan target: at least 10x reversible
                obs(what="scan", batch=32, seq_len=256, n_nodes=n, threads=t, axis="target")
            obs(what="layer", batch=8, seq_len=128, n_nodes=1024, threads=t, axis="target")
            # a training step at MQAR (256, 64): no slower than DeltaNet's
            every(what="train", batch=16, seq_len=256, pairs=64, threads=t, axis="target")
            # N = 16384 with the sparse store: a training step under 1 s
            obs(what="train", batch=32, seq_len=128, pairs=32, n_nodes=16384, state_backend="sparse", threads=t,
                axis="target")
        for T in (256, 1024, 4096):
            every(what="model", batch=8, seq_len=T, threads=threads, axis="seq_len")
        for n, store in ((1024, "dense"), (4096, "dense"), (16384, "sparse"), (65536, "sparse")):
            obs(what="model", batch=8, seq_len=256, n_nodes=n, state_backend=store, threads=threads, axis="n_nodes")
        for B in (1, 8, 32):
            every(what="model", batch=B, seq_len=256, threads=threads, axis="batch")
        return cells
    if mode == "full":
        for w in (64, 256):
            for B in (8, 64):
                every(what="model", batch=B, seq_len=2048, width=w, threads=threads, axis="seq_len")
                for n, store in ((4096, "dense"), (16384, "sparse")):
                    obs(what="model", batch=B, seq_len=2048, n_nodes=n, state_backend=store, width=w,
                        threads=threads, axis="n_nodes")
        # the Python loop's cells last: on a GPU each takes minutes, and a run cut short by its time
        # limit keeps the fast backends' and the baselines' rows
        cells.sort(key=lambda c: c.backend == "reversible")
        return cells
    raise ValueError(f"unknown speed mode '{mode}'; expected quick, cpu or full")


# ---- one cell, in its own process -----------------------------------------------------------------
def _rss_mb(field: str = "VmRSS") -> float:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return float("nan")
    m = re.search(rf"{field}:\s+(\d+)", text)
    return int(m.group(1)) / 1024 if m else float("nan")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _model_config(cell: SpeedCell):
    from onebigstate.bench.cells import model_config
    cfg = model_config(cell.model, cell.width, "full")
    if cell.model == "obs":
        mixer = dict(cfg.mixer)
        mixer["backend"] = cell.backend or "auto"
        mixer["state_backend"] = cell.state_backend
        if cell.n_nodes:
            mixer["n_nodes"] = cell.n_nodes
        cfg = cfg.model_copy(update={"mixer": mixer})
    return cfg


def _build(cell: SpeedCell, device):
    """(a function running one forward, with gradients or not, returning a loss; the trainable
    parameters; the number of parameters)."""
    import torch

    from onebigstate.nets.stack import build_model, count_params
    gen = torch.Generator().manual_seed(0)
    if cell.what == "train":
        from onebigstate.tasks.base import TaskConfig
        from onebigstate.tasks.registry import build_task
        task = build_task(TaskConfig(name="mqar", params={"vocab_size": TRAIN_VOCAB, "seq_len": cell.seq_len,
                                                          "num_kv_pairs": cell.pairs}))
        model = task.build_model(_model_config(cell)).to(device)
        x, y = (t.to(device) for t in task.train_batch(0, cell.batch))

        def run():
            outputs, labels, _ = task.forward(model, x, y)
            loss = task.loss(outputs, labels)
            aux = getattr(model, "aux_loss", None)
            return loss + aux() if callable(aux) else loss
        return run, model, count_params(model)
    if cell.what == "model":
        model = build_model(_model_config(cell), n_out=VOCAB, vocab_size=VOCAB).to(device)
        x = torch.randint(0, VOCAB, (cell.batch, cell.seq_len), generator=gen).to(device)
        return (lambda: model(x)[0].float().square().mean()), model, count_params(model)
    # layer and scan: one OBS layer with the recipe's switches
    from onebigstate import OBSConfig, OBSLayer
    from onebigstate.kernels.scan import ScanInputs, obs_scan
    mixer = dict(_model_config(cell).mixer)
    layer = OBSLayer(OBSConfig(d_model=cell.width, **mixer)).to(device)
    x = torch.randn(cell.batch, cell.seq_len, cell.width, generator=gen).to(device)
    if cell.what == "layer":
        return (lambda: layer(x)[0].square().mean()), layer, count_params(layer)
    with torch.no_grad():
        idx, scores = layer.addresser(x)
        feats = layer.write.features(x)
    scores, feats = scores.requires_grad_(True), feats.requires_grad_(True)
    inputs = ScanInputs(idx, scores, feats, x.new_zeros(cell.batch, cell.seq_len))
    params = [p.detach().requires_grad_(True) for p in layer.step_params().tensors()]
    from onebigstate.kernels.step import StepParams

    def run():
        out = obs_scan(layer.init_state(cell.batch), None, inputs, StepParams.from_tensors(params),
                       layer.step_cfg, backend=cell.backend or "auto", in_place=True)
        return out.read.square().mean()
    return run, [scores, feats, *params], sum(p.numel() for p in params)


def measure(cell: SpeedCell, device: str = "cpu", min_seconds: float = 1.0, max_repeats: int = 5) -> dict:
    """Run one cell here (in this process): seconds and tokens/s of fwd and fwd+bwd, peak memory."""
    import torch
    torch.set_num_threads(cell.threads)
    dev = torch.device(device)
    torch.manual_seed(0)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    rss_built = _rss_mb()
    run, params, n_params = _build(cell, dev)
    params = list(params.parameters()) if hasattr(params, "parameters") else list(params)
    opt = torch.optim.AdamW([p for p in params if p.requires_grad], lr=1e-4) if cell.what == "train" else None

    def fwd():
        with torch.no_grad():
            run()

    def fwd_bwd():
        loss = run()
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)
        else:
            for p in params:
                p.grad = None

    def timed(f) -> list[float]:
        times: list[float] = []
        while len(times) < max_repeats and (not times or sum(times) < min_seconds):
            sync()
            t0 = time.perf_counter()
            f()
            sync()
            times.append(time.perf_counter() - t0)
        return times

    # one warm-up (a first call pays for caches, tables and scratch memory), then the forward
    # passes, then the forward+backward passes (the peak is the high-water mark over them)
    fwd_bwd()
    t_fwd = timed(fwd)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    peak_ok = _reset_peak()
    t_bwd = timed(fwd_bwd)
    if dev.type == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated(dev) - base) / 2 ** 20
    else:
        peak_mb = _rss_mb("VmHWM") - rss_built if peak_ok else float("nan")
    tokens = cell.batch * cell.seq_len
    f, fb = statistics.median(t_fwd), statistics.median(t_bwd)
    return {"s_fwd": f, "s_fwd_bwd": fb, "tok_s_fwd": tokens / f, "tok_s_fwd_bwd": tokens / fb,
            "peak_mb": peak_mb, "params": n_params, "repeats": [len(t_fwd), len(t_bwd)]}


def run_cell(cell: SpeedCell, device: str, timeout: float) -> dict:
    """:func:`measure` in a fresh process; an error or a timeout becomes the row's ``error``."""
    cmd = [sys.executable, "-m", "onebigstate.bench.speed", "--cell", json.dumps(asdict(cell)), "--device", device]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        err = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": err[:300]}
    return json.loads(lines[-1][len("RESULT "):])


def write_rows(out_json: Path, meta: dict, rows: list[dict]) -> None:
    """``{"meta": ..., "rows": [...]}`` to ``out_json``, atomically (a killed run keeps what it had)."""
    out_json.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_json.with_suffix(".tmp")
    tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    tmp.replace(out_json)


def read_rows(out_json: Path) -> tuple[dict, list[dict]]:
    """(meta, rows) written by :func:`write_rows`."""
    data = json.loads(out_json.read_text())
    return data["meta"], data["rows"]


def run_grid(cells: list[SpeedCell], device: str, out_json: Path, timeout: float, meta: dict,
             log=print) -> list[dict]:
    """Every cell, each in its own process; the rows (cell fields + results) written to ``out_json``
    as they finish, with ``meta`` (command, commit, machine)."""
    rows: list[dict] = []
    for i, cell in enumerate(cells, 1):
        t0 = time.perf_counter()
        res = run_cell(cell, device, timeout)
        rows.append({**asdict(cell), "label": cell.label, **res})
        write_rows(out_json, meta, rows)
        what = res.get("error") or f"fwd {res['tok_s_fwd']:,.0f} tok/s, fwd+bwd {res['tok_s_fwd_bwd']:,.0f} tok/s"
        log(f"[{i}/{len(cells)}] {cell.name}: {what} ({time.perf_counter() - t0:.0f} s)")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description="measure one speed cell (used by obs bench speed)")
    p.add_argument("--cell", required=True, help="the SpeedCell as JSON")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    cell = SpeedCell(**json.loads(args.cell))
    print("RESULT " + json.dumps(measure(cell, args.device)), flush=True)


if __name__ == "__main__":
    main()
