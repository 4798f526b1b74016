"""The photo pans video dataset (``latentjax/data/photo_pans.py``): pans are whole-pixel shifts
of the same pixels, zooms start at a plain crop and grow or shrink about one point, the splits
keep the held-out photographs apart, and the pipeline reads the clips."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from latentjax.data import photo_pans as pp
from latentjax.data import photos
from latentjax.data.pipeline import load_source, make_dataset


def _shift(a: np.ndarray, b: np.ndarray) -> tuple[int, int] | None:
    """The whole-pixel (dy, dx) with b[y, x] == a[y + dy, x + dx] wherever both are defined."""
    for dy in range(-4, 5):
        for dx in range(-4, 5):
            ya, yb = max(dy, 0), max(-dy, 0)
            xa, xb = max(dx, 0), max(-dx, 0)
            h, w = a.shape[0] - abs(dy), a.shape[1] - abs(dx)
            if np.array_equal(a[ya : ya + h, xa : xa + w], b[yb : yb + h, xb : xb + w]):
                return dy, dx
    return None


@pytest.mark.parametrize("i", [0, 2, 4])
def test_a_pan_moves_the_same_pixels_a_whole_step_a_frame(i):
    clip = pp.clip("astronaut", i)
    assert clip.shape == (pp.FRAMES, pp.SIZE, pp.SIZE, 3) and clip.dtype == np.uint8
    steps = {_shift(clip[t], clip[t + 1]) for t in range(pp.FRAMES - 1)}
    assert len(steps) == 1 and None not in steps  # one constant step
    ((dy, dx),) = steps
    assert 1 <= np.hypot(dy, dx) <= 3 * np.sqrt(2)  # PAN_SPEED, rounded per axis


def _centre(frame: np.ndarray, share: float) -> np.ndarray:
    """The central ``share`` of a frame, resized back to the frame's size (bicubic)."""
    side = round(frame.shape[0] * share)
    lo = (frame.shape[0] - side) // 2
    window = Image.fromarray(frame[lo : lo + side, lo : lo + side])
    return np.asarray(window.resize(frame.shape[:2][::-1], Image.Resampling.BICUBIC), np.float64)


@pytest.mark.parametrize("i", [1, 3, 5, 7])
def test_a_zoom_starts_at_a_plain_crop_and_narrows_or_widens_about_its_centre(i):
    image = pp.source("coffee")
    clip = pp.clip("coffee", i)
    first, last = clip[0], clip[-1]
    # Frame 0 is a crop of the photograph itself, pixel for pixel.
    found = np.lib.stride_tricks.sliding_window_view(image, (pp.SIZE, pp.SIZE, 3))[..., 0, :, :, :]
    assert np.all(found == first, axis=(-1, -2, -3)).any()
    # Zoomed in, the last frame sees the first frame's central ZOOM; zoomed out, the reverse.
    zoom_in = np.abs(_centre(first, pp.ZOOM) - last).mean()
    zoom_out = np.abs(_centre(last, pp.ZOOM) - first).mean()
    unrelated = np.abs(_centre(pp.clip("coffee", i + 2)[0], pp.ZOOM) - last).mean()
    assert min(zoom_in, zoom_out) < 0.25 * unrelated, (zoom_in, zoom_out, unrelated)


def test_splits_keep_the_held_out_photographs_apart_and_are_deterministic(tmp_path):
    data_dir = str(tmp_path)
    train, test = (load_source(pp.NAME, s, data_dir) for s in ("train", "test"))
    assert len(train) == pp.SPLIT_SIZES["train"] and len(test) == pp.SPLIT_SIZES["test"]
    held_out = {photos.IMAGE_NAMES.index(n) for n in photos.TEST_IMAGES}
    assert {int(train[k]["label"]) for k in range(0, len(train), 16)}.isdisjoint(held_out)
    assert {int(test[k]["label"]) for k in range(len(test))} == held_out
    np.testing.assert_array_equal(test[3]["video"], pp.clip(photos.TEST_IMAGES[0], 3))
    batch = next(iter(make_dataset(test, global_batch_size=4, image_size=16, shuffle=False)))
    assert batch["video"].shape == (4, pp.FRAMES, 16, 16, 3)
    assert -1.0 <= batch["video"].min() and batch["video"].max() <= 1.0
