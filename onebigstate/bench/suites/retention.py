"""Retention: associations written once, queried after growing amounts of distractor traffic,
evaluated in lifelong mode (long streams read in windows with the state carried).

full: episodes of 256 tokens with 16 pairs, 2000 steps of batch 32; queries at distances 100,
1,000, 10,000, 100,000 in 16 streams read in windows of 1024. quick: episodes of 64 tokens with
4 pairs, 150 steps of batch 16; distances 16, 64, 256, 1024, windows of 64. cpu: episodes of 128
tokens with 8 pairs, 1000 steps of batch 32; the full distances and windows.
"""
from __future__ import annotations

from onebigstate.bench.cells import Eval, Options, Plot, Suite, make_cells
from onebigstate.tasks.base import TaskConfig


def build(opts: Options) -> Suite:
    if opts.mode == "full":
        T, P, dists, window, steps, batch, streams = 256, 16, [100, 1000, 10000, 100000], 1024, 2000, 32, 16
    elif opts.mode == "cpu":
        T, P, dists, window, steps, batch, streams = 128, 8, [100, 1000, 10000, 100000], 1024, 1000, 32, 16
    else:
        T, P, dists, window, steps, batch, streams = 64, 4, [16, 64, 256, 1024], 64, 150, 16, 16
    steps = opts.step_budget(steps)
    task = TaskConfig(name="retention", test_size=256,
                      params={"vocab_size": 256, "n_pairs": P, "seq_len": T, "test_distances": dists,
                              "lifelong_streams": streams})
    evals = [Eval("lifelong", window=window)]
    cells = make_cells(f"T={T} P={P}", task, opts, 64, steps, batch, evals=evals)
    return Suite("retention", "Retention: recall against the distance since the association was written",
                 f"Each stream writes {P} key-value pairs once, then distractor traffic (other key-value "
                 f"pairs) and one query per written key. Trained on episodes of {T} tokens ({steps} steps of "
                 f"batch {batch}); 'accuracy' is held-out episodes of that length. The columns d=... are "
                 f"lifelong streams ({streams} streams, {P} queries each, spread over the distances) read in "
                 f"windows of {window} tokens with the state carried between windows (attention carries its "
                 f"KV cache).", cells,
                 [Plot("evals", "d", "distance since the write (tokens)")])
