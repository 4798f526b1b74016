"""Tests for the Diffusion Transformer (latentjax/models/dit.py) on a tiny model."""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentjax.models import dit
from latentjax.parallel.axes import LOGICAL_AXES

B, SIZE, C, P = 2, 8, 4, 2
TINY = dict(input_size=SIZE, patch_size=P, in_channels=C, hidden_size=32, depth=2, num_heads=4)


def _inputs(seed: int = 0):
    kx, kt, ky = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.normal(kx, (B, SIZE, SIZE, C))
    t = jax.random.uniform(kt, (B,), minval=0.0, maxval=1000.0)
    y = jax.random.randint(ky, (B,), 0, 10)
    return x, t, y


@functools.cache
def _init_tiny(num_classes: int):
    """Initialised parameters of the tiny model, shared between tests (init compiles slowly)."""
    model = dit.DiT(**TINY, num_classes=num_classes)
    return nn.unbox(jax.jit(model.init)(jax.random.key(1), *_inputs()))


def _perturb(params, seed: int = 2, scale: float = 0.1):
    # Host-side noise: jax.random per leaf shape costs an XLA compile each on CPU.
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: a + scale * rng.standard_normal(a.shape, np.float32), params)


def test_patchify_roundtrip_and_shapes():
    x = jax.random.normal(jax.random.key(0), (B, 8, 12, 3))
    tokens = dit.patchify(x, 2)
    assert tokens.shape == (B, 4 * 6, 2 * 2 * 3)
    # Token (0, 0) is the top-left 2x2 patch, flattened row-major over (p, q, c).
    np.testing.assert_array_equal(tokens[:, 0], x[:, :2, :2].reshape(B, -1))
    np.testing.assert_array_equal(dit.unpatchify(tokens, 2, 8, 12, 3), x)


@pytest.mark.parametrize("learn_sigma", [False, True])
@pytest.mark.parametrize("num_classes", [0, 10])
def test_output_shape(learn_sigma: bool, num_classes: int):
    model = dit.DiT(**TINY, num_classes=num_classes, learn_sigma=learn_sigma)
    x, t, y = _inputs()
    params = jax.eval_shape(model.init, jax.random.key(0), x, t, y)
    out = jax.eval_shape(model.apply, params, x, t, y)
    assert out.shape == (B, SIZE, SIZE, 2 * C if learn_sigma else C)
    assert ("y_embedder" in params["params"]) == (num_classes > 0)


def test_zero_output_at_init_and_dependence_after_perturbation():
    model = dit.DiT(**TINY, num_classes=10)
    x, t, y = _inputs()
    params = _init_tiny(10)
    apply = jax.jit(model.apply)  # one compile for all calls below; eager dispatch is slow
    out = apply(params, x, t, y)
    np.testing.assert_array_equal(out, np.zeros_like(out))

    # Once the zero-initialised layers are perturbed, the output must depend on x, t and y.
    params = _perturb(params)
    base = apply(params, x, t, y)
    assert float(jnp.abs(base).max()) > 1e-3
    for name, other in {
        "x": apply(params, x + 1.0, t, y),
        "t": apply(params, x, t + 100.0, y),
        "y": apply(params, x, t, (y + 1) % 10),
        "null y": apply(params, x, t, jnp.full_like(y, 10)),
    }.items():
        assert float(jnp.abs(other - base).max()) > 1e-4, f"output does not depend on {name}"


def test_unconditional_ignores_labels():
    model = dit.DiT(**TINY, num_classes=0)
    x, t, y = _inputs()
    # Random parameters straight from the shapes: no init compile needed.
    shapes = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), x, t, y))
    params = _perturb(jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), shapes))
    apply = jax.jit(model.apply)
    np.testing.assert_array_equal(apply(params, x, t, y), apply(params, x, t, jnp.zeros_like(y)))


def test_block_is_identity_at_init():
    block = dit.DiTBlock(hidden_size=32, num_heads=4)
    kx, kc = jax.random.split(jax.random.key(3))
    x = jax.random.normal(kx, (B, 16, 32))
    c = jax.random.normal(kc, (B, 32))
    params = nn.unbox(jax.jit(block.init)(jax.random.key(4), x, c))
    apply = jax.jit(block.apply)
    np.testing.assert_array_equal(apply(params, x, c), x)
    perturbed = apply(_perturb(params), x, c)
    assert float(jnp.abs(perturbed - x).max()) > 1e-3


def test_null_label_row():
    model = dit.DiT(**TINY, num_classes=10)
    params = jax.eval_shape(model.init, jax.random.key(0), *_inputs())
    table = nn.unbox(params)["params"]["y_embedder"]["embedding_table"]["embedding"]
    assert table.shape == (10 + 1, 32)


