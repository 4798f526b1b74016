"""Video metrics against numpy written from their definitions."""

import numpy as np
import pytest

from latentjax.eval import metrics, video


def test_flicker_and_per_frame_metrics_against_numpy():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3, 5, 12, 12, 1)).astype(np.float32)
    y = np.clip(x + 0.1 * rng.normal(size=x.shape), -1, 1).astype(np.float32)
    want = np.zeros(3)
    for b in range(3):
        for t in range(4):
            want[b] += np.abs((y[b, t + 1] - y[b, t]) - (x[b, t + 1] - x[b, t])).mean() / 4
    np.testing.assert_allclose(video.flicker(x, y), want, rtol=1e-5)
    psnr = video.per_frame(metrics.psnr, x, y)
    assert psnr.shape == (3, 5)
    for b, t in ((0, 0), (2, 4), (1, 3)):
        mse = np.mean((x[b, t].astype(np.float64) - y[b, t]) ** 2)
        np.testing.assert_allclose(psnr[b, t], 10 * np.log10(4 / mse), rtol=1e-4)


def test_a_constant_error_does_not_flicker_and_a_changing_one_does():
    rng = np.random.default_rng(1)
    x = rng.uniform(-0.5, 0.5, (2, 9, 16, 16, 1)).astype(np.float32)
    offset = 0.2 * rng.normal(size=(2, 1, 16, 16, 1)).astype(np.float32)
    signs = ((-1.0) ** np.arange(9)).astype(np.float32)[None, :, None, None, None]
    steady, jitter = x + offset, x + offset * signs
    report = {k: video.video_report(x, y, (3, 8, 8, 4)) for k, y in (("s", steady), ("j", jitter))}
    # Same per-frame error (|offset| in every frame), opposite temporal behaviour.
    assert report["s"]["psnr"] == pytest.approx(report["j"]["psnr"], rel=1e-5)
    assert report["s"]["flicker"] < 1e-6 < report["j"]["flicker"]
    assert report["s"]["size_reduction"] == 9 * 16 * 16 / (3 * 8 * 8 * 4)


def test_the_frame_strip_puts_each_clips_frames_over_their_reconstructions():
    """What TensorBoard and W&B show for a video run at each evaluation (``train.eval_images``):
    per clip, a row of its frames over a row of their reconstructions."""
    from latentjax.eval.autoencoder import video_sheet
    from latentjax.eval.images import to_uint8

    rng = np.random.default_rng(0)
    x, x_hat = (rng.uniform(-1, 1, (2, 3, 4, 5, 1)).astype(np.float32) for _ in range(2))
    sheet = video_sheet(x, x_hat)  # tiles of 4 x 5 with 1 px between them
    assert sheet.shape == (4 * 5 + 1, 3 * 6 + 1, 3)
    for clip in range(2):
        for r, frames in enumerate((x, x_hat)):
            row = 2 * clip + r
            for t in range(3):
                tile = sheet[1 + 5 * row : 5 + 5 * row, 1 + 6 * t : 6 + 6 * t]
                want = to_uint8(frames[clip, t])
                np.testing.assert_array_equal(tile, np.repeat(want, 3, axis=-1))
