"""MQAR over sequence lengths, numbers of key-value pairs and widths (Zoology's grid).

full: seq_len 64..1024 x pairs {4, 16, 64, 256} (pairs <= seq_len / 4) x width {64, 128},
vocab 8192, 2000 steps of batch 64. quick: (64, 4) and (128, 16) at width 64, vocab 512,
150 steps of batch 16. ``--widths`` runs other widths.
"""
from __future__ import annotations

from onebigstate.bench.cells import Options, Plot, Suite, make_cells
from onebigstate.tasks.base import TaskConfig


def mqar_task(seq_len: int, pairs: int, vocab: int, test_size: int) -> TaskConfig:
    return TaskConfig(name="mqar", test_size=test_size,
                      params={"vocab_size": vocab, "seq_len": seq_len, "num_kv_pairs": pairs})


def build(opts: Options) -> Suite:
    if opts.mode == "full":
        settings = [(T, P) for T in (64, 128, 256, 512, 1024) for P in (4, 16, 64, 256) if 4 * P <= T]
        widths, vocab, steps, batch, test = (64, 128), 8192, 2000, 64, 1000
    else:
        settings, widths, vocab, steps, batch, test = [(64, 4), (128, 16)], (64,), 512, 150, 16, 256
    steps = opts.step_budget(steps)
    grid = [(T, P, d) for d in opts.width_list(widths) for T, P in settings]
    cells = []
    for T, P, d in grid:
        cells += make_cells(f"T={T} P={P} d={d}", mqar_task(T, P, vocab, test), opts, d, steps, batch,
                            x={"seq_len": T, "pairs": P, "width": d})
    return Suite("mqar", "MQAR: sequence length x key-value pairs x width",
                 f"Multi-query associative recall as Zoology defines it (vocabulary {vocab}); settings "
                 f"(T = sequence length, P = key-value pairs, d = width); {steps} steps of batch {batch} "
                 f"for every model.", cells,
                 [Plot("x", "seq_len", "sequence length"), Plot("x", "pairs", "key-value pairs")])
