"""A causal video autoencoder with a KL bottleneck: the Wan 2.1 VAE architecture (Wan team 2025,
arXiv:2503.20314; the architecture diffusers' ``AutoencoderKLWan`` implements), NTHWC.

``T = 1 + r_t * k`` frames of ``H x W`` become ``1 + k`` latent frames of ``H/r_s x W/r_s``:
``r_t = 2 ** sum(temporal_downsample)`` (x4 for Wan's ``(False, True, True)``; x1 without
temporal downsampling: one latent frame per frame, an image autoencoder on one-frame clips) and
``r_s = 2 ** (len(channel_mult) - 1)`` (x8). Latent frame 0 encodes frame 0 alone, so an image
is a one-frame video.

**Chunked, causal, one program.** As Wan, the encoder sees frame 0 alone, then chunks of
``r_t * n`` frames (Wan: 4), each giving ``n`` latent frames; the decoder sees latent frame 0
alone, then chunks of ``n`` latent frames (Wan: one), each giving ``r_t * n`` frames. Between
chunks only the fixed-shape caches of the causal convolutions travel (``causal3d.py``), so
``encode``/``decode`` are a first step plus one ``lax.scan`` (``nn.scan``) over the remaining
chunks, carrying the caches: a clip of any length needs activation memory set by the chunk (only
its input and output grow with it), compiles to one program per clip shape, and gives the same
result for every ``chunk_latent_frames`` (all the chunks in one scan step is "the whole
video"). The same step is public as ``encode_chunk`` / ``decode_chunk`` for streaming a video
that does not fit in memory. ``unroll_chunks`` writes the chunks out as one call of the step
each instead (the same numbers, a program that grows with the clip): XLA's CPU backend runs the
gradient of a loop body's convolutions many times slower (``benchmarks/video_scan.py``).

Parameter tree (linen paths; ``latentjax/convert/wan.py`` maps Wan's and diffusers' names):

- ``encoder/conv_in``: causal 3x3x3 conv to ``base_channels``;
- ``encoder/down_{i}/block_{j}``: residual blocks (``norm1, conv1, norm2, conv2, shortcut``);
- ``encoder/down_{i}/downsample``: ``conv`` (space) and, when temporal, ``time_conv``;
- ``{en,de}coder/mid/{block_1, attn_1, block_2}``: the middle block;
- ``{en,de}coder/{norm_out, conv_out}``: the head; ``quant_conv``, ``post_quant_conv``: 1x1x1
  convs around the bottleneck;
- ``decoder/up_{i}/block_{j}``: ``num_res_blocks + 1`` residual blocks per level;
- ``decoder/up_{i}/upsample``: ``time_conv`` (when temporal) and ``conv`` (space, to half the
  width).

Levels are numbered by resolution as in ``autoencoder.py``: ``down_0`` / ``up_0`` are the full
resolution, and the decoder runs from ``up_{n-1}`` to ``up_0``; ``up_i`` (i >= 1) undoes
``down_{i-1}``'s resampling.

``decode`` returns the decoder's output unclipped (a reconstruction loss wants its gradient);
Wan and diffusers clamp it to [-1, 1] when producing a video.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from latentjax.models.bottleneck import DiagonalGaussian
from latentjax.models.causal3d import (
    Cache,
    CausalConv3d,
    ChannelRMSNorm,
    Downsample3d,
    FrameAttention,
    ResidualBlock3d,
    Upsample3d,
    sub_cache,
)
from latentjax.parallel.axes import BATCH, HEIGHT


def _block(remat: bool):
    """The residual block, recomputed in the backward pass (``jax.checkpoint``) when ``remat``:
    only its input is kept for the gradient, not its activations; the same parameters."""
    return nn.remat(ResidualBlock3d) if remat else ResidualBlock3d


class MidBlock3d(nn.Module):
    """Residual block, frame attention, residual block, at the lowest resolution."""

    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, cache: Cache = None):  # [B, T, h, w, C]
        c = x.shape[-1]
        block = _block(self.remat)
        x, c1 = block(c, name="block_1")(x, sub_cache(cache, "block_1"))
        x = FrameAttention(name="attn_1")(x)
        x, c2 = block(c, name="block_2")(x, sub_cache(cache, "block_2"))
        return x, {"block_1": c1, "block_2": c2}


class EncoderLevel(nn.Module):
    """``num_blocks`` residual blocks, then an optional downsampling (``downsample``: None,
    "space" or "spacetime")."""

    out_channels: int
    num_blocks: int
    downsample: str | None = None
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, cache: Cache = None):  # [B, T, H, W, Cin]
        new = {}
        for j in range(self.num_blocks):
            name = f"block_{j}"
            block = _block(self.remat)(self.out_channels, name=name)
            x, new[name] = block(x, sub_cache(cache, name))
        if self.downsample is not None:
            down = Downsample3d(temporal=self.downsample == "spacetime", name="downsample")
            x, new["downsample"] = down(x, sub_cache(cache, "downsample"))
        return x, new


class DecoderLevel(nn.Module):
    """``num_blocks`` residual blocks, then an optional upsampling (``upsample``: None, "space"
    or "spacetime") to half the width, as Wan 2.1's decoder."""

    out_channels: int
    num_blocks: int
    upsample: str | None = None
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, cache: Cache = None):  # [B, T, h, w, Cin]
        new = {}
        for j in range(self.num_blocks):
            name = f"block_{j}"
            block = _block(self.remat)(self.out_channels, name=name)
            x, new[name] = block(x, sub_cache(cache, name))
        if self.upsample is not None:
            up = Upsample3d(
                self.out_channels // 2, temporal=self.upsample == "spacetime", name="upsample"
            )
            x, new["upsample"] = up(x, sub_cache(cache, "upsample"))
        return x, new


