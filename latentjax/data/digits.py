"""scikit-learn's 8x8 digits as a tensorflow-datasets dataset (array_record, no download).

1,797 grey images with values 0..16 in 10 classes (the UCI optical digits, as shipped inside
scikit-learn, so nothing is fetched). Pixels are rescaled 0..16 -> 0..255 (``round(v * 255 / 16)``)
and stored PNG-encoded; the PNG is made here with Pillow because tfds' own encoder needs
TensorFlow, which latentjax does not install.

Split, fixed for all time (no randomness, no seed): within each class, examples are taken in
scikit-learn's order and every sixth one (positions 5, 11, 17, ... within its class) goes to
``test``; the rest are ``train``. That gives 1,501 train and 296 test examples, every class in
both. The tfds example key is the row index in ``load_digits()``.
"""

from __future__ import annotations

import functools
import io
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from latentjax.data import local
from latentjax.data.local import LocalBuild

NAME = "latentjax_digits"
TEST_EVERY = 6
SPLIT_SIZES = {"train": 1501, "test": 296}


def default_data_dir() -> str:
    """``$LATENTJAX_DATA_DIR`` or ``~/.cache/latentjax/tfds``."""
    return os.environ.get("LATENTJAX_DATA_DIR") or os.path.expanduser("~/.cache/latentjax/tfds")


@functools.cache
def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 images as uint8 [N, 8, 8, 1] on 0..255, and their int64 labels [N]."""
    from sklearn.datasets import load_digits  # slow import; only needed when building

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # [N, 8, 8, 1]
    images.setflags(write=False)  # cached: callers must not mutate it
    labels = digits.target.astype(np.int64)
    labels.setflags(write=False)
    return images, labels


def split_indices() -> dict[str, np.ndarray]:
    """Row indices into ``load_digits()`` of each split (see the module docstring)."""
    _, labels = digit_images()
    test = np.zeros(len(labels), bool)
    for k in range(10):
        idx = np.flatnonzero(labels == k)
        test[idx[TEST_EVERY - 1 :: TEST_EVERY]] = True
    return {"train": np.flatnonzero(~test), "test": np.flatnonzero(test)}


def _png(image: np.ndarray) -> bytes:
    """uint8 [H, W, 1] -> PNG bytes (greyscale)."""
    buf = io.BytesIO()
    Image.fromarray(image[..., 0]).save(buf, format="PNG")
    return buf.getvalue()


class LatentjaxDigits(LocalBuild, tfds.core.GeneratorBasedBuilder):
    """scikit-learn digits, 8x8x1 uint8, 10 classes, fixed 1,501/296 train/test split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return local.dataset_info(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: scikit-learn ships the data
        return {split: self._generate_examples(idx) for split, idx in split_indices().items()}

    def _generate_examples(self, indices):
        images, labels = digit_images()
        for i in indices:
            yield int(i), {"image": _png(images[i]), "label": int(labels[i])}


def prepare_digits(data_dir: str | None = None) -> str:
    """Builds the dataset under ``data_dir`` unless it is already there (``local.prepare``);
    returns ``data_dir``."""
    data_dir = data_dir or default_data_dir()
    return local.prepare(LatentjaxDigits, data_dir)
