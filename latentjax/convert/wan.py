"""Wan 2.1 video VAE weights into latentjax's ``VideoAutoencoderKL``, from two layouts:

- a diffusers ``AutoencoderKLWan`` directory (``config.json`` and the weights in any layout
  ``save_pretrained`` writes; a pipeline directory is read through its ``vae/``); the
  architecture comes from ``config.json``, with diffusers' own defaults for
  keys it leaves out (``DIFFUSERS_DEFAULTS``, the signature of ``AutoencoderKLWan.__init__`` in
  diffusers 0.42.1; the tests compare the two);
- the original release, ``Wan2.1_VAE.pth`` (names of ``WanVAE_`` in Wan-Video/Wan2.1's
  ``wan/modules/vae.py``), read with ``torch.load(weights_only=True)``, or a ``.safetensors``
  file with the same names. Its architecture is not stored in the file: it is Wan's
  ``_video_vae`` configuration, which diffusers' defaults copy; ``config`` (diffusers' key names)
  overrides it.

Names: ours / diffusers / Wan 2.1, with ``{i}`` a flat index into Wan's ``nn.Sequential`` of
blocks and ``n`` the number of levels (the correspondence of the two PyTorch layouts is the one
diffusers' ``scripts/convert_wan_to_diffusers.py`` and ``loaders/single_file_utils.py:
convert_wan_vae_to_diffusers`` apply):

- ``encoder/conv_in`` / ``encoder.conv_in`` / ``encoder.conv1``;
- ``encoder/down_{l}/{block_j, downsample}`` / ``encoder.down_blocks.{i}`` /
  ``encoder.downsamples.{i}``;
- ``*/mid/{block_1, attn_1, block_2}`` / ``*.mid_block.{resnets.0, attentions.0, resnets.1}`` /
  ``*.middle.{0, 1, 2}``;
- ``*/norm_out``, ``*/conv_out`` / the same / ``*.head.0``, ``*.head.2``;
- ``quant_conv``, ``post_quant_conv`` / the same / ``conv1``, ``conv2``;
- ``decoder/up_{l}/block_{j}`` / ``decoder.up_blocks.{n-1-l}.resnets.{j}`` /
  ``decoder.upsamples.{i}``;
- ``decoder/up_{l}/upsample`` / ``decoder.up_blocks.{n-1-l}.upsamplers.0`` /
  ``decoder.upsamples.{i}``.

Inside a residual block ``norm1, conv1, norm2, conv2, shortcut`` are diffusers' ``norm1.gamma,
conv1, norm2.gamma, conv2, conv_shortcut`` and Wan's ``residual.{0,2,3,6}``, ``shortcut``;
attention ``norm, qkv, proj`` are ``norm.gamma, to_qkv, proj``; resampling ``conv, time_conv``
are ``resample.1, time_conv``. Kernels go [out, in, (kt,) kh, kw] -> [(kt,) kh, kw, in, out];
a norm's ``gamma`` [C, 1, 1(, 1)] -> ``scale`` [C].

**Latent normalisation.** Wan's pipelines feed the diffusion model ``(z - latents_mean) /
latents_std`` per channel and invert it before decoding (diffusers ``pipelines/wan/
pipeline_wan.py``: ``latents / (1 / std) + mean`` before ``vae.decode``; ``pipeline_wan_i2v.py``:
``(z - mean) * (1 / std)`` after ``vae.encode``; Wan's ``WanVAE.encode/decode`` with ``scale =
[mean, 1 / std]``). ``latent_stats`` returns those two lists: latentjax's ``(z - shift) * scale``
with ``shift = mean``, ``scale = 1 / std``, per channel.

Not converted: Wan 2.2's VAE (``is_residual=True``, ``patch_size``), and the other video
autoencoders diffusers ships (CogVideoX, LTX, HunyuanVideo, Mochi, ...): each is a one-line
:class:`ConvertError`. ``dropout`` in a config is accepted and ignored (it changes no weight and
no inference result; Wan ships 0).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from latentjax.convert.common import (
    ConvertError,
    Transform,
    fill_params,
    flatten,
    identity,
    model_dir,
    read_json,
    read_pretrained_weights,
    read_safetensors,
    read_torch_state_dict,
)
from latentjax.models.video_autoencoder import VideoAutoencoderKL
from latentjax.paths import Path

WAN_CLASS = "AutoencoderKLWan"
LAYOUTS = ("diffusers", "wan")

# The keyword defaults of diffusers 0.42.1's ``AutoencoderKLWan.__init__``
# (models/autoencoders/autoencoder_kl_wan.py); the Wan 2.1 release's architecture and latent
# statistics. tests/test_video_autoencoder.py checks this table against the installed class.
# fmt: off
DIFFUSERS_DEFAULTS = {
    "base_dim": 96,
    "decoder_base_dim": None,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "dropout": 0.0,
    "latents_mean": [
        -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
        0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
    ],
    "latents_std": [
        2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
        3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
    ],
    "is_residual": False,
    "in_channels": 3,
    "out_channels": 3,
    "patch_size": None,
    "scale_factor_temporal": 4,
    "scale_factor_spatial": 8,
}
# fmt: on


def _complete(dcfg: Mapping, source: str) -> dict:
    """diffusers' config with its defaults filled in; rejects keys AutoencoderKLWan has not."""
    unknown = sorted(k for k in dcfg if not k.startswith("_") and k not in DIFFUSERS_DEFAULTS)
    if unknown:
        raise ConvertError(f"{source}: unknown AutoencoderKLWan config key {unknown[0]!r}")
    return {**DIFFUSERS_DEFAULTS, **{k: v for k, v in dcfg.items() if not k.startswith("_")}}


