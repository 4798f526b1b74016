"""Config -> model: the one place where a config section becomes a network.

Training, conversion, the Python API, planning and the demo all build their networks here, so a
model family has one builder and its derived sizes (the downsampling factor, the latent shape)
one formula. Each builder checks the fields it reads and raises :class:`ConfigError` naming the
key, before anything is traced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from latentjax.errors import ConfigError
from latentjax.models.autoencoder import AutoencoderKL
from latentjax.models.bottleneck import BOTTLENECKS
from latentjax.models.dc_autoencoder import DCAutoencoder
from latentjax.models.discriminator import NORMS, PatchDiscriminator
from latentjax.models.dit import DiT
from latentjax.models.tiny_autoencoder import TinyAutoencoder
from latentjax.models.video_autoencoder import VideoAutoencoderKL
from latentjax.models.video_dit import ATTENTION, VideoDiT

FAMILIES = ("kl", "dc", "tiny", "video")
# Families that load converted weights as a frozen stage 1 but are not trained here.
FROZEN_ONLY = ("dc", "tiny")


def _family_levels(model: Mapping[str, Any]) -> int:
    """How many resolution levels the stage-1 network has (f = 2 ** (levels - 1))."""
    family = model["family"]
    if family in ("kl", "video"):
        return len(model["ch_mult"])
    if family == "dc":
        return len(model["dc"]["encoder_channels"])
    if family == "tiny":
        return len(model["tiny"]["encoder_channels"])
    raise ConfigError(f"model.family={family!r}; use one of {FAMILIES}")


def downsample_factor(model: Mapping[str, Any]) -> int:
    """f of an autoencoder's ``model`` section: each level after the first halves the side."""
    return 2 ** (_family_levels(model) - 1)


def latent_channels(model: Mapping[str, Any]) -> int:
    """Channels of the latent: ``embed_dim`` with SD's quant convs, else ``z_channels``."""
    if model["family"] != "kl":
        return model["z_channels"]
    return model["embed_dim"] or model["z_channels"]


def is_video(model: Mapping[str, Any]) -> bool:
    """Whether a stage-1 ``model`` section is a video autoencoder (clips [B, T, H, W, C])."""
    return model["family"] == "video"


def clip_latent_shape(ae_config, frames: int) -> tuple[int, int, int, int]:
    """(t, h, w, c) of the latents of a video stage-1 config's clips of ``frames`` frames."""
    t = build_autoencoder(ae_config.model).latent_frames(frames)
    return (t, *latent_shape(ae_config))


def stage2_latent_shape(config, ae_config) -> tuple[int, ...]:
    """The latent shape a stage-2 ``config`` generates over its stage-1 ``ae_config``: (h, w, c)
    of images, or (t, h, w, c) of clips of ``config.data.frames`` frames."""
    if not is_video(ae_config.model):
        return latent_shape(ae_config)
    if config.data.frames < 1:
        raise ConfigError(
            "data.frames is 0 but the stage-1 run is a video autoencoder: the clip length is "
            "recorded when stage 2 starts"
        )
    return clip_latent_shape(ae_config, config.data.frames)


def latent_shape(ae_config) -> tuple[int, int, int]:
    """(h, w, c) of the latents of a stage-1 config's images (of each latent frame, for a
    video autoencoder)."""
    f = downsample_factor(ae_config.model)
    size = ae_config.data.image_size
    if size % f:
        raise ConfigError(f"data.image_size={size} is not divisible by the autoencoder's f={f}")
    return size // f, size // f, latent_channels(ae_config.model)


def _positive_ints(key: str, value, allow_zero: bool = False) -> None:
    """``value`` (an int, or a tuple of them) must hold positive (or non-negative) integers."""
    values = value if isinstance(value, (tuple, list)) else (value,)
    low = 0 if allow_zero else 1
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= low for v in values):
        kind = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"{key}={value!r}: use {kind} integers")


def check_autoencoder_config(config) -> None:
    """One-line errors for a stage-1 config no network can be built from (checked before any
    tracing: a bad width otherwise fails deep inside a compile)."""
    m = config.model
    _family_levels(m)  # an unknown family is an error naming the key
    if m.family in FROZEN_ONLY:
        raise ConfigError(
            f"model.family={m.family!r} is not trained by latentjax: convert its weights "
            "(`latentjax convert ae`) and use them as a frozen stage 1"
        )
    for key in ("ch", "num_res_blocks", "z_channels", "in_channels", "num_groups"):
        _positive_ints(f"model.{key}", m[key])
    _positive_ints("model.embed_dim", m.embed_dim, allow_zero=True)
    if not m.ch_mult:
        raise ConfigError("model.ch_mult is empty: give one width multiple per level")
    _positive_ints("model.ch_mult", tuple(m.ch_mult))
    _positive_ints("model.attn_resolutions", tuple(m.attn_resolutions))
    # The video family normalises with RMS norms, which have no groups.
    widths = () if is_video(m) else sorted({m.ch * k for k in m.ch_mult})
    for width in widths:
        groups = min(m.num_groups, width)
        if width % groups:
            raise ConfigError(
                f"model.num_groups={m.num_groups} does not divide the {width} channels of a level "
                "(model.ch x model.ch_mult)"
            )
    latent_shape(config)  # the image size must be divisible by f
    build_autoencoder(m)
    build_discriminator(config.loss)
    if config.loss.disc_temporal_kernel and not is_video(m):
        raise ConfigError(
            f"loss.disc_temporal_kernel={config.loss.disc_temporal_kernel} is the 3-D PatchGAN "
            f"of clips; model.family={m.family!r} trains on images: leave it 0"
        )


