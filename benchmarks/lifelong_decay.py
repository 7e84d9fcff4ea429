"""Probe: does lifelong training (states carried across batches) learn once old writes fade?

Lifelong training of see-and-hear or MQAR learns nothing (docs/results/distributed.md: one process
and a shared state alike): every batch brings new answers for the same keys and the additive
state keeps all of them. This probe pulls each carried state toward S_0 between batches,
``S <- S_0 + decay * (S - S_0)`` (decay 1: the plain lifelong run, 0: episodic), by wrapping the
trainer's ``detach_states``. It is a probe of the diagnosis, not a feature of the layer.

    python benchmarks/lifelong_decay.py configs/seeandhear.yaml --decays 1,0.5,0.1,0 --steps 300 \
        --out docs/results/lifelong_decay.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from onebigstate.files import atomic_write_text


def decayed(states, decay: float, layers):
    """Each OBS store pulled toward its layer's S_0 by ``decay`` (dense and sparse stores)."""
    from onebigstate.model.sparse_state import SparseState
    out = []
    for s, layer in zip(states, layers):
        if isinstance(s, SparseState):
            t = s.to_tensors()
            t["vals"] = t["vals"] * decay
            out.append(SparseState.from_tensors(t))
        elif s is not None:
            s0 = layer.initial_matrix().to(s.dtype)
            s.set_dense(s0 + decay * (s.as_dense() - s0))
            out.append(s)
        else:
            out.append(s)
    return out


def run(config: Path, decay: float, steps: int, out: Path) -> dict:
    import onebigstate.training.trainer as trainer
    from onebigstate.config import load_config
    from onebigstate.model.layer import obs_layers
    from onebigstate.training.config import RunConfig
    cfg = load_config(RunConfig, config, [f"train.steps={steps}", "train.carry_state=true", "train.progress=false",
                                          "train.threads=1", f"train.ckpt_every={steps}"])
    plain = trainer.detach_states
    built = trainer.build_run
    layers: list = []

    def build_run(c):
        task, model = built(c)
        layers[:] = obs_layers(model)
        return task, model

    def detach_states(states):
        states = plain(states)
        return decayed(states, decay, layers) if decay < 1 else states

    trainer.detach_states, trainer.build_run = detach_states, build_run
    try:
        res = trainer.train(cfg, out, log=lambda m: None)
    finally:
        trainer.detach_states, trainer.build_run = plain, built
    return {"decay": decay, "accuracy": res["metrics"]["accuracy"], "run": str(out)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path)
    ap.add_argument("--decays", default="1,0.5,0.1,0")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--runs", type=Path, default=Path("runs/lifelong_decay"))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for d in [float(v) for v in args.decays.split(",")]:
        rows.append(run(args.config, d, args.steps, args.runs / f"{args.config.stem}_decay{d:g}"))
        print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps({"config": str(args.config), "steps": args.steps, "rows": rows},
                                           indent=1) + "\n")


if __name__ == "__main__":
    main()