def model_config(dcfg: Mapping, source: str) -> ml_collections.ConfigDict:
    """An ``AutoencoderKLWan`` config (diffusers' keys; missing ones take diffusers' defaults)
    -> ``VideoAutoencoderKL``'s arguments. Layouts the model cannot express raise, naming the
    field."""
    c = _complete(dcfg, source)
    if c["is_residual"] or c["patch_size"] is not None:
        raise ConvertError(
            f"{source}: the Wan 2.2 VAE layout (is_residual={c['is_residual']}, patch_size="
            f"{c['patch_size']}) is not supported yet; latentjax converts Wan 2.1's"
        )
    if c["in_channels"] != c["out_channels"]:
        raise ConvertError(
            f"{source}: in_channels {c['in_channels']} != out_channels {c['out_channels']}"
        )
    if c["attn_scales"]:
        # Attention inside the levels: both reference implementations fail on it (diffusers
        # 0.42.1 and Wan's vae.py pass the chunk cache to an attention block that takes none),
        # and no released Wan VAE uses it.
        raise ConvertError(f"{source}: attn_scales {c['attn_scales']} is not supported")
    levels = len(c["dim_mult"])
    if len(c["temperal_downsample"]) != levels - 1:
        raise ConvertError(
            f"{source}: temperal_downsample {c['temperal_downsample']} needs {levels - 1} "
            f"entries for dim_mult {c['dim_mult']}"
        )
    for key in ("latents_mean", "latents_std"):
        if len(c[key]) != c["z_dim"]:
            raise ConvertError(f"{source}: {key} has {len(c[key])} entries for z_dim={c['z_dim']}")
    m = ml_collections.ConfigDict()
    m.base_channels = int(c["base_dim"])
    m.channel_mult = tuple(int(u) for u in c["dim_mult"])
    m.num_res_blocks = int(c["num_res_blocks"])
    m.latent_channels = int(c["z_dim"])
    m.temporal_downsample = tuple(bool(t) for t in c["temperal_downsample"])
    m.in_channels = int(c["in_channels"])
    m.decoder_base_channels = int(c["decoder_base_dim"] or c["base_dim"])
    return m


def latent_stats(dcfg: Mapping, source: str) -> dict:
    """``{"mean": [z], "std": [z]}``: Wan's per-channel latent normalisation (z - mean) / std."""
    c = _complete(dcfg, source)
    return {
        "mean": [float(v) for v in c["latents_mean"]],
        "std": [float(v) for v in c["latents_std"]],
    }


def build(m: ml_collections.ConfigDict) -> VideoAutoencoderKL:
    return VideoAutoencoderKL(
        base_channels=m.base_channels,
        channel_mult=tuple(m.channel_mult),
        num_res_blocks=m.num_res_blocks,
        latent_channels=m.latent_channels,
        temporal_downsample=tuple(m.temporal_downsample),
        in_channels=m.in_channels,
        decoder_base_channels=m.decoder_base_channels,
    )


