"""Experiment configs: one Python file per experiment, overridden by dotted keys.

A config file defines ``get_config() -> ml_collections.ConfigDict`` (the big_vision / Flax-examples
convention). ``load_config`` imports it, locks it (so a typo can never add a key) and applies
``a.b=value`` overrides, parsing each value as a Python literal and checking it against the type
of the field it replaces. Unknown keys and ill-typed values raise :class:`ConfigError` with one
readable line.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections

from latentjax.errors import ConfigError

# Repository root: configs/ lives beside the package in a source checkout.
REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS_DIR = REPO_ROOT / "configs"


def resolve_config_path(path: str | Path) -> Path:
    """Finds a config file given as a path, or relative to the repository's ``configs/``."""
    p = Path(path)
    for candidate in (p, CONFIGS_DIR / p, REPO_ROOT / p):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config file not found: {path}")


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Imports ``path``, calls its ``get_config()`` and applies ``key=value`` overrides."""
    file = resolve_config_path(path)
    # Config files may import shared pieces (``configs/common.py``) from the repository root.
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    spec = importlib.util.spec_from_file_location(f"latentjax_config_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a broken config file is a user error, not a crash
        raise ConfigError(f"could not import config {file}: {type(e).__name__}: {e}") from e
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config {file} defines no get_config()")
    config = module.get_config()
    config.lock()
    apply_overrides(config, overrides)
    return config


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
    """Applies ``a.b=value`` strings in place; unknown keys and wrong types raise."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        set_by_path(config, key.strip(), parse_value(raw))


def parse_value(raw: str) -> Any:
    """Parses a command-line value as a Python literal, falling back to a plain string."""
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def set_by_path(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = config
    for depth, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            known = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            prefix = ".".join(parts[:depth])
            hint = difflib.get_close_matches(part, known, n=1)
            where = f" under '{prefix}'" if prefix else ""
            msg = f"unknown config key '{key}': no '{part}'{where}"
            if hint:
                msg += f" (did you mean '{'.'.join([*parts[:depth], hint[0]])}'?)"
            raise ConfigError(msg)
        if depth < len(parts) - 1:
            node = node[part]
    old = node[parts[-1]]
    node[parts[-1]] = _coerce(key, old, value)


def _coerce(key: str, old: Any, value: Any) -> Any:
    """Checks ``value`` against the type of the field it replaces."""
    if old is None or value is None:
        return value
    if isinstance(old, ml_collections.ConfigDict):
        raise ConfigError(f"config key '{key}' is a group; set one of its fields instead")
    if isinstance(old, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif isinstance(old, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(old, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(old, str):
        return str(value)
    elif isinstance(old, (tuple, list)):
        if isinstance(value, (int, float, str)):
            value = (value,)
        if isinstance(value, (tuple, list)):
            return tuple(value)
    else:
        return value
    raise ConfigError(
        f"config key '{key}' expects {type(old).__name__}, got {value!r} ({type(value).__name__})"
    )


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)


def from_json(text: str) -> ml_collections.ConfigDict:
    """Rebuilds a config saved by :func:`to_json` (lists come back as tuples)."""

    def tuplify(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: tuplify(v) for k, v in x.items()}
        if isinstance(x, list):
            return tuple(tuplify(v) for v in x)
        return x

    config = ml_collections.ConfigDict(tuplify(json.loads(text)))
    config.lock()
    return config
