"""Generated clips of moving digits judged per frame and by their motion, as pure numpy (and a
scikit-learn classifier) on uint8 clips [N, T, H, W, C].

* **Per-frame recognition**: is each frame the digit asked for? :class:`FrameClassifier` is a
  support vector machine (RBF kernel, C = 10; scikit-learn's ``SVC``) fitted on every frame of
  real clips, each frame cropped around its centre of mass to the glyph's size (so the digit's
  position on the canvas does not matter) and scaled to 8 x 8; a frame counts as recognised when
  it is classified as its clip's label. Its accuracy on real held-out clips is the ceiling the
  samples are read against: 99.0% on the demo's 16 px clips, where a logistic regression on the
  same crops (this judge before issue 23's last retune) read 92.9%, too low a ceiling for a 90%
  bar. The stronger judge is not the more lenient one: on the demo's samples of that time it
  recognised 76.8% of frames where the logistic regression recognised 79.1% (README).
* **Motion**: the centre of mass of each frame (:func:`centres`) traces the digit's path. Real
  moving digits travel in straight lines at constant speed between bounces, so their speed
  (:func:`speeds`: pixels per frame) is steady and their acceleration (:func:`accelerations`,
  the second difference of the path) is zero except at a bounce. :func:`motion_report` sets the
  samples' speed and acceleration beside real clips': the means, and the 1-Wasserstein distance
  between the two sets' distributions of each (scipy's), which is 0 for the same distribution
  and is in pixels per frame.
* **Diversity** (:func:`diversity_report`): recognition and smooth motion say nothing of how
  varied the clips are (guidance buys the one with the other, as for images); the variance of
  the glyphs within each digit and of the clips' velocities, each as a ratio to real clips'.
"""

from __future__ import annotations

import chex
import numpy as np
from PIL import Image


def _clips(x) -> np.ndarray:
    x = np.asarray(x)
    chex.assert_rank(x, 5)
    return x


# Intensities below this (of 255) do not count towards a frame's centre. Real clips' background
# is 0, but a decoder's is a faint haze spread over the whole canvas, which pulls the centre of
# mass towards the middle and so shrinks every path: on the demo's reconstructions of real clips,
# speed 0.89 against real 1.02 px/frame with no floor, 1.02 against 1.02 with this one.
FLOOR = 32


