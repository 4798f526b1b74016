"""Stage-1 loss pieces against hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentjax.losses import autoencoder as L
from latentjax.losses import perceptual as P


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


def test_non_saturating_values_and_signs():
    # softplus(-D(x)) + softplus(D(G(z))), halved: at logits 0 each term is log 2.
    np.testing.assert_allclose(
        float(L.non_saturating_d_loss(jnp.zeros(3), jnp.zeros(3))), np.log(2)
    )
    real, fake = jnp.array([2.0, -1.0]), jnp.array([0.5, -3.0])
    expected = 0.5 * (
        np.mean(np.log1p(np.exp(-np.array([2.0, -1.0])))) + np.mean(np.log1p(np.exp([0.5, -3.0])))
    )
    np.testing.assert_allclose(float(L.non_saturating_d_loss(real, fake)), expected, rtol=1e-6)
    np.testing.assert_allclose(
        float(L.non_saturating_g_loss(fake)), np.mean(np.log1p(np.exp([-0.5, 3.0]))), rtol=1e-6
    )
    # Discriminator: push real logits up, fake logits down. Generator: push fake logits up,
    # and (unlike the saturating -log(1 - D)) with a large gradient when D rejects the fakes.
    g_real, g_fake = jax.grad(L.non_saturating_d_loss, argnums=(0, 1))(jnp.zeros(2), jnp.zeros(2))
    assert (g_real < 0).all() and (g_fake > 0).all()
    g_gen = jax.grad(L.non_saturating_g_loss)(jnp.array([-8.0, 0.0]))
    assert (g_gen < 0).all()
    np.testing.assert_allclose(g_gen[0], -0.5 / (1 + np.exp(-8.0)), rtol=1e-5)  # ~ -1/2
    # Hinge generator: gradient -1/n on every fake logit.
    np.testing.assert_allclose(jax.grad(L.hinge_g_loss)(jnp.zeros(4)), -0.25 * np.ones(4))


def test_gan_loss_dispatch():
    r, f = jnp.array([0.3, -2.0]), jnp.array([1.5, -0.2])
    assert float(L.d_loss("hinge", r, f)) == float(L.hinge_d_loss(r, f))
    assert float(L.d_loss("non_saturating", r, f)) == float(L.non_saturating_d_loss(r, f))
    assert float(L.g_loss("non_saturating", f)) == float(L.non_saturating_g_loss(f))
    for fn in (lambda: L.d_loss("wgan", r, f), lambda: L.g_loss("wgan", f)):
        with pytest.raises(ValueError, match="GAN loss"):
            fn()


def test_r1_against_closed_forms():
    x = jax.random.normal(jax.random.key(0), (3, 4, 4, 2))
    w = jax.random.normal(jax.random.key(1), (4, 4, 2))
    # Linear D(x) = <w, x>: grad = w for every example, R1 = |w|^2.
    linear = lambda im: jnp.sum(im * w, axis=(1, 2, 3))  # noqa: E731
    r1 = jax.jit(L.r1_penalty, static_argnums=0)
    np.testing.assert_allclose(float(r1(linear, x)), float(jnp.sum(w**2)), rtol=1e-5)
    # A patch map D(x)[b, i, j] = a * x[b, i, j, 0]^2 / 2: summed per example, grad = a x on
    # channel 0, so R1 = a^2 mean_b sum x_0^2.
    a = 3.0
    patches = lambda im: 0.5 * a * im[..., :1] ** 2  # noqa: E731
    expected = a**2 * np.mean(np.sum(np.asarray(x[..., 0]) ** 2, axis=(1, 2)))
    np.testing.assert_allclose(float(r1(patches, x)), expected, rtol=1e-5)


def test_lecam_against_closed_form():
    real, fake = jnp.array([1.0, 3.0]), jnp.array([-2.0, 0.0])
    ema_real, ema_fake = jnp.array(0.5), jnp.array(-1.0)
    # E (D(x) - alpha_F)^2 + E (D(G(z)) - alpha_R)^2 = mean(4, 16) + mean(6.25, 0.25)
    np.testing.assert_allclose(float(L.lecam_penalty(real, fake, ema_real, ema_fake)), 10 + 3.25)
    g_ema = jax.grad(lambda e: L.lecam_penalty(real, fake, e, ema_fake))(ema_real)
    assert float(g_ema) == 0.0  # the anchors are constants


def test_free_bits_kl():
    rng = np.random.default_rng(0)
    kl = jnp.asarray(rng.uniform(0, 0.2, size=(4, 3, 3, 2)), jnp.float32)
    # 0 free bits: the batch mean of the summed KL.
    np.testing.assert_allclose(
        float(L.free_bits_kl(kl, 0.0)), float(kl.reshape(4, -1).sum(1).mean()), rtol=1e-6
    )
    # Channel means below the floor are charged at the floor: h w sum_j max(K_j, lambda).
    per_channel = np.asarray(kl).reshape(-1, 2).mean(0)
    lam = float(per_channel.mean())  # between the two channel means
    expected = 9 * np.maximum(per_channel, lam).sum()
    np.testing.assert_allclose(float(L.free_bits_kl(kl, lam)), expected, rtol=1e-6)
    # No gradient reaches a channel held at the floor.
    g = jax.grad(lambda k: L.free_bits_kl(k, 1.0))(kl)
    assert float(jnp.abs(g).max()) == 0.0


def test_warmup_with_start_step():
    got = [float(L.linear_warmup(s, 4, start_step=2)) for s in (0, 2, 3, 6, 100)]
    assert got == [0.0, 0.0, 0.25, 1.0, 1.0]


def test_haar_is_orthonormal_and_its_loss():
    x = jax.random.normal(jax.random.key(2), (2, 8, 8, 3))
    coeffs = jax.jit(P.haar_coefficients, static_argnums=1)(x, 3)
    assert [c.shape for c in coeffs] == [(2, 4, 4, 9), (2, 2, 2, 9), (2, 1, 1, 9), (2, 1, 1, 3)]
    # Parseval: an orthonormal transform keeps the energy of every example.
    energy = sum(jnp.sum(c**2, axis=(1, 2, 3)) for c in coeffs)
    np.testing.assert_allclose(energy, jnp.sum(x**2, axis=(1, 2, 3)), rtol=1e-5)
    haar_loss = jax.jit(P.haar_loss)
    assert float(jnp.abs(haar_loss(x, x)).max()) == 0.0
    # A constant offset c lives only in the last approximation: 3 channels x |c| x 8 (the
    # orthonormal scaling of an 8x8 mean).
    np.testing.assert_allclose(haar_loss(x, x + 0.5), [0.5 * 8 * 3] * 2, rtol=1e-5)
    # One level on a 2x2 image by hand: [[a, b], [c, d]] -> (a+b+c+d)/2, ...
    img = jnp.array([1.0, 2.0, 3.0, 5.0]).reshape(1, 2, 2, 1)
    ll, det = P.haar_level(img)
    np.testing.assert_allclose(ll.ravel(), [5.5])
    np.testing.assert_allclose(
        det.ravel(), [(1 - 2 + 3 - 5) / 2, (1 + 2 - 3 - 5) / 2, (1 - 2 - 3 + 5) / 2]
    )


def test_fft_amplitude_loss():
    x = jax.random.normal(jax.random.key(3), (2, 8, 8, 1))
    # Blind to circular translation, which changes only the phase.
    shifted = jnp.roll(x, (2, 3), axis=(1, 2))
    fft_loss = jax.jit(P.fft_amplitude_loss)
    np.testing.assert_allclose(fft_loss(x, shifted), [0.0, 0.0], atol=1e-4)
    # Against zero: the L1 of the amplitudes; a constant c has one DC amplitude c * sqrt(HW).
    const = jnp.full((1, 8, 8, 1), 0.25)
    np.testing.assert_allclose(fft_loss(const, 0 * const), [0.25 * 8], rtol=1e-6)


def test_lpips_hook_with_a_known_feature_map():
    # Features = the image itself (one layer, one "channel" group of 2): unit-normalised pixel
    # vectors. x = (1, 0), y = (0, 1) everywhere: |x/|x| - y/|y||^2 = 2 per position.
    x = jnp.stack([jnp.ones((1, 2, 2)), jnp.zeros((1, 2, 2))], -1)
    y = x[..., ::-1]
    feats = lambda im: [im]  # noqa: E731
    np.testing.assert_allclose(P.lpips_distance(feats, x, y), [2.0], rtol=1e-6)
    heads = [jnp.array([0.25, 1.0])]  # learnt channel weights
    np.testing.assert_allclose(P.lpips_distance(feats, x, y, heads), [1.25], rtol=1e-6)
    # Scale of a feature vector does not matter; the loss uses LPIPS x pixel elements.
    np.testing.assert_allclose(P.lpips_distance(feats, x, 3 * x), [0.0], atol=1e-6)
    np.testing.assert_allclose(P.perceptual_loss("lpips", x, y, feats), [2.0 * 8], rtol=1e-6)
    with pytest.raises(ValueError, match="feature network"):
        P.perceptual_loss("lpips", x, y)
    with pytest.raises(ValueError, match="perceptual"):
        P.perceptual_loss("vgg", x, y)


def _toy_images(seed: int = 0) -> jax.Array:
    return jnp.tanh(jax.random.normal(jax.random.key(seed), (2, 8, 8, 3)))


def test_equivariance_transform_is_the_rotation_and_the_downscale():
    """Quarter turns are numpy's rot90 in the (H, W) plane (the traced turn count picks them);
    the down-scale keeps a constant image constant and halves the side at factor 0.5."""
    x = np.asarray(_toy_images())
    for k in range(4):
        np.testing.assert_array_equal(
            L.equivariance_transform(x, 1.0, jnp.int32(k)), np.rot90(x, k, axes=(1, 2))
        )
    flat = L.equivariance_transform(jnp.full((1, 8, 8, 2), 0.3), 0.5, jnp.int32(3))
    assert flat.shape == (1, 4, 4, 2)
    np.testing.assert_allclose(flat, 0.3, rtol=1e-6)
    with pytest.raises(ValueError, match="whole side"):
        L.equivariance_transform(x, 0.3, jnp.int32(0))


def test_equivariance_loss_is_zero_exactly_for_an_equivariant_autoencoder():
    """EQ-VAE's term vanishes for an autoencoder that reconstructs and commutes with tau: a
    per-position linear map A and its inverse (rescaling and rotating act on positions only).
    An autoencoder that reconstructs as well but is not equivariant (it rolls the latent one
    position and back) is charged for every scaled or rotated tau."""
    x = _toy_images()
    a = jnp.array([[1.0, 0.5, 0.0], [0.2, 1.0, -0.3], [0.0, 0.4, 2.0]])
    a_inv = jnp.linalg.inv(a)
    enc = lambda im: im @ a  # noqa: E731
    dec = lambda z: z @ a_inv  # noqa: E731
    roll_enc = lambda im: jnp.roll(im @ a, 1, axis=1)  # noqa: E731
    roll_dec = lambda z: jnp.roll(z @ a_inv, -1, axis=1)  # noqa: E731
    scale_of_x = float(L.reconstruction_loss(x, jnp.zeros_like(x)).mean())
    for scale in (1.0, 0.75, 0.5):
        for k in range(4):
            turns = jnp.int32(k)
            eq = L.equivariance_loss(enc, dec, x, scale, turns)
            assert float(eq.max()) < 1e-5 * scale_of_x, (scale, k)
            # The rolled autoencoder reconstructs x exactly (tau = identity) ...
            if scale == 1.0 and k == 0:
                assert float(L.equivariance_loss(roll_enc, roll_dec, x, scale, turns).max()) < (
                    1e-5 * scale_of_x
                )
            else:  # ... and fails every other tau.
                rolled = L.equivariance_loss(roll_enc, roll_dec, x, scale, turns)
                assert float(rolled.min()) > 1e-2 * scale_of_x, (scale, k)
