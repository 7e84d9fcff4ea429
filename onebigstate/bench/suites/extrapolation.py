"""MQAR length extrapolation (the Based paper's sweep): train short, test on longer sequences
with more pairs.

full: train at (256 tokens, 64 pairs); test at (256, 64), (512, 128), (1024, 256); widths 64
and 128; vocabulary 8192; 2000 steps of batch 64. quick: train at (64, 16), test at (64, 16),
(128, 32), (256, 64); width 64; vocabulary 512; 150 steps of batch 16. cpu: train at (128, 32),
test at (128, 32), (256, 64), (512, 128), (1024, 256) and (4096, 1024); width 64; vocabulary
8192; 1000 steps of batch 32.

``Options.widths`` (``obs bench extrapolation --widths 128``) runs other widths than the mode's.
``Options.train`` (``obs bench extrapolation --train T:P``) trains at another setting of the same
tokens-to-pairs ratio, e.g. (512, 128), so that the readout meets crowded nodes in training; the
batch shrinks so that a step sees as many tokens (and queries) as at the mode's own setting, and
the test settings stay the same.
"""
from __future__ import annotations

from onebigstate.bench.cells import Eval, Options, Plot, Suite, make_cells
from onebigstate.bench.suites.mqar import mqar_task


def build(opts: Options) -> Suite:
    if opts.mode == "full":
        train, tests, widths, vocab, steps, batch, n_test = (256, 64), [(256, 64), (512, 128), (1024, 256)], \
            (64, 128), 8192, 2000, 64, 500
    elif opts.mode == "cpu":
        train, tests, widths, vocab, steps, batch, n_test = (128, 32), [(128, 32), (256, 64), (512, 128),
                                                                        (1024, 256), (4096, 1024)], \
            (64,), 8192, 1000, 32, 500
    else:
        train, tests, widths, vocab, steps, batch, n_test = (64, 16), [(64, 16), (128, 32), (256, 64)], \
            (64,), 512, 150, 16, 128
    steps = opts.step_budget(steps)
    if opts.train is not None:
        train, batch = opts.train, _same_tokens(train, batch, opts.train)
    evals = [Eval("params", f"T={T}", {"seq_len": T, "num_kv_pairs": P}) for T, P in tests]
    cells = []
    for d in opts.width_list(widths):
        cells += make_cells(f"train T={train[0]} P={train[1]} d={d}", mqar_task(*train, vocab, n_test), opts, d,
                            steps, batch, x={"width": d}, evals=evals)
    cols = ", ".join(f"T={T} (P={P})" for T, P in tests)
    return Suite("extrapolation", "MQAR length extrapolation: train short, test long",
                 f"Trained on MQAR at {train[0]} tokens / {train[1]} pairs (vocabulary {vocab}, {steps} steps of "
                 f"batch {batch}); the columns {cols} are held-out accuracy at longer sequences with "
                 f"proportionally more pairs, each sequence from a fresh state.", cells,
                 [Plot("evals", "T", "test sequence length")])


def _same_tokens(mode_train: tuple[int, int], batch: int, train: tuple[int, int]) -> int:
    """The batch at ``train`` that keeps the mode's tokens per step (``mode_train``'s length x ``batch``)."""
    T, P = train
    if T <= 0 or P <= 0 or T * mode_train[1] != P * mode_train[0]:
        raise ValueError(f"--train {T}:{P}: needs the mode's ratio of {mode_train[0] // mode_train[1]} tokens per pair "
                         f"(it trains at {mode_train[0]}:{mode_train[1]})")
    if (mode_train[0] * batch) % T:
        raise ValueError(f"--train {T}:{P}: {T} tokens must divide the {mode_train[0] * batch} tokens of a step")
    return mode_train[0] * batch // T