def expected_shapes(model: VideoAutoencoderKL) -> dict:
    """Flat linen paths -> shapes, without allocating (the tree does not depend on the clip)."""
    s = model.space_factor
    x = jnp.zeros((1, 1, s, s, model.in_channels))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, sample=False))
    return flatten(nn.meta.unbox(shapes)["params"])


def _conv3d(w: np.ndarray) -> np.ndarray:
    # [out, in, kt, kh, kw] -> [kt, kh, kw, in, out]; another rank is left for fill_params to
    # report as a shape mismatch naming the key.
    return np.transpose(w, (2, 3, 4, 1, 0)) if w.ndim == 5 else w


def _conv2d(w: np.ndarray) -> np.ndarray:
    # [out, in, kh, kw] -> [kh, kw, in, out]
    return np.transpose(w, (2, 3, 1, 0)) if w.ndim == 4 else w


def _gamma(w: np.ndarray) -> np.ndarray:
    return w.reshape(-1) if w.ndim > 1 and all(d == 1 for d in w.shape[1:]) else w  # [C,1,1(,1)]


# Residual-block submodules: ours -> (diffusers name, Wan name).
_RESIDUAL = {
    "norm1": ("norm1", "residual.0"),
    "conv1": ("conv1", "residual.2"),
    "norm2": ("norm2", "residual.3"),
    "conv2": ("conv2", "residual.6"),
    "shortcut": ("conv_shortcut", "shortcut"),
}


class _Sources:
    """Collects linen leaf path -> (PyTorch key, transform) for every parameter the architecture
    can have (shortcuts and time convs included); the caller keeps those the model has."""

    def __init__(self, layout: str):
        self.wan = layout == "wan"
        self.table: dict[str, tuple[str, Transform]] = {}

    def conv(self, ours: str, theirs: str, fn: Transform = _conv3d) -> None:
        self.table[f"{ours}/kernel"] = (f"{theirs}.weight", fn)
        self.table[f"{ours}/bias"] = (f"{theirs}.bias", identity)

    def norm(self, ours: str, theirs: str) -> None:
        self.table[f"{ours}/scale"] = (f"{theirs}.gamma", _gamma)

    def residual(self, ours: str, theirs: str) -> None:
        for name, (diffusers, wan) in _RESIDUAL.items():
            add = self.norm if name.startswith("norm") else self.conv
            add(f"{ours}/{name}", f"{theirs}.{wan if self.wan else diffusers}")

    def attention(self, ours: str, theirs: str) -> None:
        self.norm(f"{ours}/norm", f"{theirs}.norm")
        self.conv(f"{ours}/qkv", f"{theirs}.to_qkv", _conv2d)
        self.conv(f"{ours}/proj", f"{theirs}.proj", _conv2d)

    def resample(self, ours: str, theirs: str) -> None:
        self.conv(f"{ours}/conv", f"{theirs}.resample.1", _conv2d)
        self.conv(f"{ours}/time_conv", f"{theirs}.time_conv")

    def mid(self, ours: str, theirs: str) -> None:
        if self.wan:
            blocks, attn = (f"{theirs}.middle.0", f"{theirs}.middle.2"), f"{theirs}.middle.1"
        else:
            mid = f"{theirs}.mid_block"
            blocks, attn = (f"{mid}.resnets.0", f"{mid}.resnets.1"), f"{mid}.attentions.0"
        self.residual(f"{ours}/mid/block_1", blocks[0])
        self.attention(f"{ours}/mid/attn_1", attn)
        self.residual(f"{ours}/mid/block_2", blocks[1])

    def head(self, ours: str) -> None:
        norm, conv = ("head.0", "head.2") if self.wan else ("norm_out", "conv_out")
        self.norm(f"{ours}/norm_out", f"{ours}.{norm}")
        self.conv(f"{ours}/conv_out", f"{ours}.{conv}")


