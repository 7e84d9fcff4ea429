"""AdamW with parameter groups read from where each parameter is defined, and the LR schedule.

Defaults: weight matrices decay; biases, norm weights, embeddings and every other parameter
with fewer than two dimensions do not. A module can override any setting of one parameter by
tagging it where it is defined (as the s4 repository does):

    self.keys = nn.Parameter(torch.randn(n_nodes, d_key))
    self.keys._optim = {"weight_decay": 0.0, "lr": 1e-3}

Parameters with the same settings share a group; ``build_optimizer`` prints the groups.
Frozen parameters (``requires_grad=False``) are left out.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from onebigstate.training.config import TrainConfig

# Modules whose parameters never decay: embeddings and norms.
NO_DECAY_MODULES: tuple[type[nn.Module], ...] = (nn.Embedding, nn.LayerNorm, nn.GroupNorm,
                                                  nn.BatchNorm1d, nn.BatchNorm2d, nn.RMSNorm)


def param_settings(model: nn.Module, weight_decay: float) -> dict[str, dict]:
    """Optimizer settings of every trainable parameter, by name (defaults, then the ``_optim`` tags)."""
    no_decay_ids = {id(p) for m in model.modules() if isinstance(m, NO_DECAY_MODULES)
                    for p in m.parameters(recurse=False)}
    settings = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decays = p.dim() >= 2 and id(p) not in no_decay_ids
        s = {"weight_decay": weight_decay if decays else 0.0}
        s.update(getattr(p, "_optim", {}))
        settings[name] = s
    return settings


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: parameters with equal settings together, in definition order."""
    params = dict(model.named_parameters())
    groups: dict[tuple, dict] = {}
    for name, s in param_settings(model, weight_decay).items():
        key = tuple(sorted(s.items()))
        g = groups.setdefault(key, {**s, "params": [], "names": []})
        g["params"].append(params[name])
        g["names"].append(name)
    return list(groups.values())


def describe_groups(groups: list[dict]) -> str:
    lines = []
    for i, g in enumerate(groups):
        settings = ", ".join(f"{k}={v}" for k, v in g.items() if k not in ("params", "names"))
        n = sum(p.numel() for p in g["params"])
        lines.append(f"  group {i}: {settings}: {len(g['params'])} tensors, {n:,} params: {', '.join(g['names'])}")
    return "\n".join(lines)


def build_optimizer(model: nn.Module, cfg: TrainConfig,
                    log: Callable[[str], None] | None = print) -> torch.optim.AdamW:
    groups = param_groups(model, cfg.weight_decay)
    if log is not None:
        log("optimizer AdamW, parameter groups:\n" + describe_groups(groups))
    for g in groups:
        del g["names"]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of every group's lr at ``step``: linear warm-up, then cosine to min_lr_ratio (or flat)."""
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    if not cfg.cosine:
        return 1.0
    span = max(cfg.steps - cfg.warmup, 1)
    progress = min((step - cfg.warmup) / span, 1.0)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