def _resample_kind(temporal: bool) -> str:
    return "spacetime" if temporal else "space"


def _rows(h: jax.Array) -> jax.Array:
    """Activations [B, T, H, W, C] with their batch over the batch's mesh axes and their rows
    over the ``height`` rule's (``tensor`` by default): spatial sharding of large frames, which
    XLA's partitioner carries through the convolutions with halo exchanges. A no-op outside a
    mesh and rules table (``mesh.activation_rules``), and replicated rows where no rule maps
    ``height``."""
    return nn.with_logical_constraint(h, (BATCH, None, HEIGHT, None, None))


class VideoEncoder(nn.Module):
    """Video chunk -> ``out_channels`` per latent position (Wan's ``Encoder3d``).
    ``(x [B, T, H, W, Cin], cache) -> ([B, T', H/r_s, W/r_s, out], cache)``."""

    base_channels: int
    channel_mult: Sequence[int]
    num_res_blocks: int
    out_channels: int
    temporal_downsample: Sequence[bool]
    remat: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, cache: Cache = None):
        new = {}
        h, new["conv_in"] = CausalConv3d(self.base_channels, name="conv_in")(
            _rows(x), sub_cache(cache, "conv_in")
        )  # [B, T, H, W, base]
        h = _rows(h)
        last = len(self.channel_mult) - 1
        for i, mult in enumerate(self.channel_mult):
            name = f"down_{i}"
            h, new[name] = EncoderLevel(
                self.base_channels * mult,
                self.num_res_blocks,
                downsample=_resample_kind(self.temporal_downsample[i]) if i != last else None,
                remat=self.remat,
                name=name,
            )(h, sub_cache(cache, name))
            h = _rows(h)
        h, new["mid"] = MidBlock3d(remat=self.remat, name="mid")(h, sub_cache(cache, "mid"))
        h = nn.silu(ChannelRMSNorm(name="norm_out")(_rows(h)))
        out, new["conv_out"] = CausalConv3d(self.out_channels, name="conv_out")(
            h, sub_cache(cache, "conv_out")
        )
        return out, new


class VideoDecoder(nn.Module):
    """Latent chunk -> video chunk (Wan 2.1's ``Decoder3d``).
    ``(z [B, t, h, w, Cz], cache) -> ([B, T', h*r_s, w*r_s, out], cache)``."""

    base_channels: int
    channel_mult: Sequence[int]
    num_res_blocks: int
    out_channels: int
    temporal_downsample: Sequence[bool]  # the encoder's; level i >= 1 undoes entry i - 1
    remat: bool = False

    @nn.compact
    def __call__(self, z: jax.Array, cache: Cache = None):
        new = {}
        width = self.base_channels * self.channel_mult[-1]
        h, new["conv_in"] = CausalConv3d(width, name="conv_in")(z, sub_cache(cache, "conv_in"))
        h, new["mid"] = MidBlock3d(remat=self.remat, name="mid")(_rows(h), sub_cache(cache, "mid"))
        h = _rows(h)
        for i in reversed(range(len(self.channel_mult))):
            name = f"up_{i}"
            h, new[name] = DecoderLevel(
                self.base_channels * self.channel_mult[i],
                self.num_res_blocks + 1,
                upsample=_resample_kind(self.temporal_downsample[i - 1]) if i else None,
                remat=self.remat,
                name=name,
            )(h, sub_cache(cache, name))
            h = _rows(h)
        h = nn.silu(ChannelRMSNorm(name="norm_out")(h))
        out, new["conv_out"] = CausalConv3d(self.out_channels, name="conv_out")(
            h, sub_cache(cache, "conv_out")
        )
        return _rows(out), new


def _encode_step(model: VideoAutoencoderKL, cache: Cache, x: jax.Array):
    posterior, cache = model.encode_chunk(x, cache)
    return cache, (posterior.mean, posterior.logvar)