def param_sources(m: ml_collections.ConfigDict, layout: str) -> dict[str, tuple[str, Transform]]:
    """Every linen parameter path the architecture ``m`` can have -> (its key in ``layout``
    ("diffusers" or "wan"), transform to our layout)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; use one of {LAYOUTS}")
    src = _Sources(layout)
    wan = layout == "wan"
    n = len(m.channel_mult)

    src.conv("encoder/conv_in", "encoder.conv1" if wan else "encoder.conv_in")
    down = "encoder.downsamples" if wan else "encoder.down_blocks"
    i = 0  # flat index into the encoder's sequence of blocks
    for level in range(n):
        for j in range(m.num_res_blocks):
            src.residual(f"encoder/down_{level}/block_{j}", f"{down}.{i}")
            i += 1
        if level != n - 1:
            src.resample(f"encoder/down_{level}/downsample", f"{down}.{i}")
            i += 1
    src.mid("encoder", "encoder")
    src.head("encoder")
    src.conv("quant_conv", "conv1" if wan else "quant_conv")
    src.conv("post_quant_conv", "conv2" if wan else "post_quant_conv")

    src.conv("decoder/conv_in", "decoder.conv1" if wan else "decoder.conv_in")
    src.mid("decoder", "decoder")
    per_level = m.num_res_blocks + 2  # Wan's decoder: num_res_blocks + 1 blocks, a resample
    for level in range(n):
        k = n - 1 - level  # both PyTorch layouts count decoder levels from the deepest
        for j in range(m.num_res_blocks + 1):
            theirs = (
                f"decoder.upsamples.{k * per_level + j}"
                if wan
                else f"decoder.up_blocks.{k}.resnets.{j}"
            )
            src.residual(f"decoder/up_{level}/block_{j}", theirs)
        if level:
            theirs = (
                f"decoder.upsamples.{(k + 1) * per_level - 1}"
                if wan
                else f"decoder.up_blocks.{k}.upsamplers.0"
            )
            src.resample(f"decoder/up_{level}/upsample", theirs)
    src.head("decoder")
    return src.table


def convert_state_dict(
    m: ml_collections.ConfigDict, state_dict: Mapping[str, np.ndarray], source: str, layout: str
) -> dict:
    """PyTorch tensors in ``layout`` -> ``{"params": ...}`` for the model ``m`` describes."""
    expected = expected_shapes(build(m))
    sources = param_sources(m, layout)
    mapping = {path: sources[path] for path in expected if path in sources}
    return {"params": fill_params(expected, state_dict, mapping, source)}


def _config(m: ml_collections.ConfigDict, stats: dict, source: str) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.source = source
    config.model = m
    config.latent_stats = stats
    return config


def load_wan_autoencoder(
    path: str | Path, config: Mapping | None = None
) -> tuple[ml_collections.ConfigDict, dict]:
    """A Wan 2.1 VAE -> (config, params) for ``VideoAutoencoderKL``.

    ``path`` is a diffusers ``AutoencoderKLWan`` directory, or a file in Wan's original layout
    (``Wan2.1_VAE.pth``, or ``.safetensors`` with the same names) whose architecture is Wan 2.1's
    unless ``config`` (diffusers' keys, e.g. ``{"z_dim": 16}``) says otherwise.
    ``config.model`` holds the model's arguments (``build(config.model)`` makes it);
    ``config.latent_stats`` is ``{"mean": [z], "std": [z]}`` (see the module docstring);
    ``params`` is ``{"params": ...}`` for ``VideoAutoencoderKL.apply``.
    """
    path = model_dir(path, "vae")
    if path.is_dir():
        if config is not None:
            raise ConvertError(f"{path}: a diffusers directory brings its own config.json")
        dcfg = read_json(path / "config.json", "diffusers AutoencoderKLWan")
        cls = dcfg.get("_class_name")
        if cls != WAN_CLASS:
            hint = "; use load_diffusers_autoencoder" if cls == "AutoencoderKL" else ""
            raise ConvertError(
                f"{path}: diffusers class {cls} is not supported yet (latentjax.convert.wan "
                f"converts {WAN_CLASS}{hint})"
            )
        m = model_config(dcfg, str(path))
        state_dict, weights = read_pretrained_weights(path)
        params = convert_state_dict(m, state_dict, weights, "diffusers")
        return _config(m, latent_stats(dcfg, str(path)), f"diffusers:{path}"), params

    dcfg = dict(config or {})
    m = model_config(dcfg, str(path))
    if path.suffix == ".safetensors":
        state_dict = read_safetensors(path)
    elif path.suffix in (".pth", ".pt"):
        state_dict = read_torch_state_dict(path)
    elif not path.exists():
        raise ConvertError(f"no Wan VAE at {path}")
    else:
        raise ConvertError(f"{path}: expected a diffusers directory, a .pth or a .safetensors file")
    params = convert_state_dict(m, state_dict, str(path), "wan")
    return _config(m, latent_stats(dcfg, str(path)), f"wan:{path}"), params