def test_every_parameter_has_logical_axes():
    model = dit.DiT(**TINY, num_classes=10, learn_sigma=True)
    abstract = jax.eval_shape(model.init, jax.random.key(0), *_inputs())
    specs = nn.get_partition_spec(abstract)
    shapes = nn.unbox(abstract)
    is_spec = lambda s: isinstance(s, jax.sharding.PartitionSpec)
    flat_specs = jax.tree_util.tree_leaves_with_path(specs, is_leaf=is_spec)
    flat_shapes = jax.tree.leaves(shapes)
    assert len(flat_specs) == len(flat_shapes) > 0
    for (path, spec), leaf in zip(flat_specs, flat_shapes, strict=True):
        where = jax.tree_util.keystr(path)
        assert len(spec) == leaf.ndim, f"{where}: spec {spec} for shape {leaf.shape}"
        assert all(n is None or n in LOGICAL_AXES for n in spec), f"{where}: {spec}"


def test_init_scales_follow_dit():
    p = _init_tiny(10)["params"]
    # Patch embedding: xavier-uniform over the flattened kernel [p*p*C, D].
    kernel = np.asarray(p["x_embedder"]["kernel"])
    bound = math.sqrt(6.0 / (P * P * C + 32))
    assert kernel.shape == (P, P, C, 32)
    assert 0.9 * bound < np.abs(kernel).max() <= bound
    np.testing.assert_array_equal(p["x_embedder"]["bias"], 0.0)
    # Label table and timestep MLP: normal(0.02).
    assert abs(float(p["y_embedder"]["embedding_table"]["embedding"].std()) - 0.02) < 0.005
    assert abs(float(p["t_embedder"]["fc1"]["kernel"].std()) - 0.02) < 0.005


def test_timestep_embedding_matches_numpy():
    t = np.array([0.0, 1.5, 250.0, 999.0], np.float32)
    for dim in (8, 9):
        half = dim // 2
        freqs = np.exp(-np.log(10000.0) * np.arange(half) / half)
        args = t[:, None].astype(np.float64) * freqs[None]
        want = np.concatenate([np.cos(args), np.sin(args)], axis=-1)
        if dim % 2:
            want = np.concatenate([want, np.zeros((len(t), 1))], axis=-1)
        got = dit.timestep_embedding(jnp.asarray(t), dim)
        assert got.shape == (len(t), dim)
        np.testing.assert_allclose(got, want, atol=2e-4)


def test_sincos_2d_position_embedding():
    emb = dit.sincos_2d(16, 3)
    assert emb.shape == (9, 16)
    # Token (row 0, col 0) has sin(0) = 0 and cos(0) = 1 halves in both coordinate blocks.
    np.testing.assert_allclose(emb[0], [0.0] * 4 + [1.0] * 4 + [0.0] * 4 + [1.0] * 4)
    # Tokens in the same column share the first (column) half; same row, the second half.
    np.testing.assert_allclose(emb[1, :8], emb[4, :8])
    np.testing.assert_allclose(emb[3, 8:], emb[4, 8:])


def test_dit_kwargs():
    assert dit.dit_kwargs("XL/2") == dict(hidden_size=1152, depth=28, num_heads=16, patch_size=2)
    assert dit.dit_kwargs("S/8") == dict(hidden_size=384, depth=12, num_heads=6, patch_size=8)
    assert dit.dit_kwargs("B/4")["hidden_size"] == 768
    with pytest.raises(ValueError, match="XL"):
        dit.dit_kwargs("Q/3")


def test_wrong_input_size_raises():
    model = dit.DiT(**TINY)
    x, t, y = _inputs()
    with pytest.raises(ValueError, match="built for"):
        jax.eval_shape(model.init, jax.random.key(0), x[:, :6, :6], t, y)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_attention_is_jax_dot_product_attention(dtype):
    # The heads-first form (faster on XLA:CPU) computes the same function, forward and
    # backward, as jax.nn.dot_product_attention.
    q, k, v = (jax.random.normal(jax.random.key(i), (2, 16, 4, 8), dtype) for i in range(3))
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    ours, ref = dit.attention(q, k, v), jax.nn.dot_product_attention(q, k, v)
    assert ours.dtype == ref.dtype == dtype
    np.testing.assert_allclose(np.float32(ours), np.float32(ref), atol=tol)

    def loss(f):
        return lambda q, k, v: jnp.sum(f(q, k, v).astype(jnp.float32) ** 2)

    grads = jax.grad(loss(dit.attention), argnums=(0, 1, 2))(q, k, v)
    expected = jax.grad(loss(jax.nn.dot_product_attention), argnums=(0, 1, 2))(q, k, v)
    for g, e in zip(grads, expected, strict=True):
        np.testing.assert_allclose(np.float32(g), np.float32(e), atol=tol * 10)
