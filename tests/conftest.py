import os

import pytest
import torch

# Two cores on CI: keep intra-op threads predictable (OMP_NUM_THREADS wins when set).
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 0)) or max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: the same float results as the `obs` subprocesses
    (which run single-threaded), and no OpenMP spinning on a busy two-core machine."""
    from training_helpers import single_thread
    with single_thread():
        yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
