"""Where the time of a speed cell goes: torch.profiler's operators of one forward+backward.

    python -m onebigstate.bench.speed_profile --cell '{"what": "train", "model": "obs", ...}'

``obs bench speed`` runs it (in a fresh process) for the fast path of every target it missed and
puts the table on the page. The compiled scan shows as two operators (its forward, under the
autograd node that calls it, and ``obs_cpu::scan_backward``); what happens inside them is
described in onebigstate/kernels/README.md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict

from onebigstate.bench.speed import SpeedCell, _build

TOP = 8


def profile_cell(cell: SpeedCell, device: str = "cpu") -> list[dict]:
    """The ``TOP`` operators by self time in one forward+backward (after a warm-up one):
    name, self milliseconds, share of the profiled time."""
    import torch
    from torch.profiler import profile
    torch.set_num_threads(cell.threads)
    torch.manual_seed(0)
    run, owner, _ = _build(cell, torch.device(device))
    params = list(owner.parameters()) if hasattr(owner, "parameters") else list(owner)

    def fwd_bwd():
        run().backward()
        for p in params:
            p.grad = None

    fwd_bwd()
    with profile() as prof:
        fwd_bwd()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    events.sort(key=lambda e: -e.self_cpu_time_total)
    return [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / total}
            for e in events[:TOP]]


def run_profile(cell: SpeedCell, device: str, timeout: float) -> list[dict] | str:
    """:func:`profile_cell` in a fresh process; a failure comes back as its message."""
    cmd = [sys.executable, "-m", "onebigstate.bench.speed_profile", "--cell", json.dumps(asdict(cell)),
           "--device", device]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("PROFILE ")]
    if done.returncode != 0 or not lines:
        return (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
    return json.loads(lines[-1][len("PROFILE "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cell", required=True, help="the SpeedCell as JSON")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    print("PROFILE " + json.dumps(profile_cell(SpeedCell(**json.loads(args.cell)), args.device)), flush=True)


if __name__ == "__main__":
    main()
