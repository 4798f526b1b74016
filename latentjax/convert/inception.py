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

# sFID (Nash et al. 2021, "Generating Images with Sparse Representations"; the spatial FID of
# ADM's evaluation suite, Dhariwal & Nichol 2021): the Fréchet distance on the first 7 channels
# of the TensorFlow graph's ``mixed_6/conv`` tensor, flattened (17 x 17 x 7 = 2023 at 299 px).
# That tensor is the ReLU output of the 1x1 branch of the fourth 17x17 block: ``mixed_3`` is
# torchvision's ``Mixed_6a``, so ``mixed_6`` is ``Mixed_6d`` and its ``conv`` is ``branch1x1``.
# The order of the flattened features does not matter: a Fréchet distance is unchanged when the
# same permutation is applied to both sets' coordinates.
SPATIAL_BLOCK, SPATIAL_CONV, SPATIAL_CHANNELS = "Mixed_6d", "branch1x1", 7


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


def load_inception(weights: str | Path, resize: bool = True, spatial: bool = False):
    """pytorch-fid's weights file -> a jitted ``features(images [B, H, W, 3] in [0, 1])``:
    the pool features [B, 2048], or with ``spatial`` a dict of those (``pool``) and the sFID
    features (``spatial``, [B, 2023] at 299 px: see ``SPATIAL_BLOCK``), from one pass."""
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
    if not spatial:
        apply = jax.jit(model.apply)
        return lambda images: apply(variables, jnp.asarray(images, jnp.float32))

    @jax.jit
    def both(images):
        pool, state = model.apply(
            variables, images, capture_intermediates=_is_spatial, mutable=["intermediates"]
        )
        (x,) = state["intermediates"][SPATIAL_BLOCK][SPATIAL_CONV]["__call__"]
        x = x[..., :SPATIAL_CHANNELS]  # [B, 17, 17, 7] at 299 px
        return {"pool": pool, "spatial": x.reshape(x.shape[0], -1)}

    return lambda images: both(jnp.asarray(images, jnp.float32))


def _is_spatial(module: nn.Module, method_name: str) -> bool:
    """Flax's ``capture_intermediates`` filter: the output of ``Mixed_6d.branch1x1`` only."""
    return (
        method_name == "__call__"
        and module.name == SPATIAL_CONV
        and module.parent is not None
        and module.parent.name == SPATIAL_BLOCK
    )


def image_features(weights: str | Path):
    """The FID pool features of latentjax images: ``fn(x [B, H, W, 1 or 3] in [-1, 1]) ->
    [B, 2048]`` (grey repeated over RGB)."""
    features = load_inception(weights)

    def fn(x):
        x = np.asarray(x)
        x = np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x
        return features((x + 1.0) / 2.0)

    return fn


def uint8_features(net, batch: int = 64):
    """The report card's Inception features of uint8 images: ``net`` from
    ``load_inception(..., spatial=True)`` -> ``fn(images [N, H, W, 1 or 3]) -> {"pool": [N, 2048],
    "spatial": [N, 2023]}`` (float64), ``batch`` images a pass."""
    from latentjax.eval.fid import to_unit_rgb

    def fn(images):
        parts = [net(to_unit_rgb(images[i : i + batch])) for i in range(0, len(images), batch)]
        return {k: np.concatenate([np.asarray(p[k], np.float64) for p in parts]) for k in parts[0]}

    return fn
