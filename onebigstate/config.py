"""Typed, printable configs with strict ``key=value`` overrides.

Every component has a pydantic model with ``extra="forbid"``: an unknown key or a value of
the wrong type is an error that names the key. Overrides use dotted paths, as in
``obs train configs/mqar.yaml model.n_nodes=1024 train.lr=3e-3``.
"""
from __future__ import annotations

import json
import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound="StrictModel")


class ConfigError(ValueError):
    """A config file or override is wrong (unknown key, wrong type, bad value)."""


def flat_keys(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as ``{"a.b.c": leaf}``."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flat_keys(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def config_diff(old: dict, new: dict, old_name: str = "old", new_name: str = "new") -> list[str]:
    """The dotted keys on which two nested config dicts differ, as ``key: <old_name> a vs <new_name> b``."""
    a, b = flat_keys(old), flat_keys(new)
    return [f"{k}: {old_name} {a.get(k)!r} vs {new_name} {b.get(k)!r}"
            for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


class StrictModel(BaseModel):
    """Base for every config: unknown keys are errors, assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def __str__(self) -> str:  # printable: the resolved config as YAML
        return self.to_yaml()


class DuplicateKeyError(ConfigError):
    """A config's YAML sets one key twice in the same section."""

    def __init__(self, key: Any, first_line: int, line: int):
        super().__init__(f"key '{key}' appears twice in one section: at line {first_line} and again at "
                         f"line {line} (YAML would silently keep the last value); remove one")


class ConfigLoader(yaml.SafeLoader):
    """YAML for configs: a duplicated key is an error, and ``1e3``, ``2.5e4``, ``1E-3`` are numbers.

    PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent, so ``1e3`` would be
    the string '1e3' (and ``train.steps: 1e3`` an error); YAML 1.2 and Python read it as 1000.0,
    which an int field takes as 1000 (and ``1e3.5`` stays a string that no number field takes)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` is overridden by design
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):  # the base class reports unhashable keys
                continue
            line = key_node.start_mark.line + 1
            if key in first_line:
                raise DuplicateKeyError(key, first_line[key], line)
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - ConfigLoader is a SafeLoader


def load_yaml(text: str, source: str) -> Any:
    """Parse a config file's text (:class:`ConfigLoader`); a problem is a :class:`ConfigError` naming ``source``."""
    try:
        return _parse_yaml(text)
    except DuplicateKeyError as err:
        raise ConfigError(f"{source}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source} is not valid YAML: {err}") from None


def parse_value(text: str) -> Any:
    """Parse an override value as config YAML (``3e-3``, ``1e3``, ``true``, ``[1,2]``), else a string."""
    try:
        return _parse_yaml(text)
    except yaml.YAMLError:
        return text


def _set_dotted(tree: dict, dotted: str, value: Any, known: dict) -> None:
    # A section whose default is an empty mapping (a model's ``mixer`` keys, a task's
    # ``params``) is open: its keys are checked by the component that owns them, when the
    # config is validated, so any key below it is accepted here.
    parts = dotted.split(".")
    node, ref = tree, known
    for i, part in enumerate(parts):
        if ref == {} and i > 0:
            ref = {part: {}}
        if not isinstance(ref, dict) or part not in ref:
            where = ".".join(parts[:i]) or "<top level>"
            options = sorted(ref) if isinstance(ref, dict) else []
            raise ConfigError(f"unknown config key '{dotted}': no '{part}' under {where}; known keys: {options}")
        if i == len(parts) - 1:
            node[part] = value
        else:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key '{'.'.join(parts[: i + 1])}' is a value, not a section")
            ref = ref[part]


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        # pydantic prefixes the text of a ValueError raised in a validator with "Value error, "
        msg = e["msg"].replace("Value error, ", "").replace(": : ", ": ")
        got = e.get("input")
        # a whole section as the input says nothing the key does not; show only scalars
        shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
        lines.append(f"  {loc + ': ' if loc else ''}{msg}{shown}")
    return "\n".join(lines)


def build_config(cls: type[T], base: dict | None = None, overrides: list[str] | None = None,
                 source: str = "config") -> T:
    """Build ``cls`` from a dict plus ``key=value`` overrides, with errors that name the key."""
    tree = json.loads(json.dumps(base or {}))
    known = cls().model_dump()
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), parse_value(raw), known)
    try:
        return cls.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """Read a YAML config file (or none: the defaults) and apply overrides."""
    base: dict = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        base = load_yaml(path.read_text(), f"config file {path}") or {}
        if not isinstance(base, dict):
            raise ConfigError(f"config file {path} must hold a mapping at top level, got {type(base).__name__}")
        source = str(path)
    return build_config(cls, base, overrides, source)
