"""Models for the memory-function analysis, built by name at a chosen read-out state size.

``n_state`` is the dimension of the vector the linear read-out sees (the "matched state size"):

| name | model | read-out vector (n_state dims) | full state per stream |
|---|---|---|---|
| s4d_inv, s4d_lin, random, linear_mag, two_level | one-channel S4D, d_state = n_state | [Re x, Im x] | n_state |
| s4_dense | dense-A twin of an S4D (``init`` key picks its spectrum) | x | n_state |
| lstm | torch.nn.LSTM, hidden n_state / 2, input width 16 | [h, c] | n_state |
| mamba | mambapy Mamba, 1 layer, d_state 4, d_inner = n_state / 4 | SSM hidden h | + conv cache |
| deltanet | the library's DeltaNet (recurrent impl), H heads, K = V = d/H | fast weights S | + conv caches |
| obs | OBSLayer, n_nodes = n_state | active weights w_t at A_t | N^2 (dense) |

``config`` holds the model's own config keys (S4DConfig, DenseSSMConfig, OBSConfig, DeltaNetConfig;
for lstm ``d_input``/``num_layers``, for mamba ``d_state``/``d_model``); unknown keys are errors.
"""
from __future__ import annotations

import math

import torch

from onebigstate.baselines.s4d import INITS
from onebigstate.config import ConfigError

MEMORY_MODELS = (*INITS, "s4_dense", "lstm", "mamba", "deltanet", "obs")

# The study's step for the continuous-time inits (S4D-Inv, S4D-Lin): the geometric middle of
# S4D's default range [1e-3, 1e-1].
DEFAULT_DT = 0.01


def _take(config: dict, allowed: dict, name: str) -> dict:
    unknown = set(config) - set(allowed)
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)} for memory model '{name}'; known: {sorted(allowed)}")
    return {**allowed, **config}


def _deltanet_shape(n_state: int) -> tuple[int, int]:
    """(d_model, n_heads) with n_heads * (d_model / n_heads)^2 = n_state, preferring 4 heads."""
    for H in (4, 2, 1, 8, 16):
        d = math.isqrt(n_state * H)
        if d * d == n_state * H and d % H == 0:
            return d, H
    raise ConfigError(f"deltanet needs n_state = H * (d/H)^2 for some H in 1..16; {n_state} is not")


def build_memory_model(name: str, n_state: int = 32, config: dict | None = None, seed: int = 0):
    """(model, description) for ``memory_function``; parameters drawn from ``seed``."""
    config = dict(config or {})
    torch.manual_seed(seed)
    if name in INITS or name == "s4_dense":
        from onebigstate.baselines.s4_dense import DenseSSM
        from onebigstate.baselines.s4d import S4D, S4DConfig
        p_keys = {k: config.pop(k) for k in ("p_seed", "p_cond") if k in config}
        base = {"d_state": n_state, "init": name if name in INITS else "s4d_inv",
                "dt_min": DEFAULT_DT, "dt_max": DEFAULT_DT, "init_seed": seed}
        if name in INITS and "init" in config:
            raise ConfigError(f"model '{name}' fixes the init; use model s4_dense or another name to pick one")
        s4d = S4D(1, S4DConfig(**{**base, **config}))
        if name == "s4_dense":
            return DenseSSM.from_s4d(s4d, **p_keys), f"dense-A SSM, spectrum of {s4d.cfg.init}"
        return s4d, f"S4D {name}, {s4d.cfg.discretization}"
    if name == "lstm":
        if n_state % 2:
            raise ConfigError(f"lstm needs an even n_state (h and c), got {n_state}")
        c = _take(config, {"d_input": 16, "num_layers": 1}, name)
        hidden = n_state // (2 * c["num_layers"])
        return torch.nn.LSTM(c["d_input"], hidden, num_layers=c["num_layers"], batch_first=True), \
            f"LSTM hidden {hidden} x {c['num_layers']} layer(s)"
    if name == "mamba":
        from mambapy.mamba import Mamba, MambaConfig
        c = _take(config, {"d_state": 4, "d_model": None}, name)
        d_model = c["d_model"] or n_state // (2 * c["d_state"])
        if 2 * d_model * c["d_state"] != n_state:
            raise ConfigError(f"mamba: 2 * d_model * d_state must equal n_state={n_state}")
        return Mamba(MambaConfig(d_model=d_model, n_layers=1, d_state=c["d_state"], expand_factor=2)), \
            f"Mamba d_model {d_model}, d_state {c['d_state']}"
    if name == "deltanet":
        from onebigstate.nets.mixer import build_mixer
        d, H = _deltanet_shape(n_state)
        cfg = {"impl": "recurrent", "n_heads": H, **config}
        return build_mixer("deltanet", d, cfg), f"DeltaNet d_model {d}, {cfg['n_heads']} heads"
    if name == "obs":
        from onebigstate.model.config import PLAIN_LAYER, OBSConfig
        from onebigstate.model.layer import OBSLayer
        # the plain layer: the memory-function pages (docs/results/memory.md) were measured with it
        base = {"d_model": 16, "n_nodes": n_state, "d_key": 16, "d_value": 16, "d_hidden": 16, "d_write": 16,
                "k_min": 2, "k_max": max(2, min(8, n_state // 8)), "m_active": max(2, min(16, n_state // 4)),
                **PLAIN_LAYER}
        cfg = OBSConfig(**{**base, **config})
        return OBSLayer(cfg), f"OBS N={cfg.n_nodes}, k<={cfg.k_max}, m={cfg.m_active} (state N^2={cfg.n_nodes ** 2})"
    raise ConfigError(f"unknown memory model '{name}'; known: {', '.join(MEMORY_MODELS)} (or s4d for all five inits)")


def full_state_size(model) -> int:
    """Floats per stream the model keeps (its whole recurrent state, not only the read-out vector)."""
    from onebigstate.model.layer import OBSLayer
    if isinstance(model, OBSLayer):
        c = model.cfg
        return c.n_nodes * c.n_nodes + c.m_active + c.k_max
    if isinstance(model, torch.nn.LSTM):
        return 2 * model.num_layers * model.hidden_size
    if hasattr(model, "state_size"):
        return int(model.state_size(0)["floats"])
    if type(model).__name__ == "Mamba":
        c = model.config
        return c.n_layers * c.d_inner * (c.d_state + c.d_conv - 1)
    raise TypeError(f"no state size for {type(model).__name__}")
