"""InceptionV3 as used for FID (Szegedy et al. 2016; Heusel et al. 2017), NHWC, inference only.

This is the network of the TensorFlow FID code that pytorch-fid reproduces (its ``FIDInception*``
blocks differ from torchvision's InceptionV3 in three places: average pools exclude padding
(``count_include_pad=False``), and the last block uses a max pool in its pool branch). Module names
follow torchvision's, so pytorch-fid's weights file (``pt_inception-2015-12-05-*.pth``) maps one to
one: ``Mixed_5b.branch5x5_2.{conv,bn}`` -> ``Mixed_5b/branch5x5_2/{conv,bn}``
(``latentjax/convert/inception.py`` reads it).

``InceptionV3FID()(images)`` takes [B, H, W, 3] in [0, 1], resizes to 299x299 (bilinear, no
antialiasing, as ``F.interpolate(..., align_corners=False)``), scales to [-1, 1] and returns the
2048-d pool3 features FID is computed on.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class BasicConv(nn.Module):
    """conv (no bias) -> BatchNorm (eps 1e-3, running statistics) -> ReLU."""

    features: int
    kernel: Sequence[int] = (1, 1)
    stride: int = 1
    padding: Sequence[int] = (0, 0)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ph, pw = self.padding
        x = nn.Conv(
            self.features,
            tuple(self.kernel),
            strides=(self.stride, self.stride),
            padding=((ph, ph), (pw, pw)),
            use_bias=False,
            name="conv",
        )(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
        return nn.relu(x)


def _avg_pool_exclude_pad(x: jax.Array) -> jax.Array:
    """3x3 stride-1 average pool with 1 padding that averages only real pixels."""
    ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
    pad = ((1, 1), (1, 1))
    total = nn.pool(x, 0.0, jax.lax.add, (3, 3), (1, 1), pad)
    count = nn.pool(ones, 0.0, jax.lax.add, (3, 3), (1, 1), pad)
    return total / count


def _max_pool(x: jax.Array, stride: int, pad: int = 0) -> jax.Array:
    return nn.max_pool(x, (3, 3), (stride, stride), ((pad, pad), (pad, pad)))


class InceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = BasicConv(64, name="branch1x1")(x)
        b5 = BasicConv(48, name="branch5x5_1")(x)
        b5 = BasicConv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = BasicConv(64, name="branch3x3dbl_1")(x)
        b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = BasicConv(self.pool_features, name="branch_pool")(_avg_pool_exclude_pad(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(384, (3, 3), stride=2, name="branch3x3")(x)
        bd = BasicConv(64, name="branch3x3dbl_1")(x)
        bd = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = BasicConv(96, (3, 3), stride=2, name="branch3x3dbl_3")(bd)
        return jnp.concatenate([b3, bd, _max_pool(x, 2)], axis=-1)


class InceptionC(nn.Module):
    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        b1 = BasicConv(192, name="branch1x1")(x)
        b7 = BasicConv(c7, name="branch7x7_1")(x)
        b7 = BasicConv(c7, **row, name="branch7x7_2")(b7)
        b7 = BasicConv(192, **col, name="branch7x7_3")(b7)
        bd = BasicConv(c7, name="branch7x7dbl_1")(x)
        bd = BasicConv(c7, **col, name="branch7x7dbl_2")(bd)
        bd = BasicConv(c7, **row, name="branch7x7dbl_3")(bd)
        bd = BasicConv(c7, **col, name="branch7x7dbl_4")(bd)
        bd = BasicConv(192, **row, name="branch7x7dbl_5")(bd)
        bp = BasicConv(192, name="branch_pool")(_avg_pool_exclude_pad(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = BasicConv(192, name="branch3x3_1")(x)
        b3 = BasicConv(320, (3, 3), stride=2, name="branch3x3_2")(b3)
        b7 = BasicConv(192, name="branch7x7x3_1")(x)
        b7 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = BasicConv(192, (3, 3), stride=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool(x, 2)], axis=-1)


class InceptionE(nn.Module):
    max_pool: bool  # the last block (Mixed_7c) pools with max in the FID network

    @nn.compact
    def __call__(self, x):
        row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
        b1 = BasicConv(320, name="branch1x1")(x)
        b3 = BasicConv(384, name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [
                BasicConv(384, **row, name="branch3x3_2a")(b3),
                BasicConv(384, **col, name="branch3x3_2b")(b3),
            ],
            axis=-1,
        )
        bd = BasicConv(448, name="branch3x3dbl_1")(x)
        bd = BasicConv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = jnp.concatenate(
            [
                BasicConv(384, **row, name="branch3x3dbl_3a")(bd),
                BasicConv(384, **col, name="branch3x3dbl_3b")(bd),
            ],
            axis=-1,
        )
        pooled = _max_pool(x, 1, 1) if self.max_pool else _avg_pool_exclude_pad(x)
        bp = BasicConv(192, name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3FID(nn.Module):
    """[B, H, W, 3] in [0, 1] -> [B, 2048] pool3 features (H, W >= 75 when ``resize`` is off)."""

    resize: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.resize:
            x = jax.image.resize(x, (x.shape[0], 299, 299, x.shape[3]), "bilinear", antialias=False)
        x = 2.0 * x - 1.0
        x = BasicConv(32, (3, 3), stride=2, name="Conv2d_1a_3x3")(x)
        x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
        x = BasicConv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool(x, 2)
        x = BasicConv(80, name="Conv2d_3b_1x1")(x)
        x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
        x = _max_pool(x, 2)
        x = InceptionA(32, name="Mixed_5b")(x)
        x = InceptionA(64, name="Mixed_5c")(x)
        x = InceptionA(64, name="Mixed_5d")(x)
        x = InceptionB(name="Mixed_6a")(x)
        x = InceptionC(128, name="Mixed_6b")(x)
        x = InceptionC(160, name="Mixed_6c")(x)
        x = InceptionC(160, name="Mixed_6d")(x)
        x = InceptionC(192, name="Mixed_6e")(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE(max_pool=False, name="Mixed_7b")(x)
        x = InceptionE(max_pool=True, name="Mixed_7c")(x)
        return x.mean(axis=(1, 2))  # adaptive average pool to 1x1: [B, 2048]
