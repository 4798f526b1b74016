"""The alignment losses against closed forms: VA-VAE's margins switch off below the margin."""

import jax
import jax.numpy as jnp
import numpy as np

from latentjax.losses.representation import vf_loss


def two_positions(angle_deg: float) -> tuple[jax.Array, jax.Array]:
    """Features f = e1, e2 at two positions (their Gram matrix is I); the latent's first
    position at ``angle_deg`` from e1, its second along e2. [1, 1, 2, 2] each."""
    a = np.deg2rad(angle_deg)
    f = jnp.asarray([[[[1.0, 0.0], [0.0, 1.0]]]])
    z = jnp.asarray([[[[np.cos(a), np.sin(a)], [0.0, 1.0]]]])
    return z, f


def test_vf_margins_switch_off_below_the_margin():
    """10 degrees: cos(z_0, f_0) = 0.985 > 1 - m1 and |cos(z_0, z_1) - 0| = 0.174 < m2, so both
    terms and their gradient are exactly 0 although z differs from f."""
    z, f = two_positions(10.0)
    total, terms = vf_loss(z, f, cos_margin=0.5, distmat_margin=0.25)
    assert float(total) == 0.0 and float(terms["vf_mcos"]) == 0.0 == float(terms["vf_mdms"])
    grad = jax.grad(lambda z: vf_loss(z, f, 0.5, 0.25)[0])(z)
    assert float(jnp.abs(grad).max()) == 0.0


def test_vf_terms_above_the_margin_are_the_closed_form():
    """80 degrees: mcos = mean over the 2 positions of relu(1 - m1 - cos) = (0.5 - cos 80) / 2;
    mdms = mean over the 4 pairs of relu(|G_z - G_f| - m2) = 2 (sin 80 - 0.25) / 4 (the two
    off-diagonal entries; the diagonal is 1 - 1)."""
    z, f = two_positions(80.0)
    a = np.deg2rad(80.0)
    total, terms = vf_loss(3.0 * z, f, cos_margin=0.5, distmat_margin=0.25)  # scale-free
    np.testing.assert_allclose(float(terms["vf_mcos"]), (0.5 - np.cos(a)) / 2, rtol=1e-6)
    np.testing.assert_allclose(float(terms["vf_mdms"]), (np.sin(a) - 0.25) / 2, rtol=1e-6)
    np.testing.assert_allclose(float(total), (0.5 - np.cos(a) + np.sin(a) - 0.25) / 2, rtol=1e-6)
    # Only the projected latent is pulled: the features are constants.
    grad_f = jax.grad(lambda f: vf_loss(z, f, 0.5, 0.25)[0])(f)
    assert float(jnp.abs(grad_f).max()) == 0.0
