"""The latent report: statistics of an autoencoder's latent space, as pure numpy functions.

A stage-2 model is only as good as the space it generates in (DESIGN.md, principle 6), so a
stage-1 run is judged on its latents as well as on its reconstructions. Every function here takes
arrays the caller has already computed with the encoder (``latentjax eval`` does that; see
``latentjax/eval/autoencoder.py``) and returns numbers or pictures; none touches a model, so each
can be checked on a case with known answers (a linear encoder on Gaussian data).

Shapes: latents are ``[N, h, w, C]`` (NHWC, one row per image); "a unit" is one latent element,
a (position, channel) pair, as in Burda et al. (2015), who count the units of a fully connected
VAE. Statistics are computed in float64.
"""

from __future__ import annotations

import numpy as np

ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2015, section 5.2: Cov_x(E_q[u]) > 10^-2


def _f64(x) -> np.ndarray:
    return np.asarray(x, np.float64)


def channel_stats(latents) -> dict[str, np.ndarray]:
    """Per-channel mean and standard deviation over images and positions. -> {mean, std}: [C]"""
    z = _f64(latents).reshape(-1, np.shape(latents)[-1])  # [N h w, C]
    return {"mean": z.mean(axis=0), "std": z.std(axis=0)}


def scale_factor(latents) -> dict[str, float]:
    """The shift and scale that bring the latents to zero mean and unit variance, over all
    elements at once (Rombach et al. 2022, section 4.3.2 and appendix G: Stable Diffusion's
    0.18215 is 1 / std of its latents). -> {shift, scale, std}: ``(z - shift) * scale`` has unit
    variance."""
    z = _f64(latents)
    std = float(z.std())
    return {"shift": float(z.mean()), "std": std, "scale": 1.0 / max(std, 1e-12)}


def gaussian_kl_per_channel(mean, logvar) -> np.ndarray:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per latent element, in closed form (Kingma & Welling
    2014, appendix B: 0.5 (mu^2 + sigma^2 - 1 - log sigma^2)), averaged over images and
    positions: nats per element of each channel. ``mean``, ``logvar``: [N, h, w, C] -> [C]"""
    mu, lv = _f64(mean), _f64(logvar)
    kl = 0.5 * (np.square(mu) + np.exp(lv) - 1.0 - lv)
    return kl.reshape(-1, kl.shape[-1]).mean(axis=0)


def active_units(posterior_means, threshold: float = ACTIVE_UNIT_THRESHOLD) -> dict:
    """Active units (Burda et al. 2015, eq. 8): a unit u is active when the variance over the
    data of its posterior mean, A_u = Cov_x(E_{q(u|x)}[u]), exceeds ``threshold``. A unit whose
    posterior mean ignores the input carries no information: its posterior has collapsed.

    ``posterior_means``: [N, h, w, C]. -> ``variance`` [h, w, C] (A_u, population variance),
    ``active`` [h, w, C] bool, ``count`` and ``total`` (units), ``per_channel`` [C] (active
    units of each channel) and ``channel_variance`` [C] (A_u averaged over positions).
    """
    mu = _f64(posterior_means)
    variance = mu.var(axis=0)  # [h, w, C]
    active = variance > threshold
    return {
        "variance": variance,
        "active": active,
        "count": int(active.sum()),
        "total": int(active.size),
        "per_channel": active.reshape(-1, active.shape[-1]).sum(axis=0).astype(int),
        "channel_variance": variance.reshape(-1, variance.shape[-1]).mean(axis=0),
    }


def size_reduction(image_shape, latent_shape) -> float:
    """How many times fewer numbers the latent holds than the image: H W C / (h w c). Shapes
    of one example (a leading batch axis of the same size in both cancels)."""
    return float(np.prod(image_shape)) / float(np.prod(latent_shape))


def principal_components(latents, k: int = 3) -> dict[str, np.ndarray]:
    """PCA of the latent vectors (one C-vector per image and position). -> ``components``
    [k, C] (unit rows, by decreasing variance, sign fixed so each row's largest entry is
    positive), ``explained_variance`` [k] (population variance along each), ``ratio`` [k] (of
    the total variance) and ``mean`` [C]. With C < k the missing components are zero."""
    z = _f64(latents).reshape(-1, np.shape(latents)[-1])  # [M, C]
    mean = z.mean(axis=0)
    cov = np.cov(z - mean, rowvar=False, bias=True).reshape(z.shape[1], z.shape[1])
    values, vectors = np.linalg.eigh(cov)  # ascending
    order = np.argsort(values)[::-1][:k]
    comps = vectors[:, order].T  # [min(k, C), C]
    signs = np.sign(comps[np.arange(len(comps)), np.argmax(np.abs(comps), axis=1)])
    comps = comps * signs[:, None]
    explained = np.clip(values[order], 0.0, None)
    pad = k - len(comps)
    comps = np.concatenate([comps, np.zeros((pad, z.shape[1]))])
    explained = np.concatenate([explained, np.zeros(pad)])
    total = max(float(np.clip(values, 0.0, None).sum()), 1e-30)
    return {"components": comps, "explained_variance": explained, "ratio": explained / total,
            "mean": mean}  # fmt: skip


def pca_rgb(latents, pca: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """The latents as a picture: the first three principal components as R, G, B. Each
    component is standardised by its standard deviation over the data and mapped from [-2.5 std,
    2.5 std] to [0, 1] (clipped), so pictures of different images share one colour scale.
    ``latents`` [N, h, w, C] -> float [N, h, w, 3] in [0, 1]."""
    pca = principal_components(latents, 3) if pca is None else pca
    z = _f64(latents)
    proj = np.einsum("nhwc,kc->nhwk", z - pca["mean"], pca["components"])  # [N, h, w, 3]
    std = np.sqrt(pca["explained_variance"])
    proj = np.where(std > 0, proj / np.where(std > 0, std, 1.0), 0.0)
    return np.clip(proj / 5.0 + 0.5, 0.0, 1.0)


def interpolate(z0, z1, ts, kind: str = "linear") -> np.ndarray:
    """Latents on a path from ``z0`` to ``z1`` (any equal shapes) at fractions ``ts`` [T].

    ``linear``: (1 - t) z0 + t z1. ``slerp``: along the great circle between the two flattened
    vectors (Shoemake 1985; White 2016 argues for it with Gaussian latents, whose samples lie
    near a sphere of radius sqrt(dim) that the straight line cuts inside):
    sin((1 - t) W) / sin W z0 + sin(t W) / sin W z1, W the angle between them; it falls back to
    the straight line when the two are (anti)parallel within 1e-7 rad. -> [T, *z0.shape]
    """
    a, b = _f64(z0), _f64(z1)
    if a.shape != b.shape:
        raise ValueError(f"interpolate: shapes differ, {a.shape} vs {b.shape}")
    t = _f64(ts).reshape(-1, *([1] * a.ndim))  # [T, 1, ...]
    if kind == "linear":
        return (1.0 - t) * a + t * b
    if kind != "slerp":
        raise ValueError(f"unknown interpolation {kind!r}; use 'linear' or 'slerp'")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cos = np.clip(np.vdot(a, b) / max(na * nb, 1e-300), -1.0, 1.0)
    omega = np.arccos(cos)
    if np.sin(omega) < 1e-7:
        return (1.0 - t) * a + t * b
    return (np.sin((1.0 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)
