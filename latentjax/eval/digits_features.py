"""A fixed feature space for the embedded digits: the hidden layer of a small classifier.

FID judges images in the pool3 features of an ImageNet classifier (Heusel et al. 2017); the
digits need no Inception, and a classifier of their own plays the same role here. A one-hidden-
layer perceptron (32 ReLU units; scikit-learn's ``MLPClassifier``, L-BFGS, ``random_state=0``)
is fitted on the training split of the embedded digits (``data/digits.py``) and nothing else, so
the space is the same for every run and every set judged in it. An image becomes the 32
activations of its hidden layer, computed in float64.

Why this space and not a standardised PCA of the pixels: what matters is how far a shift of
the distribution moves the Fréchet distance relative to how much the distance varies by chance.
Measured on the 16 px digits (as the demo sees them), in standard deviations of the real-vs-real
distance over 20 random class-stratified 247/1,254 splits of the training set, the hidden layer
vs a whitened 20-component PCA: Gaussian pixel noise of std 16/255, 9 vs 0; a blur of sigma
1 px, 29 vs 35; a one-pixel shift, 126 vs 122; one class only, 470 vs 121; contrast scaled by
0.9, 8 vs 11. PCA keeps the high-variance directions, and pixel noise lives in the ones it drops;
a classifier's features separate the classes, so dropped modes stand out. The two are close on
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
"""

from __future__ import annotations

import functools
import warnings

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
SEED = 0


@functools.cache
def _network(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pixel mean [64], pixel scale [64], weights [64, 32], bias [32]) of the network fitted on
    the training digits at ``size`` x ``size`` px."""
    images, labels = digit_images()  # uint8 [1797, 8, 8, 1]
    train = split_indices()["train"]
    x = images[train]
    if size != x.shape[1]:
        # As the data pipeline makes the training images, then ``to_uint8``: rounded to uint8.
        x = np.stack([np.round(resize(im.astype(np.float32), size)) for im in x]).astype(np.uint8)
    pixels = _to_8x8(x).astype(np.float64)  # [N, 64]
    mean = pixels.mean(axis=0)
    scale = np.maximum(pixels.std(axis=0), PIXEL_STD_FLOOR)
    model = MLPClassifier((HIDDEN_UNITS,), solver="lbfgs", max_iter=1000, random_state=SEED)
    # One BLAS thread: the fit is tiny, so nothing is lost, the result cannot depend on the
    # thread count, and BLAS threads spinning for each other on a busy host cannot stall it.
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("error", ConvergenceWarning)  # a half-fitted space fails loudly
        model.fit((pixels - mean) / scale, labels[train])
    weights, bias = (np.asarray(a, np.float64) for a in (model.coefs_[0], model.intercepts_[0]))
    return mean, scale, weights, bias


def digits_features(images: np.ndarray) -> np.ndarray:
    """uint8 digits [N, S, S, 1] at any square size S (0..255) -> float64 features [N, 32]: the
    hidden-layer activations of the fixed network fitted for size S (see the module docstring).
    """
    chex.assert_rank(images, 4)
    chex.assert_type(images, np.uint8)
    n, height, width, channels = images.shape
    if height != width or channels != 1:
        raise ValueError(f"digits_features expects [N, S, S, 1] images, got {images.shape}")
    mean, scale, weights, bias = _network(height)
    pixels = _to_8x8(images).astype(np.float64)  # [N, 64]
    features = np.maximum((pixels - mean) / scale @ weights + bias, 0.0)
    chex.assert_shape(features, (n, HIDDEN_UNITS))
    return features
