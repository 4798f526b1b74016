"""Experiment configs: one Python file per experiment, overridden by dotted keys.

A config file defines ``get_config() -> ml_collections.ConfigDict`` (the big_vision / Flax-examples
convention). The built-in configs live in the package (``latentjax/configs/``, as big_vision's
``big_vision/configs/``), named relative to it: ``ae/digits.py``. Each stage has a base config
(``latentjax/configs/{ae,dit}/base.py``) holding every key with its default and a comment; a
config is completed from its stage's base (:func:`complete`), so a key missing from a user's file
or from a run saved before the key existed takes the one default there is, and a key the base does
not know is an error.

``load_config`` runs the file, completes and locks the config (so a typo can never add a key) and
applies ``a.b=value`` overrides, parsing each value as a Python literal and checking it against the
type of the field it replaces. Unknown keys and ill-typed values raise :class:`ConfigError` with
one readable line.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import json
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from latentjax import paths
from latentjax.errors import ConfigError
from latentjax.paths import Path, as_path

BUILTIN_DIR = as_path(__file__).resolve().parent / "configs"
# The base config of each stage: the one place its defaults live.
BASES = {"ae": "latentjax.configs.ae.base", "dit": "latentjax.configs.dit.base"}


def builtin_names() -> list[str]:
    """The built-in configs, as names ``load_config`` takes (``ae/digits.py``, ...)."""
    return sorted(
        str(p.relative_to(BUILTIN_DIR))
        for p in paths.files_under(BUILTIN_DIR)
        if p.suffix == ".py" and p.name != "__init__.py" and p.parent != BUILTIN_DIR
    )


def resolve_config(path: str | Path) -> tuple[Path, str | None]:
    """-> (file, module name if built-in). A path that exists is the user's file; otherwise the
    name of a built-in config (``ae/digits.py``, also written ``configs/ae/digits.py``). A
    relative path that is both (a file here named like a built-in config) must say which: a
    config file runs code, so it is never picked for the user."""
    if not paths.is_local(path):
        raise ConfigError(
            f"config {path} is in a bucket: a config file is Python code that latentjax imports "
            "from a local disk; copy it next to the code (launch/tpu_pod.sh copies the repository)"
        )
    p = as_path(path)
    name = p.as_posix().removeprefix("configs/")
    builtin = BUILTIN_DIR / name
    is_builtin = p.suffix == ".py" and builtin.is_file() and ".." not in p.parts
    if p.is_file():
        if is_builtin and not str(path).startswith(("./", "/", "~")):
            raise ConfigError(
                f"{path} is both a file here and the name of a built-in config: write "
                f"./{p.as_posix()} for the file, or move away from it for the built-in one"
            )
        return p, None
    if is_builtin:
        return builtin, "latentjax.configs." + name.removesuffix(".py").replace("/", ".")
    raise ConfigError(
        f"config file not found: {path} (neither a file nor a built-in config such as "
        f"{', '.join(builtin_names()[:3])}, …)"
    )


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Runs ``path``'s ``get_config()`` (a file the user named, or a built-in config's name),
    completes it from its stage's base and applies ``key=value`` overrides."""
    file, module_name = resolve_config(path)
    return _finish(_import(file, module_name), file, overrides)


def load(
    name_or_path: str | Path, overrides: Mapping[str, Any] | Sequence[str] | None = None
) -> ml_collections.ConfigDict:
    """The config ``latentjax train --config NAME_OR_PATH --config.KEY=VALUE ...`` builds, for
    Python: a built-in config's name (``"ae/digits.py"``) or your file, completed from its
    stage's base config, locked, with ``overrides`` applied and type-checked.

    ``overrides``: ``{"train.num_steps": 500, "model.ch_mult": (1, 2)}`` (dotted keys, Python
    values; nested dicts ``{"train": {"num_steps": 500}}`` too) or the command line's
    ``["train.num_steps=500"]``. An unknown key or a value of the wrong type raises
    :class:`ConfigError` naming it; values no run can use (``train.num_steps=0``) are refused by
    ``latentjax.train`` before it writes anything, as by the command."""
    if overrides is None or isinstance(overrides, Mapping):
        config = load_config(name_or_path)
        for key, value in _flatten(overrides or {}, ""):
            set_by_path(config, key, value)
        return config
    if isinstance(overrides, str):
        raise ConfigError(f"overrides must be a dict or a list of 'key=value', got {overrides!r}")
    return load_config(name_or_path, list(overrides))


