"""Checkpoints: one folder per checkpoint, written atomically, validated when read.

A run folder keeps its checkpoints under ``checkpoints/``:

    checkpoints/step_00000200/
        model.safetensors    the model's weights (state_dict)
        trainer.pt           optimizer, LR scheduler, RNG states (python, numpy, torch), step,
                             the trainer's running sums (torch.save, loaded with weights_only)
        states.safetensors   lifelong runs (train.carry_state): the carried states, the big
                             state S of every stream included
        config.yaml          the resolved run config
        meta.json            format, step, and the size and sha256 of every file above
    checkpoints/last -> step_00000200     (a symlink, replaced atomically)

A checkpoint is written into a temporary folder, every file flushed to disk, then renamed to
its final name (``os.replace``); only then does ``last`` move to it, and only then are older
checkpoints removed. A run killed at any moment leaves ``last`` pointing at a complete
checkpoint. Every file gets the mode a plain ``open()`` gives under the umask (safetensors
alone would make its files 0600, unreadable to others sharing the run folder). Reading checks
that every file is there, has the recorded size and checksum and parses, and that the weights
fit the model; every failure is a :class:`CheckpointError` (a ``ValueError``) that names the
file and the problem. A run folder without a usable ``last`` (none yet, or one pointing at a
deleted folder) is reported with the complete checkpoints that remain and the command to run.
"""
from __future__ import annotations

import importlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from onebigstate.config import ConfigError, build_config, load_yaml
from onebigstate.files import atomic_write_text, fsync_dir, fsync_file, plain_file_mode, sha256_of
from onebigstate.model.state import StateStore
from onebigstate.training.config import RunConfig

FORMAT = "onebigstate-checkpoint/1"
MODEL_FILE = "model.safetensors"
TRAINER_FILE = "trainer.pt"
STATES_FILE = "states.safetensors"
CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"
LAST = "last"


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, truncated, corrupt or belongs to another model."""


# ---- RNG states -----------------------------------------------------------------------------
def rng_states() -> dict[str, Any]:
    """The process's RNG states (python, numpy, torch, CUDA), as types ``weights_only`` can load."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    out = {"python": random.getstate(),
           "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                     "has_gauss": int(has_gauss), "gauss": float(gauss)},
           "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_states(s: dict[str, Any]) -> None:
    random.setstate(s["python"])
    n = s["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


# ---- carried states <-> flat tensors --------------------------------------------------------
def detach_states(states: Any) -> Any:
    """Cut the autograd history of carried states (lifelong training over windows)."""
    if states is None:
        return None
    if isinstance(states, torch.Tensor):
        return states.detach()
    if isinstance(states, StateStore):
        return type(states).from_tensors({k: v.detach() for k, v in states.to_tensors().items()})
    if isinstance(states, (list, tuple)):
        return type(states)(detach_states(s) for s in states)
    raise TypeError(f"cannot carry a state of type {type(states).__name__}; expected a StateStore, "
                    f"a tensor, a tuple/list of them, or None")


def _flatten_layer(i: int, state: Any, tensors: dict[str, torch.Tensor]) -> dict:
    if state is None:
        return {"kind": "none"}
    if isinstance(state, torch.Tensor):
        tensors[f"{i}"] = state
        return {"kind": "tensor"}
    if isinstance(state, StateStore):
        parts = state.to_tensors()
        for k, v in parts.items():
            tensors[f"{i}.{k}"] = v
        cls = type(state)
        return {"kind": "store", "class": f"{cls.__module__}:{cls.__qualname__}", "keys": list(parts)}
    if isinstance(state, (list, tuple)) and all(isinstance(t, torch.Tensor) for t in state):
        for j, t in enumerate(state):
            tensors[f"{i}.{j}"] = t
        return {"kind": "tuple", "n": len(state)}
    raise TypeError(f"cannot checkpoint the state of layer {i}: type {type(state).__name__}")


def _store_class(path: str) -> type[StateStore]:
    module, _, qualname = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, StateStore)):
        raise TypeError(f"{path} is not a StateStore class")
    return obj


def states_to_tensors(states: list) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    tensors: dict[str, torch.Tensor] = {}
    layout = [_flatten_layer(i, s, tensors) for i, s in enumerate(states)]
    return tensors, {"layout": json.dumps(layout)}


def states_from_tensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> list:
    layout = json.loads(metadata["layout"])
    states: list = []
    for i, entry in enumerate(layout):
        kind = entry["kind"]
        if kind == "none":
            states.append(None)
        elif kind == "tensor":
            states.append(tensors[f"{i}"])
        elif kind == "store":
            states.append(_store_class(entry["class"]).from_tensors({k: tensors[f"{i}.{k}"] for k in entry["keys"]}))
        elif kind == "tuple":
            states.append(tuple(tensors[f"{i}.{j}"] for j in range(entry["n"])))
        else:
            raise ValueError(f"unknown state kind '{kind}'")
    return states


