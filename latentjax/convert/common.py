"""Shared pieces of the weight converters: reading files safely, filling a linen parameter tree
from a name-mapped state dict with one clear error per problem, and our own on-disk format.

Only formats that cannot run code are read: safetensors, and PyTorch ``.pt``/``.pth`` through
``torch.load(weights_only=True)``, which refuses pickles holding anything but tensors and plain
containers. Converted weights are written as ``params.npz`` (read with ``allow_pickle=False``)
beside a JSON description, so loading a converted checkpoint never unpickles either.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import flax
import numpy as np

from latentjax import paths
from latentjax.errors import LatentjaxError
from latentjax.paths import Path, as_path

CONVERTED_FILE = "latentjax_converted.json"
PARAMS_FILE = "params.npz"


class ConvertError(LatentjaxError):
    """A weights file is missing, unreadable, or does not have the expected layout."""


# Classes a PyTorch checkpoint may hold besides tensors and plain containers, and that
# ``read_torch_checkpoint`` agrees to rebuild when asked: only ``argparse.Namespace`` (DiT's
# train.py stores its command line as one). It has no ``__setstate__`` of its own, so rebuilding
# it only sets attributes, whose values weights_only loading checks like any others.
SAFE_GLOBALS = {"argparse.Namespace": argparse.Namespace}

# The file stem diffusers' ``save_pretrained`` writes a model's weights under.
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model"
# Precision variants (``save_pretrained(variant=...)``), most precise first: the order in which
# a directory holding only variants is read.
VARIANTS = ("fp32", "fp16", "bf16")


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """A ``.safetensors`` file as float32 arrays. bfloat16 tensors (Flux-era weights) load too:
    numpy knows the dtype once ml_dtypes, a JAX dependency imported with flax above, is loaded."""
    path = as_path(path)
    if not path.is_file():
        raise ConvertError(f"no weights file at {path}")
    try:
        from safetensors.numpy import load_file
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConvertError("reading .safetensors needs the 'safetensors' package") from e
    try:
        if paths.is_local(path):
            tensors = load_file(os.fspath(path))
        else:  # load_file reads bfloat16, safetensors.numpy.load (from bytes) does not
            with tempfile.NamedTemporaryFile(suffix=".safetensors") as local:
                local.write(path.read_bytes())
                local.flush()
                tensors = load_file(local.name)
        return {k: np.asarray(v, np.float32) for k, v in tensors.items()}
    except Exception as e:  # safetensors raises its own SafetensorError on a corrupt header
        raise ConvertError(f"{path} is not a readable safetensors file ({e})") from e


def read_torch_checkpoint(path: str | Path, allow: tuple[str, ...] = ()) -> Any:
    """Whatever a ``.pt``/``.pth``/``.bin`` file holds, read with ``weights_only=True``: tensors,
    numbers, strings and plain containers, plus the classes of :data:`SAFE_GLOBALS` named in
    ``allow``. Anything else (a pickled object of another class) is refused, naming it."""
    path = as_path(path)
    if not path.is_file():
        raise ConvertError(f"no weights file at {path}")
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConvertError("reading PyTorch .pt files needs the 'torch' package") from e
    extra = [SAFE_GLOBALS[name] for name in allow]
    try:
        with torch.serialization.safe_globals(extra):
            with path.open("rb") as f:  # a file object: a bucket path reads as a local one
                return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConvertError(f"{path}: {_refusal(e, allow)}") from e


def _refusal(e: Exception, allow: tuple[str, ...]) -> str:
    """One line for torch's refusal to unpickle: which global the file holds. (torch's own
    message goes on to advise loading with weights_only=False, which latentjax never does.)"""
    text = str(e)
    if m := re.search(r"Unsupported global: GLOBAL ([\w.]+)", text):
        also = "".join(f", {name}" for name in allow)
        return (
            f"the file holds a pickled {m[1]}, which latentjax does not unpickle here (it reads "
            f"tensors and plain containers{also})"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return f"not a readable PyTorch file ({first})"


def read_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A ``.pt``/``.pth``/``.bin`` state dict, read with ``weights_only=True`` (no arbitrary
    unpickling). A checkpoint that nests the weights (e.g. ``{"model": ..., "ema": ...}``) is
    rejected with the keys it holds, so the user can pick one."""
    return tensors_of(read_torch_checkpoint(path), str(path))


def tensors_of(sd: Any, source: str) -> dict[str, np.ndarray]:
    """A flat ``{name: tensor}`` mapping as float32 arrays; anything else raises."""
    import torch

    if not isinstance(sd, Mapping) or not all(torch.is_tensor(v) for v in sd.values()):
        keys = list(sd)[:5] if isinstance(sd, Mapping) else type(sd).__name__
        raise ConvertError(f"{source} does not hold a flat tensor state dict (top level: {keys})")
    return {k: v.detach().to(torch.float32).numpy() for k, v in sd.items()}


def model_dir(path: str | Path, subfolder: str) -> Path:
    """``path`` itself, or its ``subfolder`` when ``path`` is a diffusers pipeline directory
    (``model_index.json`` and no ``config.json`` of its own): a pipeline keeps its autoencoder
    in ``vae/`` and its denoiser in ``transformer/``."""
    path = as_path(path)
    if path.is_dir() and not (path / "config.json").exists() and (path / subfolder).is_dir():
        return path / subfolder
    return path


