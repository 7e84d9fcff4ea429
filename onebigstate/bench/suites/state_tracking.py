"""State tracking: parity and permutation composition (S5), trained short, tested long.

full: parity trained on 64 steps, tested on 512; S5 trained on 32, tested on 256; 2000 steps of
batch 32. quick: parity 16 -> 64, S5 8 -> 32; 150 steps of batch 16. The columns name length
buckets of the held-out sequences (t<=n: accuracy at the steps of the bucket ending at n).
"""
from __future__ import annotations

from onebigstate.bench.cells import Eval, Options, Plot, Suite, make_cells
from onebigstate.tasks.base import TaskConfig


def build(opts: Options) -> Suite:
    if opts.mode == "full":
        parity, s5, steps, batch = (64, 512), (32, 256), 2000, 32
    else:
        parity, s5, steps, batch = (16, 64), (8, 32), 150, 16
    steps = opts.step_budget(steps)
    evals = [Eval("grouped")]
    cells = make_cells(f"parity {parity[0]}->{parity[1]}",
                       TaskConfig(name="parity", test_size=256, params={"seq_len": parity[0], "test_len": parity[1]}),
                       opts, 64, steps, batch, evals=evals, prefix=f"parity_{parity[0]}_{parity[1]}")
    cells += make_cells(f"S5 {s5[0]}->{s5[1]}",
                        TaskConfig(name="s5", test_size=256, params={"seq_len": s5[0], "test_len": s5[1]}),
                        opts, 64, steps, batch, evals=evals, prefix=f"s5_{s5[0]}_{s5[1]}")
    plots = [Plot("evals", "t", "step of the sequence (end of bucket)")]
    return Suite("state_tracking", "State tracking: parity and S5, trained short, tested long",
                 f"Running parity of bits and running product of S5 permutations, scored at every step. "
                 f"Trained on sequences of the first length, tested on the second; 'accuracy' is over all "
                 f"held-out steps, a column t<=n is the accuracy at the steps of its length bucket (up to n). {steps} steps of "
                 f"batch {batch}, width 64.", cells, plots)
