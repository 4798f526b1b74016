"""Stable Diffusion / SDXL / SD3 / Flux autoencoders from a diffusers ``AutoencoderKL`` directory
(``config.json`` + ``diffusion_pytorch_model.safetensors``) into latentjax's ``AutoencoderKL``.

diffusers renames latent-diffusion's modules (its own conversion script,
``scripts/convert_vae_pt_to_diffusers.py``, documents the correspondence); we map back:

| diffusers                                         | latentjax (linen path)            |
| ------------------------------------------------- | --------------------------------- |
| ``encoder.down_blocks.{i}.resnets.{j}``           | ``encoder/down_{i}/block_{j}``    |
| ``encoder.down_blocks.{i}.downsamplers.0.conv``   | ``encoder/down_{i}/downsample/conv`` |
| ``decoder.up_blocks.{k}.resnets.{j}``             | ``decoder/up_{n-1-k}/block_{j}`` (*) |
| ``decoder.up_blocks.{k}.upsamplers.0.conv``       | ``decoder/up_{n-1-k}/upsample/conv`` |
| ``*.mid_block.resnets.{0,1}``                     | ``*/mid/block_{1,2}``             |
| ``*.mid_block.attentions.0.{group_norm, to_q, to_k, to_v, to_out.0}`` (Linear) |
|       -> ``*/mid/attn_1/{norm, q, k, v, proj_out}`` (1x1 conv)                   |
| ``conv_shortcut`` / ``conv_norm_out``             | ``nin_shortcut`` / ``norm_out``   |

(*) diffusers counts decoder levels from the deepest one.

SD 1.x/2.x and SDXL have 4 latent channels and ``quant_conv``/``post_quant_conv``; SD3 and Flux
have 16 and neither conv (``use_quant_conv=False``), which latentjax expresses as
``embed_dim=None``. The latent normalisation ``(z - shift_factor) * scaling_factor`` (SD3/Flux;
SD has no shift) is latentjax's ``(z - shift) * scale``.
"""

from __future__ import annotations

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from latentjax.config import base_config
from latentjax.convert.common import (
    ConvertError,
    conv_kernel,
    fill_params,
    flatten,
    identity,
    linear_as_conv1x1,
    read_json,
    read_safetensors,
)
from latentjax.factory import build_autoencoder
from latentjax.models.autoencoder import AutoencoderKL

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


def is_diffusers_autoencoder(path: str | Path) -> bool:
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return read_json(cfg, "diffusers").get("_class_name") == "AutoencoderKL"
    except ConvertError:
        return False


def model_config(dcfg: dict, source: str) -> ml_collections.ConfigDict:
    """A diffusers ``AutoencoderKL`` config -> latentjax's ``model`` config section (the fields
    ``latentjax.factory.build_autoencoder`` reads). Layouts latentjax's networks cannot
    express raise :class:`ConvertError` naming the field."""
    if dcfg.get("_class_name") != "AutoencoderKL":
        raise ConvertError(
            f"{source}: _class_name is {dcfg.get('_class_name')!r}, not 'AutoencoderKL'"
        )
    blocks = list(dcfg.get("block_out_channels", (64,)))
    n = len(blocks)
    down = dcfg.get("down_block_types", ["DownEncoderBlock2D"] * n)
    up = dcfg.get("up_block_types", ["UpDecoderBlock2D"] * n)
    if set(down) != {"DownEncoderBlock2D"} or set(up) != {"UpDecoderBlock2D"} or len(down) != n:
        raise ConvertError(f"{source}: unsupported block types {down} / {up}")
    if dcfg.get("act_fn", "silu") != "silu":
        raise ConvertError(f"{source}: act_fn={dcfg['act_fn']!r}; only 'silu' is supported")
    if not dcfg.get("mid_block_add_attention", True):
        raise ConvertError(f"{source}: mid_block_add_attention=False is not supported")
    in_ch, out_ch = dcfg.get("in_channels", 3), dcfg.get("out_channels", 3)
    if in_ch != out_ch:
        raise ConvertError(f"{source}: in_channels {in_ch} != out_channels {out_ch}")
    ch = blocks[0]
    if any(b % ch for b in blocks):
        raise ConvertError(f"{source}: block_out_channels {blocks} are not multiples of {ch}")
    quant = dcfg.get("use_quant_conv", True)
    if quant != dcfg.get("use_post_quant_conv", True):
        raise ConvertError(f"{source}: use_quant_conv and use_post_quant_conv differ")
    for key in ("latents_mean", "latents_std"):
        if dcfg.get(key) is not None:
            raise ConvertError(f"{source}: per-channel {key} is not supported (scalar only)")
    latent = dcfg.get("latent_channels", 4)
    m = base_config("ae").model  # every field; those a diffusers AutoencoderKL sets follow
    m.ch = ch
    m.ch_mult = tuple(b // ch for b in blocks)
    m.num_res_blocks = dcfg.get("layers_per_block", 1)
    m.z_channels = latent
    m.in_channels = in_ch
    m.attn_resolutions = ()
    m.num_groups = dcfg.get("norm_num_groups", 32)
    m.embed_dim = latent if quant else 0  # 0: no quant convs (build_autoencoder reads `or None`)
    m.bottleneck = "kl"
    return m


def expected_shapes(model: AutoencoderKL) -> dict:
    """Flat linen paths -> shapes, without allocating (the tree does not depend on the image
    size here: these autoencoders have attention only in the middle block)."""
    size = 2 * model.downsample_factor
    x = jnp.zeros((1, size, size, model.in_channels))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, sample=False))
    return flatten(nn.meta.unbox(shapes)["params"])


