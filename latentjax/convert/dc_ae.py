"""The deep compression autoencoder (DC-AE, SANA's) from a diffusers ``AutoencoderDC``
directory into latentjax's ``DCAutoencoder`` (``latentjax/models/dc_autoencoder.py``; family
"dc").

Names, diffusers -> ours (``L`` = the level's block count):

- ``encoder.down_blocks.{i}.{j}`` (j < L) -> ``encoder/down_{i}/block_{j}``;
  ``encoder.down_blocks.{i}.{L}`` -> ``encoder/down_{i}/downsample``;
- ``decoder.up_blocks.{i}.0`` -> ``decoder/up_{i}/upsample`` when level i upsamples (every level
  but the deepest, unless it has no blocks), and the blocks follow it:
  ``decoder.up_blocks.{i}.{j+1}`` -> ``decoder/up_{i}/block_{j}``;
- in an EfficientViT block ``attn.to_qkv_multiscale.{s}.proj_{in,out}`` ->
  ``attn/proj_{in,out}_{s}`` and ``conv_out`` (the gated MLP) -> ``mlp``;
- ``*.weight`` of a Linear -> ``kernel`` transposed, of a conv -> ``kernel`` [kh, kw, in/groups,
  out], of a norm -> ``scale``; BatchNorm's ``running_mean``/``running_var`` -> ``mean``/``var``
  (its ``num_batches_tracked`` counter is dropped: inference does not read it).

Per-level options given as one string in the config (``"ResBlock"``, ``"rms_norm"``, ...)
apply to every level, as in diffusers. The latent is deterministic and its normalisation is
``z * scaling_factor`` (no shift), as SANA's pipelines apply it.
"""

from __future__ import annotations

import re

import ml_collections
import numpy as np

from latentjax.config import base_config
from latentjax.convert.common import (
    ConvertError,
    autoencoder_shapes,
    complete_config,
    conv_kernel,
    fill_params,
    identity,
    linear_kernel,
)
from latentjax.convert.diffusers_defaults import DEFAULTS
from latentjax.factory import build_autoencoder
from latentjax.models.dc_autoencoder import BLOCK_TYPES, NORM_TYPES
from latentjax.models.layers import ACTIVATIONS

CLASS = "AutoencoderDC"


def _per_level(value, n: int, key: str, source: str) -> tuple:
    values = (value,) * n if isinstance(value, str) else tuple(value)
    if len(values) != n:
        raise ConvertError(f"{source}: {key} has {len(values)} entries for {n} levels")
    return values