def centres(clips) -> np.ndarray:
    """The intensity-weighted centre (row, column) of each frame of ``clips`` [N, T, H, W, C]
    (channels averaged; intensities below :data:`FLOOR` left out as background). -> float
    [N, T, 2]; NaN for a frame with nothing above the floor."""
    x = _clips(clips).astype(np.float64).mean(axis=-1)  # [N, T, H, W]
    x = np.where(x >= FLOOR, x, 0.0)
    total = x.sum(axis=(2, 3))
    rows = np.arange(x.shape[2], dtype=np.float64)
    cols = np.arange(x.shape[3], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (x.sum(axis=3) * rows).sum(axis=2) / total
        c = (x.sum(axis=2) * cols).sum(axis=2) / total
    return np.stack([r, c], axis=-1)


def speeds(path) -> np.ndarray:
    """Pixels moved per frame along ``path`` [N, T, 2]. -> [N, T - 1]."""
    return np.linalg.norm(np.diff(np.asarray(path, np.float64), axis=1), axis=-1)


def accelerations(path) -> np.ndarray:
    """The size of the second difference of ``path`` [N, T, 2]: 0 on a straight line at
    constant speed. -> [N, T - 2]."""
    return np.linalg.norm(np.diff(np.asarray(path, np.float64), n=2, axis=1), axis=-1)


def motion_report(real, samples) -> dict[str, float]:
    """The samples' motion beside real clips' (uint8 [N, T, H, W, C] both): mean speed and
    acceleration of each, and the 1-Wasserstein distance between the two sets' speeds and
    between their accelerations (frames with no intensity are left out)."""
    from scipy.stats import wasserstein_distance

    out: dict[str, float] = {}
    figures = {}
    for name, clips in (("real", real), ("samples", samples)):
        path = centres(clips)
        for figure, values in (("speed", speeds(path)), ("acceleration", accelerations(path))):
            values = values[np.isfinite(values)]
            figures[name, figure] = values
            out[f"{name}_{figure}"] = float(values.mean()) if values.size else float("nan")
    for figure in ("speed", "acceleration"):
        a, b = figures["real", figure], figures["samples", figure]
        out[f"{figure}_w1"] = float(wasserstein_distance(a, b)) if a.size and b.size else None
    return out


def diversity_report(real, real_labels, samples, labels, glyph: int) -> dict[str, float | None]:
    """How varied the samples (uint8 [N, T, H, W, C], asked for ``labels`` [N]) are beside real
    clips (``real``, ``real_labels``), each figure a ratio to real's: 1 is as varied as real
    clips, 0 a collapse.

    * ``shape_variance_ratio`` (and ``_min`` over the digits): the within-class variance of each
      clip's glyph (its frames' :func:`crops`, averaged over the clip) over real's
      (``distribution.class_variance_ratio``): do the clips of one digit draw it in as many
      ways as real clips do?
    * ``velocity_variance_ratio``: the total variance (covariance trace) of each clip's mean
      velocity, the mean of its frame-to-frame steps of the centre of mass (a 2-vector: speed
      and direction), over real's: do the clips move in as many ways?"""
    from latentjax.eval.distribution import class_variance_ratio

    def glyphs(clips):
        x = _clips(clips)
        return crops(x.reshape(-1, *x.shape[2:]), glyph).reshape(*x.shape[:2], -1).mean(axis=1)

    def velocity_variance(clips):
        v = np.nanmean(np.diff(centres(clips), axis=1), axis=1)  # [N, 2]
        v = v[np.isfinite(v).all(axis=1)]
        return float(np.trace(np.cov(v, rowvar=False))) if len(v) > 1 else float("nan")

    shape = class_variance_ratio(glyphs(real), real_labels, glyphs(samples), labels)
    return {
        "shape_variance_ratio": shape["mean"],
        "shape_variance_ratio_min": shape["min"],
        "velocity_variance_ratio": velocity_variance(samples) / velocity_variance(real),
    }


def crops(frames, size: int) -> np.ndarray:
    """Each frame of ``frames`` [M, H, W, C] cut to ``size`` x ``size`` around its centre of mass
    (zero-padded at the edges), channels averaged, scaled to 8 x 8 (bilinear) and flattened.
    -> float [M, 64]."""
    x = np.asarray(frames, np.float64).mean(axis=-1)  # [M, H, W]
    centre = centres(frames[:, None])[:, 0]  # [M, 2]
    half = size / 2.0
    padded = np.pad(x, ((0, 0), (size, size), (size, size)))
    out = np.empty((len(x), 64))
    for i, (r, c) in enumerate(centre):
        if not np.isfinite(r):
            r, c = x.shape[1] / 2.0, x.shape[2] / 2.0
        top, left = int(round(r - half)) + size, int(round(c - half)) + size
        window = padded[i, top : top + size, left : left + size].astype(np.float32)
        small = Image.fromarray(window).resize((8, 8), Image.Resampling.BILINEAR)
        out[i] = np.asarray(small, np.float64).reshape(-1)
    return out


class FrameClassifier:
    """Which digit is in each frame? An RBF support vector machine (module docstring) on
    :func:`crops` of every frame of real training clips ``clips`` (uint8 [N, T, H, W, C]), each
    labelled with its clip's ``labels`` [N]; ``glyph`` is the side of a digit in these frames,
    in pixels."""

    def __init__(self, clips, labels, glyph: int):
        from sklearn.svm import SVC

        x = _clips(clips)
        self.glyph = glyph
        features = crops(x.reshape(-1, *x.shape[2:]), glyph) / 255.0
        self.model = SVC(C=10.0, gamma="scale").fit(
            features, np.repeat(np.asarray(labels), x.shape[1])
        )

    def recognised(self, clips, labels) -> np.ndarray:
        """Per clip and frame, whether the frame is classified as its clip's label.
        -> bool [N, T]."""
        x = _clips(clips)
        features = crops(x.reshape(-1, *x.shape[2:]), self.glyph) / 255.0
        predicted = self.model.predict(features).reshape(x.shape[:2])
        return predicted == np.asarray(labels)[:, None]

    def accuracy(self, clips, labels) -> float:
        """The share of all frames recognised as their clip's label."""
        return float(self.recognised(clips, labels).mean())