def _weight_files(stem: str, variant: str | None) -> list[tuple[str, str]]:
    """(file name, kind) in the order save_pretrained's layouts are tried for one variant;
    kind is "safetensors", "bin", or the shard index's "safetensors-index" / "bin-index"."""
    v = f".{variant}" if variant else ""
    return [
        (f"{stem}{v}.safetensors", "safetensors"),
        (f"{stem}.safetensors.index{v}.json", "safetensors-index"),
        (f"{stem}{v}.bin", "bin"),
        (f"{stem}.bin.index{v}.json", "bin-index"),
    ]


def read_pretrained_weights(
    path: str | Path, stem: str = DIFFUSERS_WEIGHTS
) -> tuple[dict[str, np.ndarray], str]:
    """The tensors of a ``save_pretrained`` model directory, whichever layout it was written in:
    ``{stem}.safetensors``, sharded safetensors (``{stem}.safetensors.index.json`` naming its
    shards), ``{stem}.bin`` (read with ``weights_only=True``) or sharded ``.bin``, and the
    precision variants of each (``{stem}.fp16.safetensors``, ...). Full precision is taken when
    present, else the variants in :data:`VARIANTS` order. -> (float32 state dict, the file read
    (an index for sharded weights), for messages)."""
    path = as_path(path)
    found = {p.name for p in path.iterdir()} if path.is_dir() else set()
    for variant in [None, *VARIANTS, *sorted(_variants(found, stem) - set(VARIANTS))]:
        for name, kind in _weight_files(stem, variant):
            if name not in found:
                continue
            file = path / name
            if kind == "safetensors":
                return read_safetensors(file), str(file)
            if kind == "bin":
                return read_torch_state_dict(file), str(file)
            return _read_shards(file, kind), str(file)
    listing = ", ".join(sorted(found)[:8]) or "nothing"
    raise ConvertError(
        f"{path}: no weights file (looked for {stem}.safetensors, a sharded "
        f"{stem}.safetensors.index.json, {stem}.bin, and their .fp16/.bf16 variants); "
        f"the directory holds: {listing}"
    )


def _variants(names: set[str], stem: str) -> set[str]:
    """The variant names among a directory's files: ``{stem}.{v}.safetensors``,
    ``{stem}.{v}.bin`` and the shard indexes ``{stem}.{safetensors,bin}.index.{v}.json``."""
    out = set()
    for name in names:
        parts = name.split(".")
        if parts[0] != stem:
            continue
        if len(parts) == 3 and parts[2] in ("safetensors", "bin"):
            out.add(parts[1])
        elif len(parts) == 5 and parts[1:3] in (["safetensors", "index"], ["bin", "index"]):
            out.add(parts[3])
    return out


def _read_shards(index: Path, kind: str) -> dict[str, np.ndarray]:
    """The union of the shards a ``*.index.json`` lists (each key from the shard it names)."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as e:
        raise ConvertError(f"{index} is not a shard index ({e})") from e
    out: dict[str, np.ndarray] = {}
    for shard in shards:
        if as_path(shard).name != shard:  # shards live beside their index, never elsewhere
            raise ConvertError(f"{index}: shard {shard!r} is not a file name in its directory")
        file = index.parent / shard
        part = (
            read_safetensors(file) if kind == "safetensors-index" else read_torch_state_dict(file)
        )
        out.update({k: v for k, v in part.items() if weight_map.get(k) == shard})
    missing = sorted(set(weight_map) - set(out))
    if missing:
        raise ConvertError(f"{index}: {missing[0]!r} is not in the shard the index names")
    return out


def complete_config(dcfg: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """A diffusers ``config.json`` with the class's own defaults for the keys it leaves out,
    as ``from_config`` builds the model: ``defaults`` is the keyword defaults of the class's
    ``__init__`` (tables in ``latentjax/convert/diffusers_defaults.py``, checked against the
    installed diffusers by the tests). Keys the class does not take are ignored by diffusers,
    and so here."""
    return {**defaults, **{k: v for k, v in dcfg.items() if k in defaults}}


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


def autoencoder_shapes(model) -> dict:
    """Flat linen paths -> shapes of an image autoencoder's parameters, without allocating (the
    tree does not depend on the image size: attention, where there is any, has no per-position
    parameters)."""
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    size = 2 * model.downsample_factor
    x = jnp.zeros((1, size, size, model.in_channels))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, sample=False))
    return flatten(nn.meta.unbox(shapes)["params"])


def save_converted(out_dir: str | Path, description: dict, params: Mapping) -> Path:
    """Writes our converted-checkpoint format: ``latentjax_converted.json`` + ``params.npz``."""
    out_dir = as_path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    flat = {k: np.asarray(v) for k, v in flatten(params).items()}
    with (out_dir / PARAMS_FILE).open("wb") as f:
        np.savez(f, **flat)
    (out_dir / CONVERTED_FILE).write_text(json.dumps(description, indent=2))
    return out_dir


def load_converted(path: str | Path) -> tuple[dict, dict]:
    """-> (description, params) of a directory written by :func:`save_converted`."""
    path = as_path(path)
    desc_path, params_path = path / CONVERTED_FILE, path / PARAMS_FILE
    if not desc_path.is_file() or not params_path.is_file():
        raise ConvertError(f"{path} is not a converted checkpoint (needs {CONVERTED_FILE})")
    description = json.loads(desc_path.read_text())
    with params_path.open("rb") as file, np.load(file, allow_pickle=False) as f:
        params = unflatten({k: np.asarray(f[k]) for k in f.files})
    return description, params


def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ConvertError(f"{path.parent} is not a {what} directory (missing {path.name})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConvertError(f"{path} is not valid JSON ({e})") from e
