"""Losses that align a network's features with a frozen vision representation
(``latentjax/models/representation.py``): REPA for the DiT's hidden states (Yu et al. 2025,
"Representation Alignment for Generation") and VA-VAE's VF loss for the autoencoder's latent
(Yao et al. 2025, "Reconstruction vs. Generation: Taming Optimization Dilemma with Visual
Foundation Models").
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def unit(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / max(||x||, eps) over the last axis (PyTorch's ``F.normalize``)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def repa_loss(projected: jax.Array, features: jax.Array) -> jax.Array:
    """REPA's alignment loss (Yu et al. 2025, eq. 8): minus the cosine similarity between each
    token's projected hidden state and the frozen encoder's feature of the same patch, averaged
    over tokens and the batch. ``projected``, ``features``: [B, N, D]; the features are
    constants (no gradient flows into the frozen encoder)."""
    chex.assert_equal_shape((projected, features))
    features = jax.lax.stop_gradient(features)
    return -jnp.mean(jnp.sum(unit(projected) * unit(features), axis=-1))


def vf_loss(
    projected: jax.Array, features: jax.Array, cos_margin: float, distmat_margin: float
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """VA-VAE's vision-foundation alignment loss (Yao et al. 2025, eq. 1-3), the sum of

    - the marginal cosine similarity loss, mean over positions of
      relu(1 - m1 - cos(z'_ij, f_ij)): each position's projected latent z' points along the
      frozen feature f of its patch, up to the margin m1 = ``cos_margin``;
    - the marginal distance-matrix similarity loss, mean over position pairs of
      relu(|cos(z'_i, z'_j) - cos(f_i, f_j)| - m2): the latent's self-similarity matches the
      features', up to m2 = ``distmat_margin``;

    averaged over the batch. ``projected``, ``features``: [B, h, w, D]; the features are
    constants. Returns (the sum, {"vf_mcos", "vf_mdms"})."""
    chex.assert_equal_shape((projected, features))
    features = jax.lax.stop_gradient(features)
    b, d = projected.shape[0], projected.shape[-1]
    z, f = unit(projected.reshape(b, -1, d)), unit(features.reshape(b, -1, d))  # [B, N, D]
    mcos = jnp.mean(jax.nn.relu(1.0 - cos_margin - jnp.sum(z * f, axis=-1)))
    gram_z = jnp.einsum("bnd,bmd->bnm", z, z)
    gram_f = jnp.einsum("bnd,bmd->bnm", f, f)
    mdms = jnp.mean(jax.nn.relu(jnp.abs(gram_z - gram_f) - distmat_margin))
    return mcos + mdms, {"vf_mcos": mcos, "vf_mdms": mdms}
