"""A fixed feature space for the embedded digits: the hidden layer of a small classifier.

FID judges images in the pool3 features of an ImageNet classifier (Heusel et al. 2017); the
digits need no Inception, and a classifier of their own plays the same role here. A one-hidden-
layer perceptron (32 ReLU units; scikit-learn's ``MLPClassifier``, L-BFGS, ``random_state=0``)
is fitted on the training split of the embedded digits (``data/digits.py``) and nothing else, so
the space is the same for every run and every set judged in it. An image becomes the 32
activations of its hidden layer, computed in float64.

Why this space and not a standardised PCA of the pixels: what matters is how far a shift of
the distribution moves the Fréchet distance relative to how much the distance varies by chance.
Measured on the 16 px digits (as the demo sees them; in v1, before the threshold below, and
with other random splits than ``benchmarks/digits_judge.py``'s, whose v1 row is the one to
reproduce), in standard deviations of the real-vs-real distance over 20 random
class-stratified 247/1,254 splits of the training set, the hidden layer vs a whitened
20-component PCA: Gaussian pixel noise of std 16/255, 9 vs 0; a blur of sigma 1 px, 29 vs 35;
a one-pixel shift, 126 vs 122; one class only, 470 vs 121; contrast scaled by 0.9, 8 vs 11.
PCA keeps the high-variance directions, and pixel noise lives in the ones it drops; a
classifier's features separate the classes, so dropped modes stand out. The two are close on
blur, shift and contrast; only the hidden layer sees noise.

Details that matter:

* Inputs are resized to 8x8 exactly as ``digits_classifier`` does (its ``_to_8x8``). Resizing
  8 -> 16 -> 8 px is not the identity (mean absolute change ~1.7 on the 0..16 scale), so the
  network is fitted on the training digits brought to the size of the images it will judge (with
  the data pipeline's resize, as the demo's training data are made) and then to 8x8: fitted on
  the original 8x8 digits, its accuracy on the 16 px test digits falls from 96% to 85%. One
  network is fitted per input size and cached for the life of the process.
* Pixels are standardised with the training mean and standard deviation, the latter floored at
  0.5 (on the 0..16 scale, 1/32 of the range): in the original 8x8 digits twelve pixels vary by
  less, some not at all, and an unfloored scale would let a faint grey in such a corner dominate
  every distance.
* Before that, every pixel is soft-thresholded at half a level, max(p - 0.5, 0) on the 0..16
  scale (8/255): the originals have 17 grey levels, so a difference below half of one is below
  what the data can hold, and a decoder's faint grey where a digit is black (1/255 on average
  in the demo's reconstructions) must not read as a difference. Without it (``digits`` v1, the
  space every figure before 2026-12-03 was judged in) a haze of 4/255 on every black pixel of
  the real test digits read 2.28x real-vs-real. A soft threshold rather than rounding: rounding
  to levels would read nothing below half a level and then jump, so that a haze of 8/255 read
  13x. ``benchmarks/digits_judge.py`` measures both spaces and the alternatives (a higher
  floor, other thresholds), in standard deviations of each one's real-vs-real distance over 20
  class-stratified 247/1,254 splits of the 16 px training digits, v1 -> this space: haze of
  1, 2, 4, 8 and 16/255, 0.15 -> 0.01, 0.68 -> 0.04, 2.9 -> 0.2, 11 -> 1.1, 41 -> 23; blur
  (sigma 1 px) 22 -> 22; a one-pixel shift 94 -> 102; one class only 367 -> 388; contrast x
  0.9, 7.3 -> 7.5. The cost: Gaussian pixel noise of std 16/255, which at 8x8 mostly averages
  below half a level, reads 2.0 sd instead of 9.1; noise of 32/255 still reads far
  (``tests/test_distribution.py``).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import chex
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

from latentjax.data.digits import digit_images, split_indices
from latentjax.data.pipeline import resize
from latentjax.eval.digits_classifier import _to_8x8

HIDDEN_UNITS = 32
PIXEL_STD_FLOOR = 0.5  # on load_digits' 0..16 scale
GREY_THRESHOLD = 0.5  # half a level of the 0..16 scale: 8/255
# The space's name in reports and probe protocols: v1 (2026-11 to 2026-12-02) had no threshold.
NAME = "digits-v2"
SEED = 0


@functools.cache
def _network(
    size: int, floor: float = PIXEL_STD_FLOOR, threshold: float = GREY_THRESHOLD
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pixel mean [64], pixel scale [64], weights [64, 32], bias [32]) of the network fitted on
    the training digits at ``size`` x ``size`` px, with the pixel scale floored at ``floor`` and
    the pixels soft-thresholded at ``threshold`` (both on the 0..16 scale)."""
    x, labels = training_digits(size)
    pixels = _pixels(x, threshold)  # [N, 64]
    mean = pixels.mean(axis=0)
    scale = np.maximum(pixels.std(axis=0), floor)
    model = MLPClassifier((HIDDEN_UNITS,), solver="lbfgs", max_iter=1000, random_state=SEED)
    # One BLAS thread: the fit is tiny, so nothing is lost, the result cannot depend on the
    # thread count, and BLAS threads spinning for each other on a busy host cannot stall it.
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("error", ConvergenceWarning)  # a half-fitted space fails loudly
        model.fit((pixels - mean) / scale, labels)
    weights, bias = (np.asarray(a, np.float64) for a in (model.coefs_[0], model.intercepts_[0]))
    return mean, scale, weights, bias


