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
    assert judge.accuracy(test, test_y) > 0.85  # measured 0.93: the ceiling samples face
    assert judge.accuracy(test, (test_y + 1) % 10) < 0.1
    # Where the digit is on the canvas does not matter: the same glyph moved keeps its crop.
    glyph = moving_digits.glyphs()[7][::2, ::2]  # 8 x 8
    frames = np.zeros((2, 16, 16, 1), np.uint8)
    frames[0, 2:10, 3:11, 0] = glyph
    frames[1, 7:15, 5:13, 0] = glyph
    a, b = motion.crops(frames, 8)
    np.testing.assert_allclose(a, b, atol=1e-9)
    assert a.max() > 0
