"""Image autoencoders from diffusers model directories: Stable Diffusion / SDXL / SD3 / Flux
``AutoencoderKL`` and taming's ``VQModel`` into latentjax's ``AutoencoderKL``; the dispatch to
the TAESD and DC-AE converters. A directory holds ``config.json`` and the weights in any layout
``save_pretrained`` writes (``common.read_pretrained_weights``: safetensors, sharded, ``.bin``,
``.fp16`` variants); a pipeline directory is followed into its ``vae/``.

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
``embed_dim=0``; ``mid_block_add_attention=False`` drops the middle blocks' attention.

**Latent normalisation** (``latent_stats``, latentjax's ``(z - shift) * scale``): diffusers'
``(z - shift_factor) * scaling_factor`` (SD3/Flux; SD has no shift), or, when the config holds
per-channel ``latents_mean``/``latents_std`` (SDXL-pipeline style, e.g. Playground v2.5),
``(z - mean) * scaling_factor / std`` channel by channel, as diffusers' SDXL pipelines apply it:
``shift`` and ``scale`` are then lists, one entry per latent channel.

**VQModel** (taming / latent-diffusion VQ-f4, VQ-f8) is the same encoder/decoder (no
``double_z``) with ``quant_conv`` to the codebook's width, a nearest-code quantiser whose
codebook ``quantize.embedding`` is latentjax's ``quantize/embedding``, and ``post_quant_conv``:
latentjax's ``AutoencoderKL`` with ``bottleneck="vq"``. What differs: diffusers' ``encode``
returns the latent *before* quantisation and its ``decode`` quantises; latentjax's ``encode``
quantises (its posterior's ``pre_quant`` is diffusers' latent) and ``decode`` snaps to the
codebook again, so decode(encode(x)) is the same. MoVQ's spatially normalised decoder
(``norm_type="spatial"``, Kandinsky) is not supported.

Other families: ``AutoencoderTiny`` (TAESD, ``convert/tiny_ae.py``) and ``AutoencoderDC``
(``convert/dc_ae.py``); :func:`load_diffusers_autoencoder` picks the converter by the config's
``_class_name`` and names any other class in a one-line error. Keys a config leaves out take
the class's diffusers defaults (``convert/diffusers_defaults.py``), as ``from_config`` does.
"""

from __future__ import annotations

import re

import ml_collections
import numpy as np

from latentjax.config import base_config
from latentjax.convert import dc_ae, tiny_ae
from latentjax.convert.common import (
    ConvertError,
    autoencoder_shapes,
    complete_config,
    conv_kernel,
    fill_params,
    identity,
    linear_as_conv1x1,
    model_dir,
    read_json,
    read_pretrained_weights,
)
from latentjax.convert.diffusers_defaults import DEFAULTS
from latentjax.factory import build_autoencoder
from latentjax.paths import Path

# The diffusers image autoencoder classes latentjax converts (see the module docstring).
IMAGE_CLASSES = ("AutoencoderKL", "VQModel", "AutoencoderTiny", "AutoencoderDC")