def _flatten(tree: Mapping[str, Any], prefix: str) -> list[tuple[str, Any]]:
    """``{"a": {"b": 1}, "c.d": 2}`` -> [("a.b", 1), ("c.d", 2)]."""
    out = []
    for key, value in tree.items():
        if isinstance(value, Mapping) and not isinstance(value, ml_collections.ConfigDict):
            out.extend(_flatten(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", value))
    return out


def flat_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """A config's values by dotted key, as JSON would hold them (``{"optim.lr": 1e-4, ...}``)."""
    return dict(_flatten(json.loads(to_json(config)), ""))


def load_builtin(name: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """A built-in config by name, never a file of the current directory (the defaults of
    ``latentjax demo`` and ``latentjax convert``)."""
    file = BUILTIN_DIR / name
    if not file.is_file() or ".." in as_path(name).parts:
        raise ConfigError(f"no built-in config {name!r}; built-in: {', '.join(builtin_names())}")
    module_name = "latentjax.configs." + name.removesuffix(".py").replace("/", ".")
    return _finish(_import(file, module_name), file, overrides)


def _import(file: Path, module_name: str | None):
    try:
        if module_name is not None:
            return importlib.import_module(module_name)
        spec = importlib.util.spec_from_file_location(f"latentjax_config_{file.stem}", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    except Exception as e:  # a broken config file is a user error, not a crash
        raise ConfigError(f"could not import config {file}: {type(e).__name__}: {e}") from e


def _finish(module, file: Path, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config {file} defines no get_config()")
    try:
        config = module.get_config()
    except Exception as e:
        raise ConfigError(f"config {file}: get_config() failed: {type(e).__name__}: {e}") from e
    config = complete(config, str(file))
    apply_overrides(config, overrides)
    return config


def base_config(stage: Any) -> ml_collections.ConfigDict | None:
    """The base config of ``stage`` ("ae", "dit"), or None for a stage without one."""
    if stage not in BASES:
        return None
    return importlib.import_module(BASES[stage]).get_config()


def complete(config: ml_collections.ConfigDict, source: str) -> ml_collections.ConfigDict:
    """``config`` with every key its stage's base config has and it lacks, locked. A key the
    base does not know is a :class:`ConfigError` naming it and ``source``. Configs of a stage
    without a base (tests' toy stages) are only locked."""
    stage = config["stage"] if "stage" in config else None
    base = base_config(stage)
    if base is None:
        config.lock()
        return config

    def merge(defaults: dict, given: dict, prefix: str) -> dict:
        out = dict(defaults)
        for key, value in given.items():
            if key not in defaults:
                hint = difflib.get_close_matches(key, list(defaults), n=1)
                also = f" (did you mean '{prefix}{hint[0]}'?)" if hint else ""
                raise ConfigError(
                    f"unknown config key '{prefix}{key}' in {source}: the {stage} base config "
                    f"has no such key{also}"
                )
            if isinstance(defaults[key], dict) and isinstance(value, dict):
                out[key] = merge(defaults[key], value, f"{prefix}{key}.")
            else:
                out[key] = value
        return out

    merged = ml_collections.ConfigDict(merge(base.to_dict(), config.to_dict(), ""))
    merged.lock()
    return merged


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


def from_json(text: str, source: str = "config.json") -> ml_collections.ConfigDict:
    """Rebuilds a config saved by :func:`to_json` (lists come back as tuples), completed from
    its stage's base config; ``source`` names it in errors."""

    def tuplify(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: tuplify(v) for k, v in x.items()}
        if isinstance(x, list):
            return tuple(tuplify(v) for v in x)
        return x

    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{source}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: not a config (a JSON object)")
    return complete(ml_collections.ConfigDict(tuplify(data)), source)


def key_comments(files: Sequence[Path]) -> dict[str, str]:
    """The comment that documents each key in config files (an inline comment on its
    assignment, else the comment lines right above it), by dotted key; later files win. Reads
    assignments to attributes of ``c`` (the configs' convention); inside ``train_config`` and
    ``mesh_config`` they are keys of the ``train`` and ``mesh`` sections."""
    import io
    import tokenize

    out: dict[str, str] = {}
    for file in files:
        text = as_path(file).read_text()
        inline, above = {}, {}
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                body = tok.string.lstrip("#").strip()
                line = tok.start[0]
                if tok.line.strip().startswith("#"):
                    above[line] = body
                else:
                    inline[line] = body
        tree = ast.parse(text)
        for func in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
            prefix = {"train_config": "train.", "mesh_config": "mesh."}.get(func.name, "")
            for node in ast.walk(func):
                if not isinstance(node, ast.Assign) or len(node.targets) != 1:
                    continue
                key = _attribute_path(node.targets[0])
                if key is None:
                    continue
                comment = inline.get(node.end_lineno) or inline.get(node.lineno)
                if comment is None:
                    lines, line = [], node.lineno - 1
                    while line in above:
                        lines.insert(0, above[line])
                        line -= 1
                    comment = " ".join(lines) or None
                if comment:
                    out[prefix + key] = comment
    return out


def _attribute_path(target: ast.expr) -> str | None:
    """``c.data.name`` -> "data.name"; None for anything else."""
    parts = []
    while isinstance(target, ast.Attribute):
        parts.insert(0, target.attr)
        target = target.value
    return ".".join(parts) if isinstance(target, ast.Name) and target.id == "c" and parts else None


def describe(
    config: ml_collections.ConfigDict, files: Sequence[Path], own: Path | None = None
) -> list[str]:
    """Every key of ``config`` with its value and the comment that documents it in ``files``
    (what the key means); a comment in ``own`` (the config's file: why this value) follows."""
    meaning, here = key_comments(files), key_comments([own]) if own else {}
    flat: list[tuple[str, Any]] = []

    def walk(node: Any, prefix: str) -> None:
        for key in node.keys():
            value = node[key]
            if isinstance(value, ml_collections.ConfigDict):
                walk(value, f"{prefix}{key}.")
            else:
                flat.append((f"{prefix}{key}", value))

    walk(config, "")
    width = min(48, max(len(f"{k} = {v!r}") for k, v in flat))
    lines = []
    for key, value in flat:
        notes = [meaning.get(key), here.get(key)]
        notes = [n for i, n in enumerate(notes) if n and n not in notes[:i]]
        comment = f"  # {notes[0]}" if notes else ""
        comment += f" (here: {notes[1]})" if len(notes) > 1 else ""
        lines.append(f"{key} = {value!r}".ljust(width) + comment)
    return lines


def config_files(path: str | Path) -> tuple[list[Path], Path]:
    """(the files whose comments say what ``path``'s keys mean: the common pieces and its
    stage's base config; ``path``'s own file)."""
    file, _ = resolve_config(path)
    config = load_config(path)
    files = [BUILTIN_DIR / "common.py"]
    if config.stage in BASES:
        files.append(BUILTIN_DIR / config.stage / "base.py")
    return files, file