def build_autoencoder(m) -> AutoencoderKL | DCAutoencoder | TinyAutoencoder | VideoAutoencoderKL:
    """The stage-1 network of a ``model`` section (``latentjax/configs/ae/base.py``), by
    ``model.family``."""
    _family_levels(m)  # an unknown family is an error naming the key
    if m.family == "dc":
        return _build_dc(m)
    if m.family == "tiny":
        return _build_tiny(m)
    if m.family == "video":
        return _build_video(m)
    if m.bottleneck not in BOTTLENECKS:
        raise ConfigError(f"model.bottleneck={m.bottleneck!r}; use one of {BOTTLENECKS}")
    channels = latent_channels(m)
    levels = tuple(m.fsq_levels)
    if m.bottleneck == "fsq" and (len(levels) != channels or min(levels, default=0) < 2):
        raise ConfigError(
            f"model.fsq_levels={levels}: FSQ needs one level count >= 2 per latent channel "
            f"({channels})"
        )
    if m.bottleneck == "vq" and (m.vq_estimator not in ("ste", "rotation") or m.codebook_size < 2):
        raise ConfigError(
            f"VQ needs model.codebook_size >= 2 (got {m.codebook_size}) and "
            f"model.vq_estimator in ('ste', 'rotation') (got {m.vq_estimator!r})"
        )
    return AutoencoderKL(
        ch=m.ch,
        ch_mult=tuple(m.ch_mult),
        num_res_blocks=m.num_res_blocks,
        z_channels=m.z_channels,
        in_channels=m.in_channels,
        attn_resolutions=tuple(m.attn_resolutions),
        num_groups=m.num_groups,
        embed_dim=m.embed_dim or None,
        bottleneck=m.bottleneck,
        codebook_size=m.codebook_size,
        vq_estimator=m.vq_estimator,
        fsq_levels=levels,
        mid_attention=m.mid_attention,
    )


def _per_level(group, prefix: str, keys: tuple[str, ...], levels: int) -> None:
    for key in keys:
        if len(group[key]) != levels:
            raise ConfigError(
                f"model.{prefix}.{key} has {len(group[key])} entries for {levels} levels"
            )


def _build_dc(m) -> DCAutoencoder:
    d = m.dc
    n = len(d.encoder_channels)
    _per_level(d, "dc", ("encoder_block_types", "encoder_layers", "encoder_qkv_multiscales"), n)
    _per_level(
        d,
        "dc",
        ("decoder_channels", "decoder_block_types", "decoder_layers", "decoder_qkv_multiscales",
         "decoder_norm_types", "decoder_acts"),
        n,
    )  # fmt: skip
    return DCAutoencoder(
        in_channels=m.in_channels,
        latent_channels=m.z_channels,
        head_dim=d.head_dim,
        encoder_block_types=tuple(d.encoder_block_types),
        decoder_block_types=tuple(d.decoder_block_types),
        encoder_channels=tuple(d.encoder_channels),
        decoder_channels=tuple(d.decoder_channels),
        encoder_layers=tuple(d.encoder_layers),
        decoder_layers=tuple(d.decoder_layers),
        encoder_qkv_multiscales=tuple(tuple(s) for s in d.encoder_qkv_multiscales),
        decoder_qkv_multiscales=tuple(tuple(s) for s in d.decoder_qkv_multiscales),
        decoder_norm_types=tuple(d.decoder_norm_types),
        decoder_acts=tuple(d.decoder_acts),
        pixel_unshuffle=d.pixel_unshuffle,
        interpolate=d.interpolate,
        encoder_out_shortcut=d.encoder_out_shortcut,
        decoder_in_shortcut=d.decoder_in_shortcut,
        decoder_conv_act=d.decoder_conv_act,
    )


