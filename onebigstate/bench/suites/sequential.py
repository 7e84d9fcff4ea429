"""Sequential processing: selective copying and delayed recall.

full: selective copy of 16 tokens scattered over 256 positions; delayed recall of 4 tokens after
64, 256 and 1024 noise steps; 2000 steps of batch 32. quick: selective copy of 4 tokens over 32
positions; delayed recall of 2 tokens after 32 steps; 150 steps of batch 16.
"""
from __future__ import annotations

from onebigstate.bench.cells import Options, Plot, Suite, make_cells
from onebigstate.tasks.base import TaskConfig


def build(opts: Options) -> Suite:
    if opts.mode == "full":
        copy, n_rec, delays, steps, batch = (256, 16), 4, [64, 256, 1024], 2000, 32
    else:
        copy, n_rec, delays, steps, batch = (32, 4), 2, [32], 150, 16
    steps = opts.step_budget(steps)
    cells = make_cells(f"selective copy L={copy[0]} K={copy[1]}",
                       TaskConfig(name="selective_copy", test_size=256,
                                  params={"vocab_size": 16, "body_len": copy[0], "n_tokens": copy[1]}),
                       opts, 64, steps, batch, prefix=f"selcopy_L{copy[0]}_K{copy[1]}")
    for D in delays:
        cells += make_cells(f"delayed recall D={D} K={n_rec}",
                            TaskConfig(name="delayed_recall", test_size=256,
                                       params={"vocab_size": 16, "n_tokens": n_rec, "delay": D}),
                            opts, 64, steps, batch, x={"delay": D}, prefix=f"delay_D{D}_K{n_rec}")
    return Suite("sequential", "Sequential processing: selective copying and delayed recall",
                 f"Selective copying (copy the data tokens scattered among noise, in order) and delayed "
                 f"recall (copy the first tokens after D steps of random tokens); vocabulary 16 (chance 1/14); "
                 f"{steps} steps of batch {batch} for every model, width 64.", cells,
                 [Plot("x", "delay", "delay D (steps)")])