# ---- writing ----------------------------------------------------------------------------------
def _settle(path: Path) -> None:
    """Give a written file the plain mode (safetensors creates 0600 files) and flush it to disk."""
    os.chmod(path, plain_file_mode())
    fsync_file(path)


def _plain(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous CPU tensors that share no memory
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def _step_of(path: Path) -> int | None:
    name = path.name
    if name.startswith("step_") and name[5:].isdigit():
        return int(name[5:])
    return None


def step_folders(root: Path) -> list[Path]:
    """The ``step_*`` folders under a ``checkpoints`` folder, oldest first (complete or not)."""
    if not root.is_dir():
        return []
    found = [(s, p) for p in root.iterdir() if p.is_dir() and not p.is_symlink() and (s := _step_of(p)) is not None]
    return [p for _, p in sorted(found)]


def save_checkpoint(root: str | Path, step: int, cfg: RunConfig, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any, trainer_state: dict,
                    states: list | None = None, keep: int = 1) -> Path:
    """Write checkpoint ``root/step_<step>`` atomically, point ``root/last`` at it, prune old ones."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file(_plain(model.state_dict()), str(tmp / MODEL_FILE), metadata={"format": FORMAT})
    torch.save({"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": rng_states(), "trainer": trainer_state}, tmp / TRAINER_FILE)
    binary = [MODEL_FILE, TRAINER_FILE]
    if states is not None:
        tensors, metadata = states_to_tensors(states)
        save_file(_plain(tensors), str(tmp / STATES_FILE), metadata={"format": FORMAT, **metadata})
        binary.append(STATES_FILE)
    for f in binary:
        _settle(tmp / f)
    atomic_write_text(tmp / CONFIG_FILE, cfg.resolved().to_yaml())
    files = binary + [CONFIG_FILE]
    meta = {"format": FORMAT, "step": step, "torch": torch.__version__,
            "files": {f: {"bytes": (tmp / f).stat().st_size, "sha256": sha256_of(tmp / f)} for f in files}}
    atomic_write_text(tmp / META_FILE, json.dumps(meta, indent=1))
    fsync_dir(tmp)
    last = root / LAST
    if final.exists():
        if last.is_symlink() and os.readlink(last) == final.name:
            # Rewriting the step `last` points at (a run resumed from an earlier checkpoint):
            # point `last` at the complete temporary folder while the old one is replaced.
            _point_last(root, tmp.name)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _point_last(root, final.name)
    fsync_dir(root)
    _prune(root, step, keep)
    return final


def _point_last(root: Path, target: str) -> None:
    """Make ``root/last`` a symlink to ``target`` atomically (a new link renamed over the old)."""
    link_tmp = root / f".tmp-last-{os.getpid()}"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    os.symlink(target, link_tmp)
    os.replace(link_tmp, root / LAST)


def _prune(root: Path, step: int, keep: int) -> None:
    """Keep the ``keep`` newest checkpoints up to ``step``; drop later ones (a killed branch) and temp folders."""
    done = [(_step_of(p), p) for p in step_folders(root)]
    older = [p for s, p in done if s <= step]
    for p in older[:-keep] + [p for s, p in done if s > step]:
        shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(".tmp-*"):
        if p.is_symlink() or p.is_file():
            p.unlink(missing_ok=True)
        else:
            shutil.rmtree(p, ignore_errors=True)


# ---- reading ----------------------------------------------------------------------------------
def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a checkpoint folder, a ``checkpoints`` folder or a run folder."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint not found: {p}")
    if not p.is_dir():
        raise CheckpointError(f"{p} is a file; a checkpoint is a folder (e.g. RUN/checkpoints/last)")
    if (p / META_FILE).exists() or (p / MODEL_FILE).exists():
        return p.resolve()
    for candidate in (p / LAST, p / "checkpoints" / LAST):
        if candidate.exists():
            return candidate.resolve()
    root = p if p.name == "checkpoints" else p / "checkpoints"
    if root.is_dir() or (p / CONFIG_FILE).exists():
        raise CheckpointError(_why_no_last(root))
    raise CheckpointError(f"{p} is not a checkpoint (no {META_FILE}) nor a run folder (no checkpoints/last)")


def _why_no_last(root: Path) -> str:
    """Why the ``checkpoints`` folder ``root`` gives no ``last`` checkpoint, and what to run instead."""
    run, last = root.parent, root / LAST
    complete = complete_checkpoints(root)
    if last.is_symlink():
        why = f"{last} points at a missing folder ({os.readlink(last)})"
    elif complete:
        why = f"{last} is missing"
    else:
        why = f"{run} has no checkpoint yet (the run was stopped before its first checkpoint was written)"
    if complete:
        return (f"{why}; complete checkpoints that remain: {', '.join(c.name for c in complete)}; resume from "
                f"one, e.g. the newest: `obs train --resume {complete[-1]}`")
    if step_folders(root):
        return f"{why}, and no complete checkpoint remains in {root}; move {run} away to start the run again"
    config = run / CONFIG_FILE if (run / CONFIG_FILE).exists() else "CONFIG"
    return f"{why}; start it again with `obs train {config} --out {run}`"


def complete_checkpoints(root: Path) -> list[Path]:
    """The checkpoint folders under ``root`` whose files are all there at their recorded sizes, oldest first."""
    complete = []
    for folder in step_folders(root):
        try:
            _read_meta(folder, verify=False)
        except CheckpointError:
            continue
        complete.append(folder)
    return complete


@dataclass
class Checkpoint:
    """A validated checkpoint folder: its metadata and config; tensors are read on demand."""

    path: Path
    meta: dict
    config: RunConfig

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    @property
    def run_dir(self) -> Path | None:
        """The run folder this checkpoint belongs to (``RUN/checkpoints/step_*``), if it is in one."""
        if self.path.parent.name == "checkpoints":
            return self.path.parent.parent
        return None

    @property
    def has_states(self) -> bool:
        return STATES_FILE in self.meta["files"]

    def file(self, name: str) -> Path:
        return self.path / name

    def model_tensors(self) -> dict[str, torch.Tensor]:
        return _load_safetensors(self.file(MODEL_FILE))

    def trainer_state(self) -> dict:
        f = self.file(TRAINER_FILE)
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure means a corrupt file
            raise CheckpointError(f"{f} is corrupt or not a trainer state: {type(err).__name__}: {err}") from None

    def states(self, device: torch.device | str = "cpu") -> list:
        f = self.file(STATES_FILE)
        if not self.has_states:
            raise CheckpointError(f"checkpoint {self.path} holds no carried states ({STATES_FILE}): it was "
                                  f"written by a run with train.carry_state=false")
        try:
            from safetensors import safe_open
            with safe_open(str(f), framework="pt", device="cpu") as fh:
                metadata = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k).to(device) for k in fh.keys()}
            return states_from_tensors(tensors, metadata)
        except (SafetensorError, OSError, KeyError, ValueError, TypeError) as err:
            raise CheckpointError(f"{f} does not hold valid carried states: {type(err).__name__}: {err}") from None


def _load_safetensors(f: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(f))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{f} is truncated or corrupt: {err}") from None


def read_checkpoint(path: str | Path, verify: bool = True) -> Checkpoint:
    """Find and validate a checkpoint: files present, sizes and checksums as recorded, config valid."""
    ckpt_dir = resolve_checkpoint(path)
    meta = _read_meta(ckpt_dir, verify)
    cfg_f = ckpt_dir / CONFIG_FILE
    try:
        config = build_config(RunConfig, load_yaml(cfg_f.read_text(), str(cfg_f)), source=str(cfg_f))
    except ConfigError as err:
        raise CheckpointError(f"{cfg_f} is not a valid run config: {err}") from None
    return Checkpoint(ckpt_dir, meta, config)


def _read_meta(ckpt_dir: Path, verify: bool) -> dict:
    """A checkpoint's ``meta.json``, once every file it records is there at its recorded size (and
    checksum, with ``verify``)."""
    meta_f = ckpt_dir / META_FILE
    if not meta_f.exists():
        raise CheckpointError(f"{ckpt_dir} is not an onebigstate checkpoint: {META_FILE} is missing")
    try:
        meta = json.loads(meta_f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{meta_f} is corrupt: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{meta_f}: not an onebigstate checkpoint of format {FORMAT} (format: {got!r})")
    for name, rec in meta["files"].items():
        f = ckpt_dir / name
        if not f.exists():
            raise CheckpointError(f"checkpoint {ckpt_dir} is incomplete: {name} is missing")
        size = f.stat().st_size
        if size != rec["bytes"]:
            what = "truncated" if size < rec["bytes"] else "longer than written"
            raise CheckpointError(f"{f} is {what}: {size} bytes, the checkpoint recorded {rec['bytes']}")
        if verify and sha256_of(f) != rec["sha256"]:
            raise CheckpointError(f"{f} is corrupt: its sha256 differs from the one recorded in {META_FILE} "
                                  f"(the file was changed or replaced after the checkpoint was written)")
    return meta


def load_model_weights(ckpt: Checkpoint, model: torch.nn.Module) -> None:
    """Load the weights into ``model``; a checkpoint of another model shape is a CheckpointError."""
    f = ckpt.file(MODEL_FILE)
    tensors = ckpt.model_tensors()
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = [f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
             for k, v in own.items() if k in tensors and tensors[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if wrong:
            parts.append("shape mismatch " + "; ".join(wrong[:8]))
        raise CheckpointError(f"{f} does not fit this model (a checkpoint of another model?): " + ", ".join(parts))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()})


def check_same_run(ckpt: Checkpoint, cfg: RunConfig) -> None:
    """A run can continue from ``ckpt`` only if the task and model configs agree."""
    diff = ckpt.config.identity_diff(cfg, "checkpoint", "config")
    if diff:
        raise CheckpointError(f"checkpoint {ckpt.path} belongs to another run (its {CONFIG_FILE} differs): "
                              + "; ".join(diff[:10]))