def diffusers_class(path: str | Path) -> str | None:
    """The ``_class_name`` of a diffusers model directory (or of a pipeline's ``vae/``), None
    for anything else."""
    cfg = model_dir(path, "vae") / "config.json"
    if not cfg.is_file():
        return None
    try:
        name = read_json(cfg, "diffusers").get("_class_name")
    except (ConvertError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def unsupported_class(cls: str | None, source: str) -> ConvertError:
    """The one-line error for a diffusers class latentjax does not convert as an autoencoder."""
    if cls == "AutoencoderKLWan":
        hint = (
            "a video autoencoder: read it with latentjax.convert.load_wan_autoencoder (it is "
            "not an image stage 1)"
        )
    else:
        hint = f"latentjax converts {', '.join(IMAGE_CLASSES)}"
    return ConvertError(f"{source}: diffusers class {cls!r} is not supported ({hint})")


def model_config(dcfg: dict, source: str) -> ml_collections.ConfigDict:
    """A diffusers ``AutoencoderKL`` or ``VQModel`` config -> latentjax's ``model`` config
    section (the fields ``latentjax.factory.build_autoencoder`` reads). Keys the config leaves
    out take diffusers' defaults; layouts latentjax's networks cannot express raise
    :class:`ConvertError` naming the field."""
    cls = dcfg.get("_class_name")
    if cls not in ("AutoencoderKL", "VQModel"):
        raise ConvertError(f"{source}: _class_name is {cls!r}, not 'AutoencoderKL' or 'VQModel'")
    c = complete_config(dcfg, DEFAULTS[cls])
    blocks = list(c["block_out_channels"])
    n = len(blocks)
    down, up = list(c["down_block_types"]), list(c["up_block_types"])
    if set(down) != {"DownEncoderBlock2D"} or set(up) != {"UpDecoderBlock2D"} or len(down) != n:
        raise ConvertError(f"{source}: unsupported block types {down} / {up}")
    if c["act_fn"] != "silu":
        raise ConvertError(f"{source}: act_fn={c['act_fn']!r}; only 'silu' is supported")
    if c["in_channels"] != c["out_channels"]:
        raise ConvertError(
            f"{source}: in_channels {c['in_channels']} != out_channels {c['out_channels']}"
        )
    ch = blocks[0]
    if any(b % ch for b in blocks):
        raise ConvertError(f"{source}: block_out_channels {blocks} are not multiples of {ch}")
    latent = int(c["latent_channels"])
    m = base_config("ae").model  # every field; those a diffusers autoencoder sets follow
    m.family = "kl"
    m.ch = ch
    m.ch_mult = tuple(b // ch for b in blocks)
    m.num_res_blocks = int(c["layers_per_block"])
    m.z_channels = latent
    m.in_channels = int(c["in_channels"])
    m.attn_resolutions = ()
    m.num_groups = int(c["norm_num_groups"])
    m.mid_attention = bool(c["mid_block_add_attention"])
    if cls == "VQModel":
        if c["norm_type"] != "group":
            raise ConvertError(
                f"{source}: norm_type={c['norm_type']!r} (MoVQ's spatially normalised "
                "decoder) is not supported; latentjax converts norm_type='group'"
            )
        m.bottleneck = "vq"
        m.embed_dim = int(c["vq_embed_dim"] or latent)  # VQModel always has its quant convs
        m.codebook_size = int(c["num_vq_embeddings"])
        return m
    if c["use_quant_conv"] != c["use_post_quant_conv"]:
        raise ConvertError(f"{source}: use_quant_conv and use_post_quant_conv differ")
    m.bottleneck = "kl"
    m.embed_dim = latent if c["use_quant_conv"] else 0  # 0: no quant convs
    return m


def latent_stats(dcfg: dict, source: str) -> dict:
    """The latent normalisation ``{"shift", "scale"}`` diffusers' pipelines apply to this
    autoencoder's latents (module docstring): floats, or lists of one value per channel."""
    cls = dcfg.get("_class_name")
    c = complete_config(dcfg, DEFAULTS[cls])
    scaling = float(c["scaling_factor"])
    if cls != "AutoencoderKL":
        return {"shift": 0.0, "scale": scaling}
    mean, std = c["latents_mean"], c["latents_std"]
    if mean is None and std is None:
        return {"shift": float(c["shift_factor"] or 0.0), "scale": scaling}
    latent = int(c["latent_channels"])
    if mean is None or std is None or len(mean) != latent or len(std) != latent:
        raise ConvertError(
            f"{source}: latents_mean and latents_std need {latent} entries each (one per latent "
            "channel)"
        )
    if c["shift_factor"]:
        raise ConvertError(
            f"{source}: both shift_factor and latents_mean are set; diffusers' pipelines use one "
            "or the other, so the normalisation is ambiguous"
        )
    if min(float(s) for s in std) <= 0:
        raise ConvertError(f"{source}: latents_std has a value <= 0")
    return {"shift": [float(v) for v in mean], "scale": [scaling / float(s) for s in std]}


def _source_key(path: str, num_levels: int) -> tuple[str, object]:
    """A linen path of our AutoencoderKL -> (diffusers key, transform)."""
    if path == "quantize/embedding":  # VQModel's codebook
        return "quantize.embedding.weight", identity
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
    expected = autoencoder_shapes(model)
    mapping = {p: _source_key(p, len(m.ch_mult)) for p in expected}
    return {"params": fill_params(expected, state_dict, mapping, source)}


def load_diffusers_autoencoder(path: str | Path) -> tuple[ml_collections.ConfigDict, dict]:
    """A diffusers autoencoder directory (or a pipeline directory, whose ``vae/`` is read) ->
    (config, params), for every class in :data:`IMAGE_CLASSES`; any other class is a one-line
    :class:`ConvertError` naming it.

    ``config.model`` is a stage-1 ``model`` section (``latentjax.factory.build_autoencoder``);
    ``config.latent_stats`` holds the latent normalisation ``{"shift", "scale"}`` used as
    ``(z - shift) * scale`` (floats, or per-channel lists); ``params`` is ``{"params": ...}``.
    """
    path = model_dir(path, "vae")
    dcfg = read_json(path / "config.json", "diffusers autoencoder")
    cls = dcfg.get("_class_name")
    source = str(path)
    if cls in ("AutoencoderKL", "VQModel"):
        m = model_config(dcfg, source)
        stats = latent_stats(dcfg, source)
    elif cls == "AutoencoderTiny":
        m, stats = tiny_ae.model_config(dcfg, source), tiny_ae.latent_stats(dcfg)
    elif cls == "AutoencoderDC":
        m, stats = dc_ae.model_config(dcfg, source), dc_ae.latent_stats(dcfg)
    else:
        raise unsupported_class(cls, source)
    state_dict, weights = read_pretrained_weights(path)
    if m.family == "kl":
        params = convert_state_dict(m, state_dict, weights)
    elif m.family == "tiny":
        params = tiny_ae.convert_state_dict(m, state_dict, weights)
    else:
        params = dc_ae.convert_state_dict(m, state_dict, weights)
    config = ml_collections.ConfigDict()
    config.stage = "ae"
    config.source = f"diffusers:{path}"
    config.diffusers_class = cls
    config.model = m
    config.latent_stats = stats
    return config, params