def training_digits(size: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The embedded training split (or ``split``) at ``size`` x ``size`` px as the data pipeline
    makes it, then rounded to uint8 as ``to_uint8`` does, in the file's order:
    (uint8 [N, size, size, 1], int labels [N])."""
    images, labels = digit_images()  # uint8 [1797, 8, 8, 1]
    rows = split_indices()[split]
    x = images[rows]
    if size != x.shape[1]:
        x = np.stack([np.round(resize(im.astype(np.float32), size)) for im in x]).astype(np.uint8)
    return x, labels[rows]


def _pixels(images: np.ndarray, threshold: float) -> np.ndarray:
    """uint8 [N, S, S, 1] -> float64 [N, 64] on the 0..16 scale, at 8x8, soft-thresholded:
    max(p - threshold, 0), so values below ``threshold`` read as black and the map stays
    continuous (no level at which a small change jumps)."""
    pixels = _to_8x8(images).astype(np.float64)
    return np.maximum(pixels - threshold, 0.0) if threshold else pixels


def feature_space(
    floor: float = PIXEL_STD_FLOOR, threshold: float = GREY_THRESHOLD
) -> Callable[[np.ndarray], np.ndarray]:
    """The feature map of the network fitted with pixel-scale floor ``floor`` and soft threshold
    ``threshold`` (0..16 scale): :func:`digits_features` is the one with this module's
    constants; others exist to be compared with it (``benchmarks/digits_judge.py``)."""

    def features(images: np.ndarray) -> np.ndarray:
        chex.assert_rank(images, 4)
        chex.assert_type(images, np.uint8)
        n, height, width, channels = images.shape
        if height != width or channels != 1:
            raise ValueError(f"digits_features expects [N, S, S, 1] images, got {images.shape}")
        mean, scale, weights, bias = _network(height, floor, threshold)
        pixels = _pixels(images, threshold)
        out = np.maximum((pixels - mean) / scale @ weights + bias, 0.0)
        chex.assert_shape(out, (n, HIDDEN_UNITS))
        return out

    return features


def digits_features(images: np.ndarray) -> np.ndarray:
    """uint8 digits [N, S, S, 1] at any square size S (0..255) -> float64 features [N, 32]: the
    hidden-layer activations of the fixed network fitted for size S (see the module docstring).
    """
    return feature_space()(images)
