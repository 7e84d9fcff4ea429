"""Seconds per training step of every benchmark model on given MQAR settings, to plan full grids.

    python benchmarks/bench_cost.py --device cuda --settings 256:64,1024:256 --batch 64 --steps 5

Each model is built as the benchmark builds it (onebigstate.bench.cells.model_config, full mode),
trained for ``--steps`` steps after one warm-up step (forward, backward, AdamW), timed with the
device synchronised. Prints one line per (setting, model) and a JSON list at the end.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from onebigstate.bench.cells import MODELS, model_config
from onebigstate.tasks.base import TaskConfig
from onebigstate.tasks.registry import build_task


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--settings", default="256:64", help="comma-separated seq_len:pairs")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--budget-s", type=float, default=60.0, help="stop timing a model after this many seconds")
    args = p.parse_args()
    dev = torch.device(args.device)
    out = []
    for setting in args.settings.split(","):
        T, P = (int(v) for v in setting.split(":"))
        vocab = max(args.vocab, 2 * T + 2, 2 * P + 4)
        task = build_task(TaskConfig(name="mqar", params={"vocab_size": vocab, "seq_len": T, "num_kv_pairs": P}))
        for name in args.models.split(","):
            torch.manual_seed(0)
            model = task.build_model(model_config(name, args.width, "full")).to(dev)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            times = []
            try:
                for step in range(args.steps + 1):
                    x, y = task.train_batch(step, args.batch)
                    x, y = x.to(dev), y.to(dev)
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    logits, labels, _ = task.forward(model, x, y)
                    loss = task.loss(logits, labels)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    if dev.type == "cuda":
                        torch.cuda.synchronize()
                    if step:
                        times.append(time.perf_counter() - t0)
                    if sum(times) > args.budget_s:
                        break
                rec = {"seq_len": T, "pairs": P, "model": name, "s_per_step": sum(times) / max(len(times), 1),
                       "steps_timed": len(times)}
            except Exception as err:  # a model that cannot run here is reported, not fatal to the sweep
                rec = {"seq_len": T, "pairs": P, "model": name, "error": f"{type(err).__name__}: {err}"[:200]}
            out.append(rec)
            print(json.dumps(rec), flush=True)
            del model, opt
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    print("RESULTS " + json.dumps(out))


if __name__ == "__main__":
    main()
