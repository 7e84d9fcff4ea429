"""Continual learning in a stream: mappings that change in phases; forgetting of earlier phases.

full: 3 and 6 phases of 8 pairs shown 3 times, and 3 phases remapping the same 8 keys; 2000
steps of batch 32. quick: 3 phases of 4 pairs shown 3 times; 150
steps of batch 16. Columns: 'current' (a phase's pairs seen again within the phase), 'phase p'
(probe after the last phase of the keys of phase p), 'probe latest' (remapped keys: latest value).
"""
from __future__ import annotations

from onebigstate.bench.cells import Eval, Options, Suite, make_cells
from onebigstate.tasks.base import TaskConfig


def build(opts: Options) -> Suite:
    if opts.mode == "full":
        settings, steps, batch = [(3, 8, False), (6, 8, False), (3, 8, True)], 2000, 32
    else:
        settings, steps, batch = [(3, 4, False)], 150, 16
    steps = opts.step_budget(steps)
    cells = []
    for phases, pairs, shared in settings:
        name = f"{phases} phases x {pairs} pairs" + (" remapped" if shared else "")
        task = TaskConfig(name="continual", test_size=256,
                          params={"vocab_size": 256, "n_phases": phases, "pairs_per_phase": pairs, "repeats": 3,
                                  "shared_keys": shared})
        cells += make_cells(name, task, opts, 64, steps, batch, evals=[Eval("grouped")],
                            prefix=f"cont_{phases}x{pairs}" + ("_remap" if shared else ""))
    return Suite("continual", "Continual learning: key-value mappings changing in phases",
                 f"Each stream shows the pairs of a phase 3 times, then the next phase's; a final probe asks "
                 f"every key. 'current' is accuracy on a phase's pairs when seen again within it; 'phase p' "
                 f"is the probe of phase p's keys after all later phases (forgetting = current - phase 0); "
                 f"with remapped keys, 'probe latest' asks the newest values. {steps} steps of batch "
                 f"{batch}, width 64.", cells, [])