def _build_video(m) -> VideoAutoencoderKL:
    """Wan 2.1's causal 3-D autoencoder (``models/video_autoencoder.py``) from the keys it reads:
    ``ch``, ``ch_mult``, ``num_res_blocks``, ``z_channels``, ``in_channels``,
    ``temporal_downsample``, ``remat`` and ``unroll_chunks``."""
    if m.bottleneck != "kl":
        raise ConfigError(
            f"model.bottleneck={m.bottleneck!r}: model.family='video' has the KL bottleneck only"
        )
    down = tuple(m.temporal_downsample)
    if len(down) != len(m.ch_mult) - 1 or not all(isinstance(t, bool) for t in down):
        raise ConfigError(
            f"model.temporal_downsample={down}: give one True/False per level but the last "
            f"({len(m.ch_mult) - 1} for model.ch_mult={tuple(m.ch_mult)}); True halves time too"
        )
    return VideoAutoencoderKL(
        base_channels=m.ch,
        channel_mult=tuple(m.ch_mult),
        num_res_blocks=m.num_res_blocks,
        latent_channels=m.z_channels,
        temporal_downsample=down,
        in_channels=m.in_channels,
        remat=bool(m.remat),
        unroll_chunks=bool(m.unroll_chunks),
    )


def _build_tiny(m) -> TinyAutoencoder:
    t = m.tiny
    _per_level(t, "tiny", ("encoder_blocks",), len(t.encoder_channels))
    _per_level(t, "tiny", ("decoder_blocks",), len(t.decoder_channels))
    if len(t.decoder_channels) != len(t.encoder_channels):
        raise ConfigError(
            "model.tiny: the decoder needs as many stages as the encoder "
            f"({len(t.decoder_channels)} vs {len(t.encoder_channels)})"
        )
    return TinyAutoencoder(
        in_channels=m.in_channels,
        latent_channels=m.z_channels,
        encoder_channels=tuple(t.encoder_channels),
        decoder_channels=tuple(t.decoder_channels),
        encoder_blocks=tuple(t.encoder_blocks),
        decoder_blocks=tuple(t.decoder_blocks),
        act=t.act,
    )


def build_discriminator(loss) -> PatchDiscriminator:
    """The PatchGAN of a stage-1 ``loss`` section."""
    if loss.disc_norm not in NORMS:
        raise ConfigError(f"loss.disc_norm={loss.disc_norm!r}; use one of {NORMS}")
    if loss.disc_layers < 1:
        raise ConfigError(f"loss.disc_layers={loss.disc_layers}; use 1 or more")
    k = loss.disc_temporal_kernel
    if k < 0 or (k and k % 2 == 0):
        raise ConfigError(f"loss.disc_temporal_kernel={k}; use 0 (per frame) or an odd number")
    return PatchDiscriminator(
        ndf=loss.disc_ndf, n_layers=loss.disc_layers, norm=loss.disc_norm, temporal_kernel=k
    )


def build_dit(m, latent: tuple[int, ...]) -> DiT | VideoDiT:
    """The stage-2 network of a ``model`` section (``latentjax/configs/dit/base.py``) for
    latents of shape ``latent``: (h, w, c) gives the image DiT, (t, h, w, c) (a video
    autoencoder's clips) the video DiT."""
    frames = latent[0] if len(latent) == 4 else None
    h, w, c = latent[-3:]
    for key in ("patch_size", "hidden_size", "depth", "num_heads"):
        _positive_ints(f"model.{key}", m[key])
    _positive_ints("model.num_classes", m.num_classes, allow_zero=True)
    if h != w and frames is None:
        raise ConfigError(f"the DiT needs square latents, got {h} x {w}")
    if h % m.patch_size or w % m.patch_size:
        raise ConfigError(f"model.patch_size={m.patch_size} does not divide the {h}x{w} latent")
    if m.hidden_size % m.num_heads:
        raise ConfigError(
            f"model.hidden_size={m.hidden_size} is not divisible by model.num_heads={m.num_heads}"
        )
    shared = {
        "input_size": h,
        "patch_size": m.patch_size,
        "in_channels": c,
        "hidden_size": m.hidden_size,
        "depth": m.depth,
        "num_heads": m.num_heads,
        "mlp_ratio": m.mlp_ratio,
        "num_classes": m.num_classes,
        "learn_sigma": m.learn_sigma,
        "null_class": m.null_class,
    }
    if frames is not None:
        return _build_video_dit(m, frames, shared)
    return DiT(**shared, timestep_freq_shift=m.timestep_freq_shift, mlp_norm_eps=m.mlp_norm_eps)


def _build_video_dit(m, frames: int, shared: dict) -> VideoDiT:
    """The video DiT over clips of ``frames`` latent frames: ``shared`` are the image DiT's
    arguments, plus the keys only clips read."""
    _positive_ints("model.temporal_patch_size", m.temporal_patch_size)
    if frames % m.temporal_patch_size:
        raise ConfigError(
            f"model.temporal_patch_size={m.temporal_patch_size} does not divide the "
            f"{frames} latent frames of a clip"
        )
    if m.attention not in ATTENTION:
        raise ConfigError(f"model.attention={m.attention!r}; use one of {', '.join(ATTENTION)}")
    if m.hidden_size % 4:
        raise ConfigError(f"model.hidden_size={m.hidden_size}: the position table needs 4 | it")
    return VideoDiT(
        **shared, frames=frames, temporal_patch_size=m.temporal_patch_size, attention=m.attention
    )
