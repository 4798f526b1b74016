"""Stage-1 loss pieces against hand computations."""

import jax
import jax.numpy as jnp
import numpy as np

from latentjax.losses import autoencoder as L


def test_reconstruction_sums_pixels_per_example():
    x = jnp.zeros((2, 3, 3, 1))
    y = jnp.ones((2, 3, 3, 1)) * jnp.array([1.0, -2.0])[:, None, None, None]
    np.testing.assert_allclose(L.reconstruction_loss(x, y, "l1"), [9.0, 18.0])
    np.testing.assert_allclose(L.reconstruction_loss(x, y, "l2"), [9.0, 36.0])


def test_linear_warmup():
    got = [float(L.linear_warmup(s, 10)) for s in (0, 5, 10, 20)]
    assert got == [0.0, 0.5, 1.0, 1.0]
    assert float(L.linear_warmup(3, 0)) == 1.0
    assert float(L.linear_warmup(3, 4, start_step=5)) == 0.0


def test_hinge_signs():
    # A perfect discriminator (real >= 1, fake <= -1) has zero loss; the reverse has loss 2.
    assert float(L.hinge_d_loss(jnp.full(4, 1.5), jnp.full(4, -1.5))) == 0.0
    assert float(L.hinge_d_loss(jnp.full(4, -1.0), jnp.full(4, 1.0))) == 2.0
    # The generator loss falls as the discriminator rates fakes as more real.
    assert float(L.hinge_g_loss(jnp.full(4, 2.0))) < float(L.hinge_g_loss(jnp.full(4, -2.0)))
    # Gradient of the discriminator loss pushes real logits up and fake logits down.
    g_real, g_fake = jax.grad(L.hinge_d_loss, argnums=(0, 1))(jnp.zeros(2), jnp.zeros(2))
    assert (g_real < 0).all() and (g_fake > 0).all()


def test_adaptive_weight_against_hand_computation():
    g_rec = jnp.array([[3.0, 4.0]])  # norm 5
    g_adv = jnp.array([[0.0, 2.0]])  # norm 2
    np.testing.assert_allclose(float(L.adaptive_weight(g_rec, g_adv, eps=0.0)), 2.5)
    np.testing.assert_allclose(float(L.adaptive_weight(g_rec, g_adv)), 5.0 / (2.0 + 1e-4))
    assert float(L.adaptive_weight(g_rec, jnp.zeros((1, 2)), max_weight=10.0)) == 10.0
    # No gradient flows through the weight.
    assert float(jax.grad(lambda a: L.adaptive_weight(g_rec, a, eps=0.0))(g_adv).sum()) == 0.0
