"""Linen layers whose parameters carry logical axis names (see ``latentjax/parallel/axes.py``).

Every model builds its convolutions, dense layers and norms from these, so the sharding rules
table in a config can place every parameter without the models knowing about meshes.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from latentjax.parallel.axes import CONV_IN, CONV_OUT, NORM

Initializer = nn.initializers.Initializer
LECUN_NORMAL = nn.initializers.lecun_normal()


def _named(init: Initializer, names: tuple) -> Initializer:
    return nn.with_logical_partitioning(init, names)


def conv(
    features: int,
    kernel: int = 3,
    *,
    stride: int = 1,
    padding: str | Sequence = "SAME",
    name: str | None = None,
    kernel_init: Initializer = LECUN_NORMAL,
    use_bias: bool = True,
    groups: int = 1,
    frames: int = 0,
) -> nn.Module:
    """A 2-D convolution (NHWC) with kernel axes (None, None, conv_in, conv_out); ``groups``
    splits the channels into independent groups (``groups`` = channels: depthwise), the kernel
    then being [k, k, in / groups, out]. ``frames`` > 0 makes it 3-D over [B, T, H, W, C]
    (:class:`FrameConv3d`): a kernel of ``frames`` x k x k with stride 1 in time (``padding``
    then a sequence naming time first)."""
    if frames:
        if groups != 1:
            raise ValueError("a 3-D convolution here has no groups")
        return FrameConv3d(
            features, (frames, kernel, kernel), stride, tuple(padding), use_bias, kernel_init,
            name=name,
        )  # fmt: skip
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=padding,
        use_bias=use_bias,
        feature_group_count=groups,
        kernel_init=_named(kernel_init, (None, None, CONV_IN, CONV_OUT)),
        bias_init=_named(nn.initializers.zeros_init(), (CONV_OUT,)),
        name=name,
    )


def conv_over_frames(
    x: jax.Array, kernel: jax.Array, time_stride: int, stride: int, padding: Sequence
) -> jax.Array:
    """The 3-D convolution of ``x`` [B, T, H, W, Cin] (time already padded) with ``kernel``
    [kt, kh, kw, Cin, Cout] as kt 2-D convolutions over frames, summed: output frame i is
    sum_j conv2d(x[s i + j], kernel[j]). The same products summed in another order; XLA's CPU
    backend runs 3-D convolutions, and their gradients, several times slower than these 2-D
    ones (README, "Video"). ``stride`` and ``padding`` ((lo, hi), (lo, hi)) are spatial."""
    kt, cin = kernel.shape[0], x.shape[-1]
    b, t = x.shape[:2]
    t_out = (t - kt) // time_stride + 1
    y = 0.0
    for j in range(kt):
        frames = x[:, j : j + time_stride * (t_out - 1) + 1 : time_stride]
        y = y + jax.lax.conv_general_dilated(
            frames.reshape(b * t_out, *x.shape[2:4], cin),
            kernel[j],
            window_strides=(stride, stride),
            padding=tuple(tuple(p) for p in padding),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
    return y.reshape(b, t_out, *y.shape[1:])


class FrameConv3d(nn.Module):
    """A 3-D convolution over [B, T, H, W, C] with stride 1 in time and ``stride`` in space,
    ``padding`` ((time), (height), (width)) with zeros, computed by :func:`conv_over_frames`.
    Its parameters are ``nn.Conv``'s in 3-D: ``kernel`` [kt, kh, kw, in, out], ``bias``."""

    features: int
    kernel_size: tuple[int, int, int]
    stride: int = 1
    padding: tuple = ((0, 0), (0, 0), (0, 0))
    use_bias: bool = True
    kernel_init: Initializer = LECUN_NORMAL

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param(
            "kernel", _named(self.kernel_init, (None,) * 3 + (CONV_IN, CONV_OUT)), shape
        )
        x = jnp.pad(x, ((0, 0), tuple(self.padding[0]), (0, 0), (0, 0), (0, 0)))
        y = conv_over_frames(x, kernel, 1, self.stride, self.padding[1:])
        if self.use_bias:
            y = y + self.param(
                "bias", _named(nn.initializers.zeros_init(), (CONV_OUT,)), (self.features,)
            )
        return y


