"""The moving digits video dataset: built offline as documented, and read by the Grain
pipeline as float clips."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from latentjax.data import digits, moving_digits, pipeline

md = moving_digits


@pytest.fixture(scope="module")
def video_data_dir(tmp_path_factory) -> str:
    return md.prepare_moving_digits(str(tmp_path_factory.mktemp("tfds")))


def stepped_path(start: np.ndarray, velocity: np.ndarray, frames: int, limit: float):
    """The reference the closed form must equal: move one frame at a time and, on leaving
    [0, limit], mirror the position back inside and flip that velocity component."""
    p, v, out = start.astype(np.float64).copy(), velocity.astype(np.float64).copy(), []
    for _ in range(frames):
        out.append(p.copy())
        p = p + v
        for k in range(2):
            while not 0.0 <= p[k] <= limit:
                if p[k] > limit:
                    p[k], v[k] = 2 * limit - p[k], -v[k]
                else:
                    p[k], v[k] = -p[k], -v[k]
    return np.stack(out)


def test_bounce_is_the_stepped_reflection():
    rng = np.random.default_rng(0)
    for _ in range(50):
        start = rng.uniform(0, 16, 2)
        velocity = rng.uniform(-7, 7, 2)
        t = np.arange(40, dtype=np.float64)[:, None]
        np.testing.assert_allclose(
            md.bounce(start + t * velocity, 16.0), stepped_path(start, velocity, 40, 16.0),
            atol=1e-9,
        )  # fmt: skip


def test_clip_is_the_enlarged_digit_moving_at_the_documented_speed():
    images, _ = digits.digit_images()
    for row in (0, 5, 1796):
        video = md.clip(row)
        assert video.shape == (md.FRAMES, md.CANVAS, md.CANVAS, 1) and video.dtype == np.uint8
        glyph = np.asarray(
            Image.fromarray(images[row, ..., 0].astype(np.float32)).resize(
                (md.GLYPH, md.GLYPH), Image.Resampling.BILINEAR
            )
        )
        glyph = np.round(glyph).astype(np.uint8)
        path = md.trajectory(row)
        assert path.min() >= 0 and path.max() <= md.CANVAS - md.GLYPH
        for t, (y, x) in enumerate(path):
            window = video[t, y : y + md.GLYPH, x : x + md.GLYPH, 0]
            np.testing.assert_array_equal(window, glyph)
            assert video[t].sum() == glyph.sum()  # nothing outside the glyph's window
        # Away from walls a step moves the corner by the speed, up to rounding (2 x 0.5 px
        # per axis); a bounce only shortens it.
        steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
        assert steps.max() <= md.SPEED[1] + np.sqrt(2)
        assert np.count_nonzero(steps) >= md.FRAMES // 2  # the digit moves
    assert not np.array_equal(md.trajectory(0), md.trajectory(1))
    np.testing.assert_array_equal(md.clip(7), md.clip(7))  # seeded, not random per call


def test_dataset_round_trip_and_splits(video_data_dir):
    _, labels = digits.digit_images()
    for split, rows in digits.split_indices().items():
        source = pipeline.load_source(md.NAME, split, video_data_dir)
        assert len(source) == md.SPLIT_SIZES[split] == len(rows)
        for i in (0, len(rows) // 2, len(rows) - 1):
            example = source[i]
            np.testing.assert_array_equal(example["video"], md.clip(int(rows[i])))
            assert example["label"] == labels[rows[i]]


@pytest.mark.parametrize("image_size", [None, 16])
def test_pipeline_yields_float_clips(video_data_dir, image_size):
    source = pipeline.load_source(md.NAME, "test", video_data_dir)
    kwargs = {"global_batch_size": 4, "process_index": 0, "process_count": 1}
    batch = next(
        iter(pipeline.make_dataset(source, shuffle=False, image_size=image_size, **kwargs))
    )
    side = image_size or md.CANVAS
    assert set(batch) == {"video", "label"}
    assert batch["video"].shape == (4, md.FRAMES, side, side, 1)
    assert batch["video"].dtype == np.float32
    assert batch["video"].min() >= -1.0 and batch["video"].max() <= 1.0
    expected = np.stack([source[i]["video"] for i in range(4)]).astype(np.float32)
    if image_size:  # every frame resized like an image of the digits dataset
        expected = np.stack([[pipeline.resize(f, side) for f in v] for v in expected])
    np.testing.assert_allclose(batch["video"], expected / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(batch["label"], [source[i]["label"] for i in range(4)])


def test_one_flip_draw_flips_every_frame(video_data_dir):
    source = pipeline.load_source(md.NAME, "train", video_data_dir)
    kwargs = {"global_batch_size": 16, "process_index": 0, "process_count": 1}
    batch = next(iter(pipeline.make_dataset(source, shuffle=False, flip=True, **kwargs)))
    flipped = 0
    for i in range(16):
        original = source[i]["video"].astype(np.float32) / 127.5 - 1.0  # [T, 32, 32, 1]
        as_is = np.allclose(batch["video"][i], original, atol=1e-6)
        mirrored = np.allclose(batch["video"][i], original[:, :, ::-1], atol=1e-6)
        assert as_is != mirrored, i  # all frames one way or all the other
        flipped += mirrored
    assert 0 < flipped < 16
