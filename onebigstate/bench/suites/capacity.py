"""MQAR capacity: the number of pairs grows (sequence length 4x pairs) at widths 64 and 128.

A fixed-size state must saturate; a big one need not. full: pairs 64, 256, 1024, 4096 (seq_len
256 .. 16384, vocabulary 32768), 2000 steps of batch 32 (batch 8 at 4096 pairs). quick: pairs 8,
16, 32 at width 64, vocabulary 512, 150 steps of batch 16. ``--widths`` runs other widths.
"""
from __future__ import annotations

from onebigstate.bench.cells import Options, Plot, Suite, make_cells
from onebigstate.bench.suites.mqar import mqar_task


def build(opts: Options) -> Suite:
    if opts.mode == "full":
        pairs, widths, vocab, steps, test = (64, 256, 1024, 4096), (64, 128), 32768, 2000, 256
    else:
        pairs, widths, vocab, steps, test = (8, 16, 32), (64,), 512, 150, 128
    steps = opts.step_budget(steps)
    grid = [(P, d) for d in opts.width_list(widths) for P in pairs]
    cells = []
    for P, d in grid:
        batch = (8 if P >= 4096 else 32) if opts.mode == "full" else 16
        cells += make_cells(f"P={P} T={4 * P} d={d}", mqar_task(4 * P, P, vocab, test), opts, d, steps, batch,
                            x={"pairs": P, "width": d})
    return Suite("capacity", "MQAR capacity: pairs growing at sequence length 4x pairs",
                 f"MQAR with P key-value pairs in sequences of 4P tokens (vocabulary {vocab}), {steps} steps "
                 f"for every model; a fixed-size state must saturate as P grows.", cells,
                 [Plot("x", "pairs", "key-value pairs (seq len = 4 x pairs)")])
