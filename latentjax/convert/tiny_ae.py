"""TAESD from a diffusers ``AutoencoderTiny`` directory into latentjax's ``TinyAutoencoder``
(``latentjax/models/tiny_autoencoder.py``; family "tiny").

Names: diffusers' ``{encoder,decoder}.layers.{k}`` (an ``nn.Sequential``) are ours
``{encoder,decoder}/layers_{k}``; inside a residual block ``conv.{0,2,4}`` and ``skip`` are
``conv_{0,2,4}`` and ``skip``. Kernels go [out, in, kh, kw] -> [kh, kw, in, out].

What is not converted: ``latent_magnitude`` / ``latent_shift`` only serve ``forward``'s uint8
round trip of the latent (TAESD's "latents as an RGBA image"), not ``encode``/``decode``, so
they are ignored; ``force_upcast`` is a dtype hint. Upsampling other than nearest x2, and unequal
widths across stages (which diffusers' ``EncoderTiny``/``DecoderTiny`` build but cannot run), are
refused. The latent normalisation is the config's ``(z - shift_factor) * scaling_factor``
(defaults 0 and 1: TAESD's latents already are Stable Diffusion's scaled ones; TAESD3/TAEF1
configs set SD3's/Flux's factors).
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
)
from latentjax.convert.diffusers_defaults import DEFAULTS
from latentjax.factory import build_autoencoder
from latentjax.models.layers import ACTIVATIONS

CLASS = "AutoencoderTiny"


def model_config(dcfg: dict, source: str) -> ml_collections.ConfigDict:
    """An ``AutoencoderTiny`` config (missing keys: diffusers' defaults) -> a stage-1 ``model``
    section of family "tiny"."""
    c = complete_config(dcfg, DEFAULTS[CLASS])
    if c["in_channels"] != c["out_channels"]:
        raise ConvertError(
            f"{source}: in_channels {c['in_channels']} != out_channels {c['out_channels']}"
        )
    if c["upsample_fn"] != "nearest" or c["upsampling_scaling_factor"] != 2:
        raise ConvertError(
            f"{source}: upsample_fn={c['upsample_fn']!r} x{c['upsampling_scaling_factor']}; "
            "latentjax converts TAESD's nearest x2"
        )
    if str(c["act_fn"]).lower() not in ACTIVATIONS:
        raise ConvertError(f"{source}: act_fn={c['act_fn']!r} is not supported")
    enc, dec = list(c["encoder_block_out_channels"]), list(c["decoder_block_out_channels"])
    for key, widths in (("encoder_block_out_channels", enc), ("decoder_block_out_channels", dec)):
        if len(set(widths)) != 1:
            raise ConvertError(
                f"{source}: {key} {widths} differ across stages, which diffusers' tiny "
                "encoder/decoder cannot run"
            )
    if len(enc) != len(dec) or len(c["num_encoder_blocks"]) != len(enc):
        raise ConvertError(f"{source}: the encoder's and decoder's stages do not match")
    if len(c["num_decoder_blocks"]) != len(dec):
        raise ConvertError(f"{source}: num_decoder_blocks needs {len(dec)} entries")
    m = base_config("ae").model
    m.family = "tiny"
    m.in_channels = int(c["in_channels"])
    m.z_channels = int(c["latent_channels"])
    m.embed_dim = 0
    m.bottleneck = "ae"
    m.tiny.encoder_channels = tuple(int(w) for w in enc)
    m.tiny.decoder_channels = tuple(int(w) for w in dec)
    m.tiny.encoder_blocks = tuple(int(n) for n in c["num_encoder_blocks"])
    m.tiny.decoder_blocks = tuple(int(n) for n in c["num_decoder_blocks"])
    m.tiny.act = str(c["act_fn"]).lower()
    return m


def latent_stats(dcfg: dict) -> dict:
    c = complete_config(dcfg, DEFAULTS[CLASS])
    return {"shift": float(c["shift_factor"] or 0.0), "scale": float(c["scaling_factor"])}


def _source_key(path: str) -> tuple[str, object]:
    *mods, leaf = path.split("/")
    names = [re.sub(r"^(layers|conv)_(\d+)$", r"\1.\2", mod) for mod in mods]
    if leaf == "bias":
        return ".".join([*names, "bias"]), identity
    return ".".join([*names, "weight"]), conv_kernel


def convert_state_dict(
    m: ml_collections.ConfigDict, state_dict: dict[str, np.ndarray], source: str
) -> dict:
    """diffusers ``AutoencoderTiny`` tensors -> ``{"params": ...}`` for the model ``m``
    describes."""
    expected = autoencoder_shapes(build_autoencoder(m))
    mapping = {p: _source_key(p) for p in expected}
    return {"params": fill_params(expected, state_dict, mapping, source)}