def model_config(dcfg: dict, source: str) -> ml_collections.ConfigDict:
    """An ``AutoencoderDC`` config (missing keys: diffusers' defaults) -> a stage-1 ``model``
    section of family "dc". Layouts diffusers' own modules cannot run are refused here, naming
    the key, instead of failing inside a shape."""
    c = complete_config(dcfg, DEFAULTS[CLASS])
    enc = tuple(int(w) for w in c["encoder_block_out_channels"])
    dec = tuple(int(w) for w in c["decoder_block_out_channels"])
    n = len(enc)
    if len(dec) != n:
        raise ConvertError(f"{source}: the encoder has {n} levels, the decoder {len(dec)}")
    latent = int(c["latent_channels"])
    get = lambda key: _per_level(c[key], n, key, source)  # noqa: E731
    enc_types, dec_types = get("encoder_block_types"), get("decoder_block_types")
    norms, acts = get("decoder_norm_types"), get("decoder_act_fns")
    enc_layers, dec_layers = get("encoder_layers_per_block"), get("decoder_layers_per_block")
    enc_scales, dec_scales = get("encoder_qkv_multiscales"), get("decoder_qkv_multiscales")
    for key, values, known in (
        ("encoder_block_types", enc_types, BLOCK_TYPES),
        ("decoder_block_types", dec_types, BLOCK_TYPES),
        ("decoder_norm_types", norms, NORM_TYPES),
        ("decoder_act_fns", [a.lower() for a in acts], ACTIVATIONS),
        ("decoder_conv_act_fn", [str(c["decoder_conv_act_fn"]).lower()], ACTIVATIONS),
    ):
        bad = [v for v in values if v not in known]
        if bad:
            raise ConvertError(f"{source}: {key} {bad[0]!r} is not supported")
    for key, layers in (("encoder", enc_layers), ("decoder", dec_layers)):
        if any(n_ < 1 for n_ in layers[1:]):
            raise ConvertError(
                f"{source}: {key}_layers_per_block {list(layers)}: only level 0 may have no "
                "blocks (a level without blocks has no resampling)"
            )
    if any(k % 2 == 0 for s in (*enc_scales, *dec_scales) for k in s):
        raise ConvertError(f"{source}: even attention kernel sizes are not supported")
    for key, widths in (("encoder", enc), ("decoder", dec)):
        # A shortcut between levels turns a's 4a space-to-channel values into b channels by
        # averaging groups (down) or b's repeated channels into a (up): b must divide 4a.
        if any((4 * a) % b for a, b in zip(widths, widths[1:], strict=False)):
            raise ConvertError(
                f"{source}: {key}_block_out_channels {list(widths)}: each width must divide 4x "
                "the one before it (residual autoencoding's shortcuts)"
            )
    if c["downsample_block_type"] == "pixel_unshuffle" and any(w % 4 for w in enc[1:]):
        raise ConvertError(f"{source}: pixel_unshuffle needs widths divisible by 4, got {enc}")
    if enc[-1] % latent or dec[-1] % latent:
        raise ConvertError(
            f"{source}: the deepest widths ({enc[-1]}, {dec[-1]}) are not multiples of "
            f"latent_channels={latent}"
        )
    m = base_config("ae").model
    m.family = "dc"
    m.in_channels = int(c["in_channels"])
    m.z_channels = latent
    m.embed_dim = 0
    m.bottleneck = "ae"
    d = m.dc
    d.head_dim = int(c["attention_head_dim"])
    d.encoder_block_types, d.decoder_block_types = enc_types, dec_types
    d.encoder_channels, d.decoder_channels = enc, dec
    d.encoder_layers = tuple(int(v) for v in enc_layers)
    d.decoder_layers = tuple(int(v) for v in dec_layers)
    d.encoder_qkv_multiscales = tuple(tuple(int(k) for k in s) for s in enc_scales)
    d.decoder_qkv_multiscales = tuple(tuple(int(k) for k in s) for s in dec_scales)
    d.decoder_norm_types = norms
    d.decoder_acts = tuple(a.lower() for a in acts)
    # diffusers tests these two strings for one value and takes any other as the alternative.
    d.pixel_unshuffle = c["downsample_block_type"] == "pixel_unshuffle"
    d.interpolate = c["upsample_block_type"] == "interpolate"
    d.encoder_out_shortcut = bool(c["encoder_out_shortcut"])
    d.decoder_in_shortcut = bool(c["decoder_in_shortcut"])
    d.decoder_conv_act = str(c["decoder_conv_act_fn"]).lower()
    return m


def latent_stats(dcfg: dict) -> dict:
    c = complete_config(dcfg, DEFAULTS[CLASS])
    return {"shift": 0.0, "scale": float(c["scaling_factor"])}


_LEAVES = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
_LINEAR = {"to_q", "to_k", "to_v", "to_out"}


def _source_key(path: str, d) -> tuple[str, object]:
    """A linen path of our DCAutoencoder -> (diffusers key, transform)."""
    *mods, leaf = path.split("/")
    n = len(d.encoder_channels)
    names, level = [], 0
    for mod in mods:
        if m := re.fullmatch(r"(down|up)_(\d+)", mod):
            level = int(m[2])
            names += ["down_blocks" if m[1] == "down" else "up_blocks", m[2]]
        elif m := re.fullmatch(r"block_(\d+)", mod):
            upsamples = mods[0] == "decoder" and level < n - 1 and d.decoder_layers[level] > 0
            names.append(str(int(m[1]) + int(upsamples)))
        elif mod == "downsample":
            names.append(str(d.encoder_layers[level]))
        elif mod == "upsample":
            names.append("0")
        elif m := re.fullmatch(r"proj_(in|out)_(\d+)", mod):
            names += ["to_qkv_multiscale", m[2], f"proj_{m[1]}"]
        elif mod == "mlp":
            names.append("conv_out")
        else:
            names.append(mod)
    if leaf != "kernel":
        return ".".join([*names, _LEAVES[leaf]]), identity
    fn = linear_kernel if mods[-1] in _LINEAR else conv_kernel
    return ".".join([*names, "weight"]), fn


def convert_state_dict(
    m: ml_collections.ConfigDict, state_dict: dict[str, np.ndarray], source: str
) -> dict:
    """diffusers ``AutoencoderDC`` tensors -> ``{"params": ...}`` for the model ``m``
    describes."""
    expected = autoencoder_shapes(build_autoencoder(m))
    mapping = {p: _source_key(p, m.dc) for p in expected}
    tensors = {k: v for k, v in state_dict.items() if not k.endswith(".num_batches_tracked")}
    return {"params": fill_params(expected, tensors, mapping, source)}
