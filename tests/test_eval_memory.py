"""benchmarks/eval_memory.py: peak memory of OBS at dense N (forward pass, trainer steps, evaluation)."""
from __future__ import annotations

import pytest

from training_helpers import load_benchmark


def test_measures_a_forward_pass_training_steps_and_evaluation_batches_at_small_n():
    em = load_benchmark("eval_memory")
    peak, seconds = em.measure(64, 16, 2)
    assert peak > 0 and seconds >= 0
    for what in ("train", "evaluate"):
        peak, before, seconds = em.measure_trainer(what, 64, 2, 2)
        assert peak >= before > 0 and seconds >= 0
    with pytest.raises(ValueError, match="'train' or 'evaluate'"):
        em.measure_trainer("backward", 64, 2, 2)