def _decode_step(model: VideoAutoencoderKL, cache: Cache, z: jax.Array):
    x, cache = model.decode_chunk(z, cache)
    return cache, x


def _scan_chunks(step, model, cache, rest: jax.Array, per_chunk: int):
    """Runs ``step(model, cache, chunk)`` over ``rest`` [B, N * per_chunk, ...] in chunks of
    ``per_chunk`` frames as one ``lax.scan`` (parameters shared, not stacked), or as N calls of
    the step in a row when ``model.unroll_chunks`` -> (cache, outputs concatenated back along
    time)."""
    b, n = rest.shape[0], rest.shape[1] // per_chunk
    chunks = jnp.moveaxis(rest.reshape(b, n, per_chunk, *rest.shape[2:]), 1, 0)  # [N, B, L, ...]
    if model.unroll_chunks:  # no loop in the program (lax.scan keeps one even at length 1)
        outputs = []
        for chunk in chunks:
            cache, y = step(model, cache, chunk)
            outputs.append(y)
        ys = jax.tree.map(lambda *y: jnp.stack(y), *outputs)
    else:
        scan = nn.scan(
            step, variable_broadcast="params", split_rngs={"params": False}, in_axes=0, out_axes=0
        )
        cache, ys = scan(model, cache, chunks)

    def unchunk(y):  # [N, B, l, ...] -> [B, N * l, ...]
        y = jnp.moveaxis(y, 0, 1)
        return y.reshape(b, y.shape[1] * y.shape[2], *y.shape[3:])

    return cache, jax.tree.map(unchunk, ys)