def _source_key(path: str, num_levels: int) -> tuple[str, object]:
    """A linen path of our AutoencoderKL -> (diffusers key, transform)."""
    *mods, leaf = path.split("/")
    torch_leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}[leaf]
    names, fn = [], identity
    for i, mod in enumerate(mods):
        top = mods[0]
        if m := re.fullmatch(r"down_(\d+)", mod):
            names += ["down_blocks", m[1]]
        elif m := re.fullmatch(r"up_(\d+)", mod):
            names += ["up_blocks", str(num_levels - 1 - int(m[1]))]
        elif m := re.fullmatch(r"block_(\d+)", mod):
            if mods[i - 1] == "mid":
                names += ["resnets", str(int(m[1]) - 1)]
            else:
                names += ["resnets", m[1]]
        elif mod == "downsample":
            names += ["downsamplers", "0"]
        elif mod == "upsample":
            names += ["upsamplers", "0"]
        elif mod == "mid":
            names.append("mid_block")
        elif mod == "attn_1":
            names += ["attentions", "0"]
        elif mods[i - 1 : i] == ["attn_1"]:
            names += {"norm": ["group_norm"], "q": ["to_q"], "k": ["to_k"], "v": ["to_v"]}.get(
                mod, ["to_out", "0"]
            )
            if mod != "norm" and leaf == "kernel":
                fn = linear_as_conv1x1
        elif mod == "nin_shortcut":
            names.append("conv_shortcut")
        elif mod == "norm_out" and top in ("encoder", "decoder"):
            names.append("conv_norm_out")
        else:
            names.append(mod)
    if leaf == "kernel" and fn is identity:
        fn = conv_kernel
    return ".".join([*names, torch_leaf]), fn


def convert_state_dict(
    m: ml_collections.ConfigDict, state_dict: dict[str, np.ndarray], source: str
) -> dict:
    """diffusers tensors -> latentjax ``{"params": ...}`` for the model ``m`` describes."""
    model = build_autoencoder(m)
    expected = expected_shapes(model)
    mapping = {p: _source_key(p, len(m.ch_mult)) for p in expected}
    return {"params": fill_params(expected, state_dict, mapping, source)}


def load_diffusers_autoencoder(path: str | Path) -> tuple[ml_collections.ConfigDict, dict]:
    """A diffusers ``AutoencoderKL`` directory -> (config, params).

    ``config.model`` is a stage-1 ``model`` section (``latentjax.factory.build_autoencoder``);
    ``config.latent_stats`` holds the
    latent normalisation ``{"shift": shift_factor or 0, "scale": scaling_factor}`` used as
    ``(z - shift) * scale``; ``params`` is ``{"params": ...}`` for ``AutoencoderKL.apply``.
    """
    path = Path(path)
    dcfg = read_json(path / "config.json", "diffusers AutoencoderKL")
    m = model_config(dcfg, str(path))
    state_dict = read_safetensors(path / WEIGHTS_FILE)
    params = convert_state_dict(m, state_dict, str(path / WEIGHTS_FILE))
    config = ml_collections.ConfigDict()
    config.stage = "ae"
    config.source = f"diffusers:{path}"
    config.model = m
    config.latent_stats = {
        "shift": float(dcfg.get("shift_factor") or 0.0),
        "scale": float(dcfg.get("scaling_factor", 1.0)),
    }
    return config, params
