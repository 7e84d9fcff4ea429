import os

import pytest
import torch

# No GPU: Triton kernels run in Triton's interpreter on CPU tensors (read when triton is imported)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Two cores on CI: keep intra-op threads predictable (OMP_NUM_THREADS wins when set).
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 0)) or max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: the same float results as the `obs` subprocesses
    (which run single-threaded), and no OpenMP spinning on a busy two-core machine."""
    from training_helpers import single_thread
    with single_thread():
        yield


# A GPU test that hangs must fail, not hold a device lease to its end: on an H200 (fla 0.6.0,
# Triton 3.6, torch 2.11) test_fla_layer_matches_own_implementation[T37-fla-recurrent-deltanet]
# ran past 150 s without finishing (docs/results/mqar_gpu.md). Triton's compile and autotune of a
# kernel takes seconds, so 240 s per test is a hang. Needs pytest-timeout (a dev dependency).
GPU_TEST_TIMEOUT_S = 240


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        for item in items:
            if "gpu" in item.keywords and item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(GPU_TEST_TIMEOUT_S))
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