class VideoAutoencoderKL(nn.Module):
    """Causal video encoder -> diagonal Gaussian posterior -> causal video decoder (Wan 2.1).

    Arguments name Wan's (diffusers' ``AutoencoderKLWan``): ``base_channels`` = ``base_dim``,
    ``channel_mult`` = ``dim_mult``, ``latent_channels`` = ``z_dim``, ``temporal_downsample`` =
    ``temperal_downsample`` (one entry per level but the last), ``decoder_base_channels`` =
    ``decoder_base_dim``. Wan 2.1 is ``base_channels=96, channel_mult=(1, 2, 4, 4),
    num_res_blocks=2, latent_channels=16, temporal_downsample=(False, True, True)``. Wan's
    ``attn_scales`` (attention inside the levels) is left out: Wan 2.1 uses none, and neither
    Wan's code nor diffusers' can run an encoder with it (both pass the chunk cache to the
    attention block, which takes none).

    Use ``model.apply(params, x, method=model.encode)`` / ``method=model.decode`` for either half;
    ``chunk_latent_frames`` (default 1, as Wan) sets how many latent frames one scan step makes,
    None for all of them in one step.
    """

    base_channels: int
    channel_mult: Sequence[int]
    num_res_blocks: int
    latent_channels: int
    temporal_downsample: Sequence[bool]
    in_channels: int = 3
    decoder_base_channels: int | None = None
    remat: bool = False  # recompute each residual block in the backward pass
    # The chunks as one copy of the chunk step each instead of a loop: the same numbers. XLA's
    # CPU backend runs the gradient of convolutions in a loop body about 14x slower than the
    # same convolutions outside one (benchmarks/video_scan.py); the program grows with the
    # clip's chunks.
    unroll_chunks: bool = False

    def setup(self):
        if len(self.temporal_downsample) != len(self.channel_mult) - 1:
            raise ValueError(
                f"temporal_downsample {tuple(self.temporal_downsample)} needs one entry per "
                f"level but the last: {len(self.channel_mult) - 1} for channel_mult "
                f"{tuple(self.channel_mult)}"
            )
        self.encoder = VideoEncoder(
            base_channels=self.base_channels,
            channel_mult=tuple(self.channel_mult),
            num_res_blocks=self.num_res_blocks,
            out_channels=2 * self.latent_channels,
            temporal_downsample=tuple(self.temporal_downsample),
            remat=self.remat,
        )
        self.quant_conv = CausalConv3d(2 * self.latent_channels, (1, 1, 1))
        self.post_quant_conv = CausalConv3d(self.latent_channels, (1, 1, 1))
        self.decoder = VideoDecoder(
            base_channels=self.decoder_base_channels or self.base_channels,
            channel_mult=tuple(self.channel_mult),
            num_res_blocks=self.num_res_blocks,
            out_channels=self.in_channels,
            temporal_downsample=tuple(self.temporal_downsample),
            remat=self.remat,
        )

    @property
    def bottleneck(self) -> str:
        """The bottleneck's kind, as ``AutoencoderKL.bottleneck`` names it: always "kl"."""
        return "kl"

    @property
    def time_factor(self) -> int:
        """r_t: frames per latent frame after the first."""
        return 2 ** sum(bool(t) for t in self.temporal_downsample)

    @property
    def space_factor(self) -> int:
        """r_s: pixels of a side per latent position."""
        return 2 ** (len(self.channel_mult) - 1)

    def latent_frames(self, frames: int) -> int:
        """``1 + (T - 1) / r_t`` latent frames for ``T`` frames; raises unless T = 1 + r_t * k."""
        r = self.time_factor
        if frames < 1 or (frames - 1) % r:
            raise ValueError(
                f"a clip of {frames} frames cannot be encoded: with x{r} time compression the "
                f"frame count must be 1 + {r}k (1, {1 + r}, {1 + 2 * r}, ...), since frame 0 is "
                f"encoded alone and then every {r} frames make one latent frame"
            )
        return 1 + (frames - 1) // r

    def encode_chunk(self, x: jax.Array, cache: Cache = None) -> tuple[DiagonalGaussian, Cache]:
        """One streaming step: frames ``x`` [B, L, H, W, C] -> (posterior over their L / r_t
        latent frames, cache for the next chunk). ``cache=None`` starts a video: then L = 1."""
        moments, cache = self.encoder(x, cache)  # [B, L / r_t, h, w, 2z]
        moments, _ = self.quant_conv(moments)
        return DiagonalGaussian.from_moments(moments), cache

    def decode_chunk(self, z: jax.Array, cache: Cache = None) -> tuple[jax.Array, Cache]:
        """One streaming step: latent frames ``z`` [B, l, h, w, z] -> (their frames [B, l * r_t,
        H, W, C], or one frame when ``cache=None`` starts a video with l = 1; cache)."""
        z, _ = self.post_quant_conv(z)
        return self.decoder(z, cache)

    def _per_chunk(self, latent_frames: int, chunk_latent_frames: int | None) -> int:
        rest = latent_frames - 1
        n = chunk_latent_frames or max(rest, 1)
        if n < 1 or rest % n:
            raise ValueError(
                f"chunk_latent_frames={chunk_latent_frames} does not divide the {rest} latent "
                "frames after the first"
            )
        return n

    def encode(self, x: jax.Array, chunk_latent_frames: int | None = 1) -> DiagonalGaussian:
        """x [B, T, H, W, C] in [-1, 1], T = 1 + r_t k -> q(z|x), mean/logvar [B, 1 + k, H/r_s,
        W/r_s, z]."""
        if x.ndim != 5:
            raise ValueError(f"encode wants a video [B, T, H, W, C], got shape {x.shape}")
        if x.shape[2] % self.space_factor or x.shape[3] % self.space_factor:
            # Wan's strided convs would round the size down and the decoder not give it back.
            raise ValueError(
                f"frames of {x.shape[2]}x{x.shape[3]} cannot be encoded: with x{self.space_factor} "
                f"space compression H and W must be multiples of {self.space_factor}"
            )
        t = self.latent_frames(x.shape[1])
        n = self.time_factor * self._per_chunk(t, chunk_latent_frames)
        first, cache = self.encode_chunk(x[:, :1])  # frame 0 alone
        if t == 1:
            return first
        _, (mean, logvar) = _scan_chunks(_encode_step, self, cache, x[:, 1:], n)
        return DiagonalGaussian(
            mean=jnp.concatenate([first.mean, mean], axis=1),
            logvar=jnp.concatenate([first.logvar, logvar], axis=1),
        )

    def decode(self, z: jax.Array, chunk_latent_frames: int | None = 1) -> jax.Array:
        """z [B, t, h, w, z] -> frames [B, 1 + r_t (t - 1), h r_s, w r_s, C], unclipped."""
        if z.ndim != 5:
            raise ValueError(f"decode wants latents [B, t, h, w, z], got shape {z.shape}")
        t = z.shape[1]
        n = self._per_chunk(t, chunk_latent_frames)
        first, cache = self.decode_chunk(z[:, :1])  # latent frame 0 alone -> one frame
        if t == 1:
            return first
        _, rest = _scan_chunks(_decode_step, self, cache, z[:, 1:], n)
        return jnp.concatenate([first, rest], axis=1)

    def __call__(
        self, x: jax.Array, sample: bool = True, chunk_latent_frames: int | None = 1
    ) -> tuple[jax.Array, DiagonalGaussian]:
        """Reconstruct ``x`` through a posterior sample (needs the "sample" rng) or, with
        ``sample=False``, the posterior mean. -> (x_hat [B, T, H, W, C], posterior)."""
        posterior = self.encode(x, chunk_latent_frames)
        z = posterior.sample(self.make_rng("sample")) if sample else posterior.mode()
        return self.decode(z, chunk_latent_frames), posterior
