"""benchmarks/run_memory.py: peak memory of the trainer's steps and evaluation at dense N."""
from __future__ import annotations

from training_helpers import load_benchmark


def test_measures_training_steps_and_evaluation_batches_at_small_n():
    rm = load_benchmark("run_memory")
    for what in ("train", "evaluate"):
        peak, before, seconds = rm.measure(what, 64, 2, 2)
        assert peak >= before > 0 and seconds >= 0
