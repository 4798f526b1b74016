"""The video demo's judge (``latentjax/eval/motion.py``): paths of known shapes, and the
per-frame classifier on the real moving digits."""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from latentjax.data import moving_digits
from latentjax.data.pipeline import split_arrays
from latentjax.eval import motion
from latentjax.eval.images import to_uint8


def _square(path, size: int = 16, side: int = 3) -> np.ndarray:
    """One clip [T, size, size, 1] of a bright square whose top-left corner follows ``path``."""
    clip = np.zeros((len(path), size, size, 1), np.uint8)
    for t, (r, c) in enumerate(path):
        clip[t, r : r + side, c : c + side] = 200
    return clip


def test_a_square_at_constant_velocity_has_that_speed_and_no_acceleration():
    path = [(1 + 2 * t, 2 + t) for t in range(5)]  # 2 px down, 1 px right a frame
    clips = _square(path)[None]
    centre = motion.centres(clips)
    np.testing.assert_allclose(centre[0], np.array(path) + 1.0)  # the middle of a 3 px side
    np.testing.assert_allclose(motion.speeds(centre), np.sqrt(5.0))
    np.testing.assert_allclose(motion.accelerations(centre), 0.0, atol=1e-12)


def test_the_report_sets_jitter_apart_from_steady_motion():
    rng = np.random.default_rng(0)
    steady = np.stack([_square([(2 + t, 3 + t) for t in range(6)]) for _ in range(4)])
    jitter = np.stack(
        [_square([tuple(rng.integers(0, 12, 2)) for _ in range(6)]) for _ in range(4)]
    )
    same = motion.motion_report(steady, steady)
    assert same["speed_w1"] == 0.0 and same["acceleration_w1"] == 0.0
    np.testing.assert_allclose(same["real_speed"], np.sqrt(2.0))
    apart = motion.motion_report(steady, jitter)
    assert apart["samples_acceleration"] > 1.0 and apart["real_acceleration"] < 1e-9
    assert apart["acceleration_w1"] == pytest.approx(apart["samples_acceleration"])
    # An empty frame has no centre: left out, not counted as a jump.
    gap = steady.copy()
    gap[0, 3] = 0
    assert np.isnan(motion.centres(gap)[0, 3]).all()
    assert np.isfinite(motion.motion_report(steady, gap)["samples_speed"])


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    data = ml_collections.ConfigDict(
        {"name": moving_digits.NAME, "data_dir": str(tmp_path_factory.mktemp("tfds")),
         "image_size": 16, "crop": "none", "train_split": "train", "eval_split": "test"}
    )  # fmt: skip
    out = {}
    for split in ("train", "test"):
        arrays = split_arrays(data, split)
        out[split] = (to_uint8(np.asarray(arrays["video"])), np.asarray(arrays["label"]))
    return out


def test_the_frame_classifier_reads_real_held_out_clips_and_not_wrong_labels(clips):
    (train, train_y), (test, test_y) = clips["train"], clips["test"]
    judge = motion.FrameClassifier(train, train_y, glyph=8)
    assert judge.accuracy(test, test_y) > 0.97  # measured 0.99: the ceiling samples face
    assert judge.accuracy(test, (test_y + 1) % 10) < 0.1
    # Where the digit is on the canvas does not matter: the same glyph moved keeps its crop.
    glyph = moving_digits.glyphs()[7][::2, ::2]  # 8 x 8
    frames = np.zeros((2, 16, 16, 1), np.uint8)
    frames[0, 2:10, 3:11, 0] = glyph
    frames[1, 7:15, 5:13, 0] = glyph
    a, b = motion.crops(frames, 8)
    np.testing.assert_allclose(a, b, atol=1e-9)
    assert a.max() > 0


def test_diversity_is_one_for_real_clips_and_zero_for_a_collapse(clips):
    (test, test_y) = clips["test"]
    same = motion.diversity_report(test, test_y, test, test_y, glyph=8)
    assert same == {
        "shape_variance_ratio": 1.0,
        "shape_variance_ratio_min": 1.0,
        "velocity_variance_ratio": 1.0,
    }
    # Every clip of a digit replaced by that digit's first clip: no variety of shape is left.
    first = {int(c): int(np.flatnonzero(test_y == c)[0]) for c in np.unique(test_y)}
    collapsed = test[[first[int(c)] for c in test_y]]
    flat = motion.diversity_report(test, test_y, collapsed, test_y, glyph=8)
    assert flat["shape_variance_ratio"] < 1e-20 and flat["shape_variance_ratio_min"] < 1e-20
    # Every clip moving as the first does: no variety of motion.
    still = test[[0] * len(test)]
    assert (
        motion.diversity_report(test, test_y, still, test_y, 8)["velocity_variance_ratio"] < 1e-20
    )


def test_velocity_variance_scales_with_the_square_of_the_speed():
    """Squares moving at (1, v) and (1, -v) px per frame, v in {1, 2}: the velocity variance is
    v^2 (the column velocity is +-v with equal weight), so doubling v gives a ratio of 4."""

    def clips(v):
        return np.stack(
            [_square([(1 + t, 6 + sign * v * t) for t in range(4)], size=24) for sign in (1, -1)]
        )

    labels = np.zeros(2, np.int64)
    got = motion.diversity_report(clips(1), labels, clips(2), labels, glyph=3)
    np.testing.assert_allclose(got["velocity_variance_ratio"], 4.0, rtol=1e-12)
