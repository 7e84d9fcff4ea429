"""Scan backends by name, and what ``auto`` picks.

Every backend is a function ``(state, carry, inputs, params, cfg, n_reg_samples) -> ScanOutputs``
that updates ``state`` in place (``obs_scan`` hands it a copy unless the caller asked for in-place)
and returns the final state and carry in the outputs. They implement one model: a backend that
could not run a setting would raise, never run something else.
"""
from __future__ import annotations

import warnings

import torch

BACKENDS = ("auto", "cpu", "reversible", "reference", "triton")

_said: set[str] = set()


def _say_once(key: str, message: str) -> None:
    if key not in _said:
        _said.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def resolve_backend(name: str, device: torch.device) -> str:
    """The backend that runs for ``name`` on ``device``.

    ``auto``: ``cpu`` (compiled) on CPU tensors when it builds and loads here; otherwise
    ``reversible``, saying once per process why. On CUDA, ``reversible`` for now: ``triton`` is
    checked only by Triton's interpreter until a device check has run it on a GPU. A backend named
    explicitly runs or raises: ``cpu`` that cannot load raises with the cause, ``triton`` off CUDA
    (without ``TRITON_INTERPRET=1``) too.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown scan backend '{name}'; expected one of {list(BACKENDS)}")
    if name != "auto":
        return name
    if device.type != "cpu":
        return "reversible"
    from onebigstate.kernels import cpu
    if cpu.available():
        return "cpu"
    _say_once("cpu", f"onebigstate: the compiled CPU scan is unavailable ({cpu.unavailable_reason()}); "
                     "backend 'auto' runs 'reversible', the Python loop, which is several times slower")
    return "reversible"


def run_backend(name: str, state, carry, inputs, params, cfg, n_reg_samples: int):
    if name == "reference":
        from onebigstate.kernels.reference import scan_reference as run
    elif name == "reversible":
        from onebigstate.kernels.reversible import scan_reversible as run
    elif name == "cpu":
        from onebigstate.kernels.cpu import scan_cpu as run
    elif name == "triton":
        from onebigstate.kernels.triton_scan import scan_triton as run
    else:
        raise ValueError(f"backend '{name}' must be resolved before it runs (resolve_backend)")
    return run(state, carry, inputs, params, cfg, n_reg_samples)