def dense(
    features: int,
    axes: tuple[str | None, str | None],
    *,
    name: str | None = None,
    kernel_init: Initializer = LECUN_NORMAL,
    use_bias: bool = True,
) -> nn.Dense:
    """A dense layer whose kernel [in, out] carries ``axes``; its bias carries ``axes[1]``."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        kernel_init=_named(kernel_init, axes),
        bias_init=_named(nn.initializers.zeros_init(), (axes[1],)),
        name=name,
    )


def group_norm(channels: int, num_groups: int, *, name: str | None = None) -> nn.GroupNorm:
    """GroupNorm with eps 1e-6 (as Stable Diffusion's autoencoder). Raises if the groups do not
    divide the channels: a silent fallback would change the model."""
    groups = min(num_groups, channels)
    if channels % groups:
        raise ValueError(f"GroupNorm: {groups} groups do not divide {channels} channels")
    return nn.GroupNorm(
        num_groups=groups,
        epsilon=1e-6,
        scale_init=_named(nn.initializers.ones_init(), (NORM,)),
        bias_init=_named(nn.initializers.zeros_init(), (NORM,)),
        name=name,
    )


def layer_norm(*, epsilon: float = 1e-6, name: str | None = None) -> nn.LayerNorm:
    """LayerNorm over the last axis with a learned scale and bias (axis ``norm``).

    The variance is computed as E[(x - mean)^2] rather than flax's default E[x^2] - mean^2: the
    latter cancels catastrophically in float32 when a channel's mean is large next to its spread,
    which transformer residual streams do show."""
    return nn.LayerNorm(
        epsilon=epsilon,
        use_fast_variance=False,
        scale_init=_named(nn.initializers.ones_init(), (NORM,)),
        bias_init=_named(nn.initializers.zeros_init(), (NORM,)),
        name=name,
    )


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) over the last axis, times a learned scale, plus a learned bias
    when ``use_bias`` (Zhang & Sennrich 2019; the bias is diffusers' DC-AE variant). Computed in
    float32."""

    epsilon: float = 1e-5
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale = self.param("scale", _named(nn.initializers.ones_init(), (NORM,)), (c,))
        h = x.astype(jnp.float32)
        h = h * jax.lax.rsqrt(jnp.mean(jnp.square(h), axis=-1, keepdims=True) + self.epsilon)
        h = h * scale
        if self.use_bias:
            h = h + self.param("bias", _named(nn.initializers.zeros_init(), (NORM,)), (c,))
        return h.astype(x.dtype)


class FrozenBatchNorm(nn.Module):
    """BatchNorm at inference: (x - mean) / sqrt(var + eps) * scale + bias over the last axis,
    with the running statistics of an imported network held as parameters (``mean``, ``var``).
    For converted weights only: training would move those statistics by gradient."""

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        p = {
            name: self.param(name, _named(init, (NORM,)), (c,))
            for name, init in (
                ("scale", nn.initializers.ones_init()),
                ("bias", nn.initializers.zeros_init()),
                ("mean", nn.initializers.zeros_init()),
                ("var", nn.initializers.ones_init()),
            )
        }
        return (x - p["mean"]) * jax.lax.rsqrt(p["var"] + self.epsilon) * p["scale"] + p["bias"]


def _mish(x):
    return x * jnp.tanh(jax.nn.softplus(x))


# diffusers' activation names (models/activations.py, get_activation) -> functions; its "gelu"
# is PyTorch's exact GELU.
ACTIVATIONS = {
    "relu": nn.relu,
    "silu": nn.silu,
    "swish": nn.silu,
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "mish": _mish,
}


def activation(name: str):
    """The activation diffusers calls ``name`` (case-insensitive, as there)."""
    try:
        return ACTIVATIONS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; use one of {sorted(ACTIVATIONS)}") from None
