"""Video reconstruction metrics: per-frame PSNR/SSIM, flicker, tensor size reduction.

Clips are [B, T, H, W, C] in [-1, 1]. Per-frame figures fold the frames into the batch and use
the image metrics of ``metrics.py`` unchanged; a clip's figure is the mean over its frames.

**Flicker** (temporal consistency) is the error of the frame differences: with
``d_t = x_{t+1} - x_t`` the motion of the original and ``d^_t`` the reconstruction's,
``flicker = mean_t,pixels |d^_t - d_t|`` (on the [-1, 1] scale; 0 for a reconstruction that
changes from frame to frame exactly as the clip does, whatever its per-frame error). A
reconstruction that is off by the same amount in every frame does not flicker; one whose errors
change from frame to frame does, which a per-frame PSNR cannot tell apart. It is the first-order
temporal error of video-compression and video-restoration papers' "temporal consistency" (e.g.
the pixel version of TecoGAN's tLP, Chu et al. 2020, arXiv:1811.09393, which compares LPIPS of
consecutive frames instead).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from latentjax.eval import latent_report as lr
from latentjax.eval import metrics


def frames(x: jax.Array) -> jax.Array:
    """Clips [B, T, H, W, C] -> frames [B * T, H, W, C]."""
    return x.reshape(-1, *x.shape[2:])


def per_frame(metric, x: jax.Array, y: jax.Array) -> jax.Array:
    """An image metric ``(x [N, H, W, C], y) -> [N]`` on every frame of clips. -> [B, T]"""
    return metric(frames(x), frames(y)).reshape(x.shape[:2])


def flicker(x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean |(y_{t+1} - y_t) - (x_{t+1} - x_t)| per clip (see the module docstring). x the
    original, y the reconstruction, [B, T, H, W, C] with T >= 2. -> [B]"""
    err = jnp.abs(jnp.diff(y, axis=1) - jnp.diff(x, axis=1))
    return err.reshape(err.shape[0], -1).mean(axis=1)


def video_report(x: jax.Array, y: jax.Array, latent_shape) -> dict[str, float]:
    """Means over the clips: per-frame PSNR and SSIM, flicker, and the tensor size reduction
    counting time (T H W C / (t h w c), ``latent_shape`` one clip's latent (t, h, w, c), or
    T (h, w, c) for frames encoded one by one)."""
    return {
        "psnr": float(jnp.mean(per_frame(metrics.psnr, x, y))),
        "ssim": float(jnp.mean(per_frame(metrics.ssim, x, y))),
        "flicker": float(jnp.mean(flicker(x, y))),
        "size_reduction": lr.size_reduction(x.shape[1:], latent_shape),
    }
