"""Memory saved for backward by the training path does not grow as T x N^2."""
from __future__ import annotations

import torch

from onebigstate import OBSConfig, OBSLayer
from onebigstate.analysis.saved_memory import saved_bytes

N = 1024


def _saved(T: int, backend: str = "reversible") -> int:
    torch.manual_seed(0)
    layer = OBSLayer(OBSConfig(d_model=32, n_nodes=N, d_key=16, d_value=16, d_hidden=16, d_write=16,
                               k_min=4, k_max=8, m_active=16, backend=backend))
    for p in layer.parameters():
        p.requires_grad_(True)
    x = torch.randn(1, T, 32, requires_grad=True)
    return saved_bytes(lambda: layer(x)[0])


def test_saved_for_backward_at_T1024_is_below_two_states_plus_linear_terms():
    state_bytes = N * N * 4
    b1024 = _saved(1024)
    b128 = _saved(128)
    per_step = (b1024 - b128) / (1024 - 128)
    # one state copy plus logged (k^2 + m k)-sized records per step: nowhere near N^2 per step
    assert b1024 < 2 * state_bytes + 1024 * 8 * 1024, (b1024, per_step)
    assert per_step < 0.01 * state_bytes, per_step
