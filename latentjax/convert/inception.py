"""The FID InceptionV3 (``latentjax.models.inception``) from pytorch-fid's weights file
(``pt_inception-2015-12-05-6726825d.pth``, torchvision's module names), read with
``torch.load(weights_only=True)``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from latentjax.convert.common import ConvertError, flatten, read_torch_state_dict
from latentjax.models.inception import InceptionV3FID
from latentjax.paths import Path


def variables_from_torch(state_dict: dict) -> dict:
    """pytorch-fid / torchvision-layout tensors -> ``{"params", "batch_stats"}``. The classifier
    (``fc``), ``AuxLogits`` and BatchNorm step counters are not part of the FID network."""
    params, stats = {}, {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0] in ("fc", "AuxLogits") or parts[-1] == "num_batches_tracked":
            continue
        *mods, leaf = parts
        if mods[-1] == "conv":
            target, name = params, "kernel"
            value = value.transpose(2, 3, 1, 0)  # [out, in, kh, kw] -> [kh, kw, in, out]
        elif leaf in ("running_mean", "running_var"):
            target, name = stats, {"running_mean": "mean", "running_var": "var"}[leaf]
        else:
            target, name = params, {"weight": "scale", "bias": "bias"}[leaf]
        node = target
        for m in mods:
            node = node.setdefault(m, {})
        node[name] = value
    return {"params": params, "batch_stats": stats}


def load_inception(weights: str | Path, resize: bool = True):
    """pytorch-fid's weights file -> a jitted ``features(images [B, H, W, 3] in [0, 1])``."""
    model = InceptionV3FID(resize=resize)
    variables = variables_from_torch(read_torch_state_dict(weights))
    size = 299 if resize else 75
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
    want, got = flatten(nn.meta.unbox(shapes)), flatten(variables)
    leaf_names = {"kernel": "weight", "scale": "weight", "mean": "running_mean"}
    for path, s in want.items():
        if path not in got:
            _, *mods, leaf = path.split("/")
            key = ".".join([*mods, leaf_names.get(leaf, {"var": "running_var"}.get(leaf, leaf))])
            raise ConvertError(f"{weights}: missing key {key!r}; not an FID Inception file?")
        if tuple(got[path].shape) != tuple(s.shape):
            raise ConvertError(f"{weights}: {path} has shape {got[path].shape}, want {s.shape}")
    extra = sorted(set(got) - set(want))
    if extra:
        raise ConvertError(f"{weights}: unexpected tensor {extra[0]}; not an FID Inception file?")
    apply = jax.jit(model.apply)
    return lambda images: apply(variables, jnp.asarray(images, jnp.float32))


def image_features(weights: str | Path):
    """The FID pool features of latentjax images: ``fn(x [B, H, W, 1 or 3] in [-1, 1]) ->
    [B, 2048]`` (grey repeated over RGB)."""
    features = load_inception(weights)

    def fn(x):
        x = np.asarray(x)
        x = np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x
        return features((x + 1.0) / 2.0)

    return fn
