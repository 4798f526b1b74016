"""The four bottlenecks (KL, AE, VQ, FSQ): values and gradients against hand computations in
float64 numpy, and their wiring into the autoencoder."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentjax.models.autoencoder import AutoencoderKL
from latentjax.models.bottleneck import (
    FSQ,
    DiagonalGaussian,
    VectorQuantizer,
    codebook_stats,
    moment_channels,
    restart_dead_codes,
    rotate_to,
)


def key(seed: int) -> jax.Array:
    return jax.random.key(seed, impl="rbg")  # compiles faster on CPU (see test_autoencoder)


def vq_setup(k=6, d=3, shape=(2, 2, 3)):
    vq = VectorQuantizer(codebook_size=k, dim=d)
    z = jax.random.normal(key(0), (*shape, d))
    # A codebook on the data's scale, so the nearest codes differ between vectors.
    codebook = np.asarray(jax.random.normal(key(2), (k, d)))
    params = {"params": {"embedding": jnp.asarray(codebook)}}
    return vq, np.asarray(z, np.float64), codebook.astype(np.float64), params


def test_vq_nearest_codes_and_losses_against_numpy():
    vq, z, codebook, params = vq_setup()
    out = vq.apply(params, jnp.asarray(z, jnp.float32))
    dist = ((z[..., None, :] - codebook) ** 2).sum(-1)  # [B, h, w, K]
    idx = dist.argmin(-1)
    np.testing.assert_array_equal(out.indices, idx)
    q = codebook[idx]
    np.testing.assert_allclose(out.mean, q, rtol=1e-5, atol=1e-6)  # forward value is the code
    # VQ-VAE eq. 3, summed over latent elements per example: both terms equal |z - q|^2 in value.
    expected = ((z - q) ** 2).reshape(2, -1).sum(1)
    np.testing.assert_allclose(out.terms()["codebook"], expected, rtol=1e-5)
    np.testing.assert_allclose(out.terms()["commitment"], expected, rtol=1e-5)
    np.testing.assert_array_equal(vq.apply(params, out.mean, method=vq.snap), out.mean)


def test_vq_straight_through_and_loss_gradients():
    vq, z, codebook, params = vq_setup()
    w = np.asarray(jax.random.normal(key(3), z.shape))

    def decoder_side(z):  # a linear "decoder" loss on the quantised latent
        return jnp.sum(w * vq.apply(params, z).mean)

    # Straight-through: the encoder receives the decoder's gradient unchanged (eq. 3's sg).
    g = jax.grad(decoder_side)(jnp.asarray(z, jnp.float32))
    np.testing.assert_allclose(g, w, rtol=1e-6)

    # The codebook loss moves only the codes: d/de |sg(z) - e|^2 = 2 (e - z) summed over the
    # vectors assigned to e; the commitment loss moves only the encoder: 2 (z - q).
    def losses(p, z):
        t = vq.apply(p, z).terms()
        return t["codebook"].sum(), t["commitment"].sum()

    zf = jnp.asarray(z, jnp.float32)
    g_cb = jax.grad(lambda p: losses(p, zf)[0])(params)["params"]["embedding"]
    g_cm_codes = jax.grad(lambda p: losses(p, zf)[1])(params)["params"]["embedding"]
    g_cm_z = jax.grad(lambda z: losses(params, z)[1])(zf)
    g_cb_z = jax.grad(lambda z: losses(params, z)[0])(zf)
    idx = ((z[..., None, :] - codebook) ** 2).sum(-1).argmin(-1).reshape(-1)
    flat = z.reshape(-1, z.shape[-1])
    expected = np.zeros_like(codebook)
    np.add.at(expected, idx, 2 * (codebook[idx] - flat))
    np.testing.assert_allclose(g_cb, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g_cm_z, 2 * (z - codebook[idx].reshape(z.shape)), rtol=1e-4)
    assert float(jnp.abs(g_cm_codes).max()) == 0.0
    assert float(jnp.abs(g_cb_z).max()) == 0.0


def test_rotation_trick_value_and_gradient():
    # Fifty et al. 2024: forward value q; gradient (|q|/|e|) R^T w with R the rotation taking
    # e/|e| to q/|q|, built here explicitly in float64.
    rng = np.random.default_rng(0)
    e, q, w = (rng.normal(size=5) for _ in range(3))
    out = rotate_to(jnp.asarray(e, jnp.float32), jnp.asarray(q, jnp.float32))
    np.testing.assert_allclose(out, q, rtol=1e-5, atol=1e-6)
    e_hat, q_hat = e / np.linalg.norm(e), q / np.linalg.norm(q)
    r = (e_hat + q_hat) / np.linalg.norm(e_hat + q_hat)
    rot = np.eye(5) - 2 * np.outer(r, r) + 2 * np.outer(q_hat, e_hat)
    np.testing.assert_allclose(rot @ e_hat, q_hat, atol=1e-12)
    np.testing.assert_allclose(rot.T @ rot, np.eye(5), atol=1e-12)  # a rotation
    g = jax.grad(lambda e: jnp.sum(w * rotate_to(e, jnp.asarray(q, jnp.float32))))(
        jnp.asarray(e, jnp.float32)
    )
    expected = np.linalg.norm(q) / np.linalg.norm(e) * rot.T @ w
    np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(g, w)  # not the straight-through gradient


def test_vq_rotation_estimator_in_the_quantiser():
    vq, z, codebook, params = vq_setup()
    rot = VectorQuantizer(codebook_size=6, dim=3, estimator="rotation")
    out = rot.apply(params, jnp.asarray(z, jnp.float32))
    np.testing.assert_allclose(out.mean, vq.apply(params, jnp.asarray(z, jnp.float32)).mean, 1e-5)
    with pytest.raises(ValueError, match="estimator"):
        VectorQuantizer(codebook_size=6, dim=3, estimator="gumbel").init(key(0), jnp.zeros((1, 3)))


def test_codebook_stats():
    uniform = jnp.arange(8).reshape(2, 2, 2)  # each of 8 codes once, out of 16
    s = codebook_stats(uniform, 16)
    assert float(s["codebook_usage"]) == 0.5
    np.testing.assert_allclose(float(s["perplexity"]), 8.0, rtol=1e-6)
    s = codebook_stats(jnp.zeros((2, 2, 2), jnp.int32), 16)  # collapsed
    assert float(s["codebook_usage"]) == 1 / 16
    np.testing.assert_allclose(float(s["perplexity"]), 1.0, rtol=1e-6)
    p = np.array([3, 1]) / 4  # two codes used 3:1
    s = codebook_stats(jnp.array([0, 0, 0, 1]), 4)
    np.testing.assert_allclose(float(s["perplexity"]), np.exp(-(p * np.log(p)).sum()), 1e-6)


@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (3, 4), (2,)])
def test_fsq_lands_on_its_levels(levels):
    fsq = FSQ(levels)
    assert fsq.codebook_size == int(np.prod(levels))
    z = 3.0 * jax.random.normal(key(4), (64, 3, 3, len(levels)))
    out = fsq.apply({}, z)
    q = np.asarray(out.mean, np.float64)
    for i, n in enumerate(levels):
        half = n // 2
        grid = np.arange(-half, -half + n) / half  # n values, including 0
        assert grid.size == n and 0.0 in grid
        # every output is one of the channel's n grid values, and all n are reached
        assert np.abs(q[..., i][..., None] - grid).min(-1).max() < 1e-6
        assert len(np.unique(np.round(q[..., i] * half))) == n
    assert out.terms() == {}
    # zero maps to the zero code
    np.testing.assert_array_equal(fsq.apply({}, jnp.zeros((1, 1, 1, len(levels)))).mean, 0.0)
    # snapping is idempotent on outputs and lands on the grid from anywhere
    np.testing.assert_array_equal(fsq.apply({}, out.mean, method=fsq.snap), out.mean)
    snapped = fsq.apply({}, 5 * z, method=fsq.snap)
    np.testing.assert_array_equal(fsq.apply({}, snapped, method=fsq.snap), snapped)


def test_fsq_implicit_codebook_indices_are_a_bijection():
    levels = (3, 4, 2)
    fsq = FSQ(levels)
    grids = [np.arange(-(n // 2), -(n // 2) + n) / (n // 2) for n in levels]
    points = np.stack(np.meshgrid(*grids, indexing="ij"), -1).reshape(1, -1, 1, len(levels))
    idx = np.asarray(fsq.apply({}, jnp.asarray(points, jnp.float32), method=fsq.indices))
    assert sorted(idx.reshape(-1).tolist()) == list(range(24))


def test_fsq_straight_through_gradient():
    # d/dz of round(h tanh(z + b) - o) / (L // 2) under the straight-through estimator is
    # h (1 - tanh^2(z + b)) / (L // 2).
    levels = (5, 4)
    fsq = FSQ(levels)
    z = np.linspace(-2, 2, 12).reshape(1, 3, 2, 2)
    g = jax.grad(lambda z: fsq.apply({}, z).mean.sum())(jnp.asarray(z, jnp.float32))
    lv = np.array(levels, np.float64)
    h = (lv - 1) * (1 - 1e-3) / 2
    b = np.arctanh(np.where(lv % 2 == 0, 0.5, 0.0) / h)
    expected = h * (1 - np.tanh(z + b) ** 2) / np.floor(lv / 2)
    np.testing.assert_allclose(g, expected, rtol=1e-4)


def test_fsq_rejects_bad_levels():
    with pytest.raises(ValueError, match="levels"):
        FSQ((1, 5)).apply({}, jnp.zeros((1, 1, 1, 2)))
    with pytest.raises(ValueError, match="channels"):
        FSQ((5, 5)).apply({}, jnp.zeros((1, 1, 1, 3)))


def test_moment_channels():
    assert moment_channels("kl", 4) == 8
    assert [moment_channels(b, 4) for b in ("ae", "vq", "fsq")] == [4, 4, 4]
    with pytest.raises(ValueError, match="bottleneck"):
        moment_channels("vae", 4)


def tiny(bottleneck, ch=8, ch_mult=(1, 2), **kw):
    return AutoencoderKL(
        ch=ch,
        ch_mult=ch_mult,
        num_res_blocks=1,
        z_channels=3,
        in_channels=1,
        num_groups=4,
        embed_dim=3,
        bottleneck=bottleneck,
        codebook_size=16,
        fsq_levels=(5, 5, 4),
        **kw,
    )


RNGS = {"params": key(0), "sample": key(1)}


@pytest.mark.parametrize("bottleneck", ["kl", "ae", "vq", "fsq"])
def test_bottleneck_in_the_autoencoder_shapes_and_names(bottleneck):
    model = tiny(bottleneck)
    x = jax.ShapeDtypeStruct((2, 8, 8, 1), jnp.float32)
    variables = nn.unbox(jax.eval_shape(model.init, RNGS, x))["params"]
    moments = 6 if bottleneck == "kl" else 3
    assert variables["encoder"]["conv_out"]["kernel"].shape[-1] == moments
    assert variables["quant_conv"]["kernel"].shape == (1, 1, moments, moments)
    assert ("quantize" in variables) == (bottleneck == "vq")
    if bottleneck == "vq":
        assert variables["quantize"]["embedding"].shape == (16, 3)

    def forward(x):
        x_hat, post = model.apply(variables_init(model), x, rngs=RNGS)
        return x_hat, post, post.terms()

    x_hat, post, terms = jax.eval_shape(forward, x)
    assert x_hat.shape == x.shape
    assert post.mode().shape == (2, 4, 4, 3)
    assert post.mean.shape == (2, 4, 4, 3)
    expected_terms = {"kl": {"kl"}, "ae": set(), "vq": {"codebook", "commitment"}, "fsq": set()}
    assert set(terms) == expected_terms[bottleneck]
    for v in terms.values():
        assert v.shape == (2,)


def variables_init(model):
    return model.init(RNGS, jnp.zeros((1, 8, 8, 1)))


@pytest.mark.parametrize("bottleneck", ["vq", "fsq"])
def test_encoder_gets_the_decoders_gradient(bottleneck):
    """Through the quantiser (straight-through) the reconstruction loss reaches the encoder."""
    model = tiny(bottleneck, ch=4, ch_mult=(1,))
    x = jax.random.uniform(key(5), (2, 4, 4, 1), minval=-1, maxval=1)
    params = nn.unbox(jax.jit(model.init)(RNGS, x))

    @jax.jit
    def encoder_grad(params):
        def rec(p):
            x_hat, _ = model.apply(p, x, sample=False)
            return jnp.sum(jnp.abs(x_hat - x))  # no VQ loss terms: only the decoder's path

        return jax.grad(rec)(params)["params"]["encoder"]["conv_in"]["kernel"]

    g = encoder_grad(params)
    assert float(jnp.abs(g).max()) > 0 and np.isfinite(np.asarray(g)).all()


def test_decode_snaps_to_the_codebook():
    """``decode`` (the sampler's path) quantises a continuous latent first, as latent-diffusion's
    VQModelInterface.decode; the training forward decodes the quantised latent as is."""
    model = tiny("vq", ch=4, ch_mult=(1,))
    x = jax.random.uniform(key(5), (2, 4, 4, 1), minval=-1, maxval=1)
    params = nn.unbox(jax.jit(model.init)(RNGS, x))
    z = jax.random.normal(key(6), (2, 4, 4, 3)) * 0.1

    @jax.jit
    def run(params):
        snapped = model.apply(params, z, method=lambda m, z: m.quantize.snap(z))
        return (
            model.apply(params, z, method=model.decode),
            model.apply(params, snapped, method=lambda m, z: m._decode(z)),
            model.apply(params, z, method=lambda m, z: m._decode(z)),
            snapped,
        )

    decoded, decoded_snapped, decoded_raw, snapped = run(params)
    codebook = np.asarray(params["params"]["quantize"]["embedding"])
    flat = np.asarray(snapped).reshape(-1, 3)
    assert np.abs(flat[:, None, :] - codebook[None]).sum(-1).min(-1).max() == 0.0
    np.testing.assert_allclose(decoded, decoded_snapped, rtol=1e-6, atol=1e-6)
    assert not np.allclose(decoded, decoded_raw)


def test_kl_posterior_interface():
    q = DiagonalGaussian(jnp.ones((2, 2, 2, 3)), jnp.zeros((2, 2, 2, 3)))
    assert set(q.terms()) == {"kl"}
    np.testing.assert_allclose(q.terms()["kl"], [6.0, 6.0])  # 0.5 per element, 12 elements
    np.testing.assert_allclose(q.stats()["posterior_std"], 1.0)


def test_dead_code_restart_against_hand_computation():
    """usage <- decay usage + (1 - decay) counts; codes whose average falls below the threshold
    become encoder outputs of the batch and restart at usage 2 threshold; the others stay."""
    codebook = jnp.arange(8.0).reshape(4, 2)
    usage = jnp.array([0.5, 2.0, 1.5, 0.0])
    indices = jnp.array([[0, 1], [1, 2]])  # counts 1, 2, 1, 0
    candidates = 100.0 + jnp.arange(8.0).reshape(2, 2, 2)  # four encoder outputs
    new, new_usage, restarted = restart_dead_codes(
        codebook, usage, indices, candidates, key(7), decay=0.9, threshold=1.0
    )
    averaged = 0.9 * np.array([0.5, 2.0, 1.5, 0.0]) + 0.1 * np.array([1, 2, 1, 0])
    dead = averaged < 1.0  # codes 0 and 3
    np.testing.assert_array_equal(restarted, dead)
    np.testing.assert_allclose(new_usage, np.where(dead, 2.0, averaged), rtol=1e-6)
    np.testing.assert_array_equal(new[~dead], codebook[~dead])
    outputs = np.asarray(candidates).reshape(-1, 2)
    for code in np.asarray(new)[dead]:
        assert (outputs == code).all(axis=1).any(), code
