"""The video DiT (``latentjax/models/video_dit.py``): a one-frame video is an image to it (the
image DiT on the same random weights is the reference), what each attention sees, and the
position embedding over time."""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from latentjax.models.dit import DiT
from latentjax.models.video_dit import VideoDiT, sincos_1d, sincos_3d

SIZE = dict(input_size=4, patch_size=2, in_channels=3, hidden_size=32, num_heads=4)


def _perturb(params, seed: int, scale: float = 0.2):
    """Random weights everywhere (adaLN-Zero starts every block as the identity)."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [a + scale * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(tree, noisy)


def _video(model: VideoDiT, frames: int, seed: int = 0):
    x = jax.random.normal(jax.random.key(seed), (2, frames, 4, 4, 3))
    t, y = jnp.array([3.0, 700.0]), jnp.array([1, 4])
    params = nn.unbox(model.init(jax.random.key(1), x, t, y))
    return _perturb(params, seed + 7), x, t, y


def test_a_one_frame_video_is_an_image_to_the_image_dit():
    image = DiT(depth=2, **SIZE)
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
    t, y = jnp.array([3.0, 700.0]), jnp.array([1, 4])
    params = _perturb(nn.unbox(image.init(jax.random.key(1), x, t, y)), 5)
    video = VideoDiT(frames=1, depth=2, **SIZE)
    mapped = jax.tree.map(lambda a: a, params)
    kernel = params["params"]["x_embedder"]["kernel"]  # [p, p, C, D]: DiT's conv
    mapped["params"]["x_embedder"]["kernel"] = kernel.reshape(-1, kernel.shape[-1])
    chex.assert_trees_all_equal_shapes(
        mapped, nn.unbox(video.init(jax.random.key(1), x[:, None], t, y))
    )
    want = image.apply(params, x, t, y)
    got = video.apply(mapped, x[:, None], t, y)
    chex.assert_shape(got, (2, 1, 4, 4, 3))
    np.testing.assert_allclose(got[:, 0], want, rtol=1e-5, atol=1e-5)


def test_outputs_zero_at_initialisation_and_keeps_the_clip_shape():
    model = VideoDiT(frames=4, depth=2, temporal_patch_size=2, learn_sigma=True, **SIZE)
    x = jnp.ones((2, 4, 4, 4, 3))
    params = model.init(jax.random.key(0), x, jnp.zeros(2), jnp.zeros(2, int))
    out = model.apply(params, x, jnp.zeros(2), jnp.zeros(2, int))
    chex.assert_shape(out, (2, 4, 4, 4, 6))
    assert float(jnp.abs(out).max()) == 0.0  # adaLN-Zero and a zero head


def _changes_frame0(model: VideoDiT) -> bool:
    """Whether changing frame 2 of the input changes the output at frame 0."""
    params, x, t, y = _video(model, 4)
    changed = x.at[:, 2].add(1.0)
    a, b = model.apply(params, x, t, y), model.apply(params, changed, t, y)
    assert not np.allclose(a[:, 2], b[:, 2])  # the changed frame itself always moves
    return not np.allclose(a[:, 0], b[:, 0], atol=1e-6)


@pytest.mark.parametrize(
    ("attention", "depth", "mixes"),
    [("full", 1, True), ("factorised", 1, False), ("factorised", 2, True)],
)
def test_what_each_attention_lets_frames_see(attention, depth, mixes):
    # Factorised: the first block attends within a frame, the second across frames.
    assert _changes_frame0(VideoDiT(frames=4, depth=depth, attention=attention, **SIZE)) is mixes


def test_the_time_embedding_tells_identical_frames_apart():
    model = VideoDiT(frames=3, depth=1, **SIZE)
    params, x, t, y = _video(model, 3)
    still = jnp.repeat(x[:, :1], 3, axis=1)  # a clip of one frame held still
    out = model.apply(params, still, t, y)
    assert not np.allclose(out[:, 0], out[:, 1]) and not np.allclose(out[:, 1], out[:, 2])
    emb = sincos_1d(8, 3)
    np.testing.assert_array_equal(emb[0], 0.0)  # frame 0 adds nothing
    table = sincos_3d(8, 3, 2, 2)
    np.testing.assert_allclose(table[4:8] - table[:4], np.broadcast_to(emb[1], (4, 8)), atol=1e-6)


def test_a_clip_that_patches_do_not_divide_is_refused():
    model = VideoDiT(frames=3, depth=1, temporal_patch_size=2, **SIZE)
    x = jnp.zeros((1, 3, 4, 4, 3))
    with pytest.raises(ValueError, match="not divisible into 2x2x2 patches"):
        model.init(jax.random.key(0), x, jnp.zeros(1), jnp.zeros(1, int))
    bad = VideoDiT(frames=2, depth=1, attention="causal", **SIZE)
    with pytest.raises(ValueError, match="unknown attention"):
        bad.init(jax.random.key(0), jnp.zeros((1, 2, 4, 4, 3)), jnp.zeros(1), jnp.zeros(1, int))


def test_a_rectangular_grid_has_the_square_tables_rows_and_columns():
    from latentjax.models.video_dit import sincos_grid

    square = sincos_grid(16, 6, 6)
    wide = sincos_grid(16, 3, 6)  # the first 3 rows of the 6 x 6 grid
    np.testing.assert_allclose(wide, square[: 3 * 6], atol=1e-6)
    model = VideoDiT(frames=2, depth=1, **SIZE)
    params, _, t, y = _video(model, 2)
    out = model.apply(params, jnp.ones((2, 2, 4, 8, 3)), t, y)  # a 4 x 8 latent
    chex.assert_shape(out, (2, 2, 4, 8, 3))
