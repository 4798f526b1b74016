"""Shared pieces of the weight converters: reading files safely, filling a linen parameter tree
from a name-mapped state dict with one clear error per problem, and our own on-disk format.

Only formats that cannot run code are read: safetensors, and PyTorch ``.pt``/``.pth`` through
``torch.load(weights_only=True)``, which refuses pickles holding anything but tensors and plain
containers. Converted weights are written as ``params.npz`` (read with ``allow_pickle=False``)
beside a JSON description, so loading a converted checkpoint never unpickles either.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import flax
import numpy as np

from latentjax.errors import LatentjaxError

CONVERTED_FILE = "latentjax_converted.json"
PARAMS_FILE = "params.npz"


class ConvertError(LatentjaxError):
    """A weights file is missing, unreadable, or does not have the expected layout."""


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"no weights file at {path}")
    try:
        from safetensors.numpy import load_file
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConvertError("reading .safetensors needs the 'safetensors' package") from e
    try:
        return {k: np.asarray(v, np.float32) for k, v in load_file(str(path)).items()}
    except Exception as e:  # safetensors raises its own SafetensorError on a corrupt header
        raise ConvertError(f"{path} is not a readable safetensors file ({e})") from e


def read_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A ``.pt``/``.pth`` state dict, read with ``weights_only=True`` (no arbitrary unpickling).
    A checkpoint that nests the weights (e.g. ``{"model": ..., "ema": ...}``) is rejected with the
    keys it holds, so the user can pick one."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"no weights file at {path}")
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConvertError("reading PyTorch .pt files needs the 'torch' package") from e
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        # torch raises UnpicklingError naming the global it refused; keep its first line.
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConvertError(
            f"{path} is not a weights-only PyTorch state dict (refused to unpickle: {reason})"
        ) from e
    if not isinstance(sd, Mapping) or not all(torch.is_tensor(v) for v in sd.values()):
        keys = list(sd)[:5] if isinstance(sd, Mapping) else type(sd).__name__
        raise ConvertError(f"{path} does not hold a flat tensor state dict (top level: {keys})")
    return {k: v.detach().to(torch.float32).numpy() for k, v in sd.items()}


def flatten(tree: Mapping) -> dict[str, Any]:
    return {"/".join(k): v for k, v in flax.traverse_util.flatten_dict(dict(tree)).items()}


def unflatten(flat: Mapping[str, Any]) -> dict:
    return flax.traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


Transform = Callable[[np.ndarray], np.ndarray]


def conv_kernel(w: np.ndarray) -> np.ndarray:
    """PyTorch conv [out, in, kh, kw] -> linen [kh, kw, in, out]."""
    return np.transpose(w, (2, 3, 1, 0))


def linear_as_conv1x1(w: np.ndarray) -> np.ndarray:
    """PyTorch Linear [out, in] used on channels -> linen 1x1 conv kernel [1, 1, in, out]."""
    return w.T[None, None]


def linear_kernel(w: np.ndarray) -> np.ndarray:
    """PyTorch Linear [out, in] -> linen Dense [in, out]."""
    return w.T


def identity(w: np.ndarray) -> np.ndarray:
    return w


def fill_params(
    expected: Mapping[str, Any],
    state_dict: Mapping[str, np.ndarray],
    mapping: Mapping[str, tuple[str, Transform]],
    source: str,
) -> dict:
    """Builds the linen tree whose flat paths and shapes are ``expected`` from ``state_dict``:
    ``mapping`` sends each linen path to (source key, transform). Raises on a missing key, a
    source key that nothing consumes, or a shape mismatch, naming the key."""
    out = {}
    for path, shape_like in expected.items():
        if path not in mapping:
            raise ConvertError(f"{source}: the converter has no source for parameter {path}")
        key, fn = mapping[path]
        if key not in state_dict:
            raise ConvertError(f"{source}: missing key {key!r} (needed for {path})")
        value = np.asarray(fn(state_dict[key]), np.float32)
        if value.shape != tuple(shape_like.shape):
            raise ConvertError(
                f"{source}: key {key!r} has shape {tuple(state_dict[key].shape)}, which does not "
                f"fit {path} {tuple(shape_like.shape)}"
            )
        out[path] = value
    used = {key for key, _ in mapping.values()}
    unused = sorted(set(state_dict) - used)
    if unused:
        raise ConvertError(
            f"{source}: unexpected key {unused[0]!r} ({len(unused)} unused); wrong model layout?"
        )
    return unflatten(out)


def save_converted(out_dir: str | Path, description: dict, params: Mapping) -> Path:
    """Writes our converted-checkpoint format: ``latentjax_converted.json`` + ``params.npz``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    flat = {k: np.asarray(v) for k, v in flatten(params).items()}
    np.savez(out_dir / PARAMS_FILE, **flat)
    (out_dir / CONVERTED_FILE).write_text(json.dumps(description, indent=2))
    return out_dir


def load_converted(path: str | Path) -> tuple[dict, dict]:
    """-> (description, params) of a directory written by :func:`save_converted`."""
    path = Path(path)
    desc_path, params_path = path / CONVERTED_FILE, path / PARAMS_FILE
    if not desc_path.is_file() or not params_path.is_file():
        raise ConvertError(f"{path} is not a converted checkpoint (needs {CONVERTED_FILE})")
    description = json.loads(desc_path.read_text())
    with np.load(params_path, allow_pickle=False) as f:
        params = unflatten({k: np.asarray(f[k]) for k in f.files})
    return description, params


def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ConvertError(f"{path.parent} is not a {what} directory (missing {path.name})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConvertError(f"{path} is not valid JSON ({e})") from e
