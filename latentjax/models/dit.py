"""Diffusion Transformer (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers").

Latent [B, H, W, C] -> patches of p x p -> tokens with fixed 2-D sin-cos position embeddings ->
``depth`` adaLN-Zero blocks conditioned on c = embed(t) + embed(y) -> linear head -> unpatchify.
The modulation layers and the head start at zero, so every block is the identity and the model
outputs zeros at initialisation. The label table has ``num_classes + 1`` rows: the last is the
null class used for classifier-free guidance (the trainer decides when to drop labels). A model
trained without label dropout has no such row (``null_class=False``, as DiT's own
``LabelEmbedder`` with ``dropout_prob=0``) and cannot be guided.
"""

from __future__ import annotations

import math
import re

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from latentjax.models.layers import conv, dense
from latentjax.parallel.axes import BATCH, EMBED, HEADS, MLP, VOCAB

XAVIER = nn.initializers.xavier_uniform()
# DiT initialises the patch-embedding conv as a Dense on its flattened kernel [p*p*C_in, D]:
# fan_in = p*p*C_in, fan_out = D. Flax's default xavier on a conv kernel multiplies *both* fans by
# the receptive field (p*p), which would shrink the bound; naming the input axes avoids that.
PATCH_XAVIER = nn.initializers.xavier_uniform(in_axis=(0, 1, 2), out_axis=-1)
ZEROS = nn.initializers.zeros_init()

# (hidden size, depth, heads) of the DiT paper's table 1.
DIT_VARIANTS = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}


def dit_kwargs(variant: str) -> dict[str, int]:
    """ "XL/2" -> hidden_size, depth, num_heads, patch_size (big_vision's ``decode_variant``)."""
    m = re.fullmatch(r"(S|B|L|XL)/(\d+)", variant)
    if not m:
        raise ValueError(
            f"unknown DiT variant {variant!r}; use one of {list(DIT_VARIANTS)}/<patch>"
        )
    hidden, depth, heads = DIT_VARIANTS[m.group(1)]
    return {"hidden_size": hidden, "depth": depth, "num_heads": heads, "patch_size": int(m[2])}


def patchify(x: jax.Array, p: int) -> jax.Array:
    """[B, H, W, C] -> [B, (H/p)(W/p), p*p*C]"""
    return einops.rearrange(x, "b (h p) (w q) c -> b (h w) (p q c)", p=p, q=p)


def unpatchify(tokens: jax.Array, p: int, h: int, w: int, c: int) -> jax.Array:
    """[B, (h/p)(w/p), p*p*c] -> [B, h, w, c]"""
    return einops.rearrange(
        tokens, "b (h w) (p q c) -> b (h p) (w q) c", h=h // p, w=w // p, p=p, q=p, c=c
    )


def timestep_embedding(
    t: jax.Array, dim: int, max_period: float = 10000.0, freq_shift: float = 0.0
) -> jax.Array:
    """Sinusoidal embedding of (continuous) timesteps [B] -> [B, dim] (cos first, as DiT/ADM).
    Frequencies are max_period ** (-i / (dim/2 - freq_shift)); DiT uses freq_shift 0, diffusers'
    ``DiTTransformer2DModel`` 1 (its ``Timesteps(downscale_freq_shift=1)``)."""
    half = dim // 2
    freqs = jnp.exp(
        -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
    )
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
    return emb


