"""Linen layers whose parameters carry logical axis names (see ``latentjax/parallel/axes.py``).

Every model builds its convolutions, dense layers and norms from these, so the sharding rules
table in a config can place every parameter without the models knowing about meshes.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn

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
) -> nn.Conv:
    """A 2-D convolution (NHWC) with kernel axes (None, None, conv_in, conv_out)."""
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=padding,
        use_bias=use_bias,
        kernel_init=_named(kernel_init, (None, None, CONV_IN, CONV_OUT)),
        bias_init=_named(nn.initializers.zeros_init(), (CONV_OUT,)),
        name=name,
    )


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
