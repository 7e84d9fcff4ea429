"""The sequence-mixer interface every model in the library implements, and its registry.

A mixer maps ``x [B, T, D] -> (y [B, T, D], state)``. ``state`` is whatever the mixer carries
between calls (``None`` to start afresh; mixers that cannot carry state return ``None`` and
raise if given one). ``state_size()`` reports floats per stream, counted the Zoology way
(the recurrent state a model must keep to continue the sequence; for attention, the KV cache
at the given length).

Register a mixer with its typed config:

    @register_mixer("lstm", LSTMConfig)
    class LSTMMixer(Mixer): ...

and build it with ``build_mixer("lstm", d_model, {"...": ...})``; unknown or ill-typed keys
raise an error naming the key. Registering happens on import, one way: ``onebigstate.nets``
registers ``obs``; the lab's ``onebigstate.baselines`` registers the baselines (the trainer, bench
and CLI import it). This module imports neither.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from pydantic import ValidationError
from torch import nn

from onebigstate.config import ConfigError, StrictModel


class Mixer(nn.Module):
    """Base class: subclasses implement forward(x, state=None) -> (y, state) and state_size."""

    def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:  # pragma: no cover
        raise NotImplementedError

    def state_size(self, seq_len: int) -> dict[str, int]:
        """Floats per stream needed to continue the sequence after ``seq_len`` steps.

        Must contain ``floats``; OBS also reports ``dense_floats`` and ``written_entries``.
        """
        raise NotImplementedError


@dataclass
class MixerEntry:
    cls: Callable[..., Mixer]
    config: type[StrictModel]


MIXERS: dict[str, MixerEntry] = {}


def register_mixer(name: str, config: type[StrictModel]):
    def deco(cls):
        if name in MIXERS:
            raise ValueError(f"mixer '{name}' registered twice")
        MIXERS[name] = MixerEntry(cls, config)
        return cls
    return deco


def mixer_config(name: str, kwargs: dict | None) -> StrictModel:
    if name not in MIXERS:
        hint = ("; the baselines register when onebigstate.baselines is imported (pip install 'onebigstate[lab]')"
                if "lstm" not in MIXERS else "")
        raise ConfigError(f"unknown model '{name}'; known: {sorted(MIXERS)}{hint}")
    try:
        return MIXERS[name].config.model_validate(kwargs or {})
    except ValidationError as err:
        msgs = "; ".join((f"{'.'.join(map(str, e['loc']))}: " if e["loc"] else "")
                         + e["msg"].removeprefix("Value error, ") for e in err.errors())
        raise ConfigError(f"invalid config for model '{name}': {msgs}") from None


def build_mixer(name: str, d_model: int, kwargs: dict | None = None) -> Mixer:
    cfg = mixer_config(name, kwargs)
    return MIXERS[name].cls(d_model, cfg)