def sincos_2d(dim: int, grid: int) -> np.ndarray:
    """Fixed 2-D sin-cos position embedding [grid*grid, dim] (MAE/DiT): half the channels encode
    the row, half the column."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos position embedding needs dim divisible by 4, got {dim}")

    def one_d(d: int, pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    # As DiT's reference: the first half of the channels encodes the column (w) coordinate.
    coords = np.arange(grid, dtype=np.float64)
    w_coord, h_coord = np.meshgrid(coords, coords)  # w_coord[i, j] = j
    emb = np.concatenate([one_d(dim // 2, w_coord), one_d(dim // 2, h_coord)], axis=1)
    return emb.astype(np.float32)


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """adaLN: x [B, L, D] * (1 + scale [B, D]) + shift [B, D] (DiT eq. for adaLN, sec. 3.2)."""
    return x * (1.0 + scale[:, None]) + shift[:, None]


def _layer_norm(epsilon: float = 1e-6) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=epsilon, use_scale=False, use_bias=False)


class TimestepEmbedder(nn.Module):
    """Sinusoidal frequencies of t -> Dense -> SiLU -> Dense (DiT's t_embedder)."""

    hidden_size: int
    freq_dim: int = 256
    freq_shift: float = 0.0

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:  # [B] -> [B, D]
        init = nn.initializers.normal(0.02)
        h = dense(self.hidden_size, (None, MLP), kernel_init=init, name="fc1")(
            timestep_embedding(t, self.freq_dim, freq_shift=self.freq_shift)
        )
        return dense(self.hidden_size, (MLP, EMBED), kernel_init=init, name="fc2")(nn.silu(h))


class LabelEmbedder(nn.Module):
    """Class labels -> vectors; row ``num_classes`` is the null (CFG) class when
    ``null_class``."""

    num_classes: int
    hidden_size: int
    null_class: bool = True

    @nn.compact
    def __call__(self, y: jax.Array) -> jax.Array:  # [B] int -> [B, D]
        table = nn.Embed(
            self.num_classes + int(self.null_class),  # + the null class
            self.hidden_size,
            embedding_init=nn.with_logical_partitioning(
                nn.initializers.normal(0.02), (VOCAB, EMBED)
            ),
            name="embedding_table",
        )
        return table(y)


def attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Softmax attention of [B, L, heads, head_dim] queries, keys and values, the same function
    as ``jax.nn.dot_product_attention`` (logits and softmax in at least float32).

    The heads are moved in front of the sequence first, so both products are batched matmuls
    over leading (batch, head) dimensions. XLA:CPU runs that form 2x faster forward and 1.3x
    faster forward + backward than jax.nn's, whose einsums batch over non-leading dimensions
    (DiT-B/2 shapes, 2-core CPU; ``benchmarks/notes.md``).
    """
    logits_dtype = jnp.promote_types(q.dtype, jnp.float32)
    q, k, v = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))  # [B, heads, L, head_dim]
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=logits_dtype)
    logits = logits * jnp.asarray(q.shape[-1] ** -0.5, logits_dtype)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.swapaxes(jnp.einsum("bhqk,bhkd->bhqd", weights, v), 1, 2)


class Attention(nn.Module):
    """Multi-head self-attention: fused qkv Dense, softmax attention (:func:`attention`), out
    Dense."""

    num_heads: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, L, D]
        b, length, d = x.shape
        if d % self.num_heads:
            raise ValueError(f"hidden size {d} is not divisible by {self.num_heads} heads")
        head_dim = d // self.num_heads
        # [q | k | v] along features, each head-major, as timm's fused qkv in DiT.
        qkv = dense(3 * d, (EMBED, HEADS), kernel_init=XAVIER, name="qkv")(x)
        q, k, v = jnp.split(qkv.reshape(b, length, 3 * self.num_heads, head_dim), 3, axis=2)
        # Tensor parallelism (Megatron-style): each `tensor` shard attends with its own heads.
        # Active only under a mesh and rules table (latentjax.parallel.mesh.activation_rules).
        q, k, v = (nn.with_logical_constraint(a, (BATCH, None, HEADS, None)) for a in (q, k, v))
        out = attention(q, k, v)  # [B, L, heads, head_dim]
        out = nn.with_logical_constraint(out, (BATCH, None, HEADS, None))
        return dense(d, (HEADS, EMBED), kernel_init=XAVIER, name="proj")(out.reshape(b, length, d))


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning (DiT sec. 3.2): c regresses shift, scale and
    a gate for the attention and the MLP branch; the zero-initialised regression makes the block
    the identity at initialisation."""

    hidden_size: int
    num_heads: int
    mlp_ratio: float = 4.0
    mlp_norm_eps: float = 1e-6  # diffusers' DiT uses its config's norm_eps (1e-5) here

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:  # x [B, L, D], c [B, D]
        mod = dense(6 * self.hidden_size, (EMBED, MLP), kernel_init=ZEROS, name="adaLN_modulation")
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = jnp.split(mod(nn.silu(c)), 6, axis=-1)
        h = Attention(self.num_heads, name="attn")(modulate(_layer_norm()(x), shift_a, scale_a))
        x = x + gate_a[:, None] * h
        hidden = int(self.hidden_size * self.mlp_ratio)
        h = modulate(_layer_norm(self.mlp_norm_eps)(x), shift_m, scale_m)
        h = dense(hidden, (EMBED, MLP), kernel_init=XAVIER, name="fc1")(h)
        h = nn.with_logical_constraint(h, (BATCH, None, MLP))  # MLP width split over `tensor`
        h = dense(self.hidden_size, (MLP, EMBED), kernel_init=XAVIER, name="fc2")(
            nn.gelu(h, approximate=True)
        )
        return x + gate_m[:, None] * h


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm, then a zero-initialised linear map to p*p*out channels/token."""

    hidden_size: int
    out_features: int

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        mod = dense(2 * self.hidden_size, (EMBED, MLP), kernel_init=ZEROS, name="adaLN_modulation")
        shift, scale = jnp.split(mod(nn.silu(c)), 2, axis=-1)
        x = modulate(_layer_norm()(x), shift, scale)
        return dense(self.out_features, (EMBED, None), kernel_init=ZEROS, name="linear")(x)


class Projector(nn.Module):
    """REPA's projector (Yu et al. 2025, sec. 3.2; its ``build_mlp``): Dense -> SiLU -> Dense ->
    SiLU -> Dense, from the DiT's width to the frozen encoder's, applied per token."""

    hidden: int
    out_features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, L, D] -> [B, L, out_features]
        x = nn.silu(dense(self.hidden, (EMBED, MLP), name="fc1")(x))
        x = nn.silu(dense(self.hidden, (MLP, None), name="fc2")(x))
        return dense(self.out_features, (None, None), name="fc3")(x)


class DiT(nn.Module):
    """Diffusion Transformer on [B, H, W, C] latents; H = W = ``input_size``.

    With ``repa_depth`` > 0 the network also has REPA's projector (parameters
    ``repa_projector``), which ``return_repa=True`` applies to the hidden state after the first
    ``repa_depth`` blocks; a call without it ignores the projector (sampling)."""

    input_size: int
    patch_size: int
    in_channels: int
    hidden_size: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    num_classes: int = 10  # 0: unconditional
    learn_sigma: bool = False
    # For imported weights (latentjax/convert/dit.py): diffusers' DiT differs from the paper's
    # code in these two details; the defaults are the paper's.
    timestep_freq_shift: float = 0.0
    mlp_norm_eps: float = 1e-6
    null_class: bool = True  # the label table's null (guidance) row; False: cannot guide
    repa_depth: int = 0  # REPA: align the output of this many blocks; 0 = no projector
    repa_projector_dim: int = 2048  # REPA: the projector's hidden width
    repa_feature_dim: int = 0  # REPA: the frozen encoder's feature width

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @nn.compact
    def __call__(
        self, x: jax.Array, t: jax.Array, y: jax.Array, *, return_repa: bool = False
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """x [B, H, W, C] latents, t [B] in [0, 1000), y [B] int labels -> [B, H, W, out];
        with ``return_repa``, also the projected hidden state [B, (H/p)(W/p), feature dim]."""
        b, h, w, _ = x.shape
        p = self.patch_size
        if h != self.input_size or w != self.input_size:
            # The fixed position embedding is built for input_size x input_size (as in DiT).
            raise ValueError(f"input is {h}x{w} but the DiT was built for {self.input_size}^2")
        if h % p:
            raise ValueError(f"input size {h} is not divisible by patch size {p}")
        # Patch embedding: a p x p conv with stride p, initialised like a Dense (xavier over the
        # flattened kernel, as DiT does).
        tokens = conv(
            self.hidden_size,
            p,
            stride=p,
            padding="VALID",
            kernel_init=PATCH_XAVIER,
            name="x_embedder",
        )(x).reshape(b, (h // p) * (w // p), self.hidden_size)
        tokens = tokens + sincos_2d(self.hidden_size, h // p)[None]
        # The residual stream: batch over the data axes, width whole on every `tensor` shard.
        tokens = nn.with_logical_constraint(tokens, (BATCH, None, None))
        c = TimestepEmbedder(
            self.hidden_size, freq_shift=self.timestep_freq_shift, name="t_embedder"
        )(t)
        if self.num_classes > 0:
            embed = LabelEmbedder(
                self.num_classes, self.hidden_size, self.null_class, name="y_embedder"
            )
            c = c + embed(y)
        if return_repa and not 0 < self.repa_depth <= self.depth:
            raise ValueError(f"repa_depth={self.repa_depth} is not in 1..{self.depth}")
        projected = None
        for i in range(self.depth):
            tokens = DiTBlock(
                self.hidden_size,
                self.num_heads,
                self.mlp_ratio,
                mlp_norm_eps=self.mlp_norm_eps,
                name=f"block_{i}",
            )(tokens, c)
            if return_repa and i + 1 == self.repa_depth:
                projector = Projector(
                    self.repa_projector_dim, self.repa_feature_dim, name="repa_projector"
                )
                projected = projector(tokens)
        out = FinalLayer(self.hidden_size, p * p * self.out_channels, name="final_layer")(tokens, c)
        out = unpatchify(out, p, h, w, self.out_channels)
        return (out, projected) if return_repa else out
