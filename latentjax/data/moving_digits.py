"""Moving digits: scikit-learn's digits travelling and bouncing on a canvas, as a tfds dataset.

A video dataset that needs no download, in the manner of Moving MNIST (Srivastava et al. 2015,
"Unsupervised learning of video representations using LSTMs", arXiv:1502.04681): one digit per
clip, on a black ``CANVAS`` x ``CANVAS`` canvas, labelled by the digit's class. ``FRAMES`` = 9
frames = 1 + 2 x 4, so a causal autoencoder with x4 time compression gives 1 + 2 latent frames.

- The glyph: the 8x8 digit of ``latentjax/data/digits.py`` (0..16 rescaled to 0..255) enlarged
  to ``GLYPH`` x ``GLYPH`` with Pillow's bilinear filter in float mode, the filter the image
  pipeline resizes the embedded digits with, then rounded to uint8.
- The path: a start corner uniform over the positions where the glyph fits and a velocity of
  ``SPEED`` px per frame (uniform in [min, max)) at a uniform angle, both from a generator
  seeded with ``[SEED, row]`` (``row``: the digit's row in ``load_digits()``). The corner moves
  in a straight line and bounces off the canvas walls (a reflection: the triangle wave of
  :func:`bounce`) and is rounded to whole pixels for each frame.
- Splits: the digits' own (``digits.split_indices``), so no test glyph appears in ``train``:
  1,501 train and 296 test clips. Example ``i`` of a split is the clip of the split's ``i``-th
  row, in ascending row order.

Each example is ``{"video": uint8 [FRAMES, CANVAS, CANVAS, 1], "label": int}``; the Grain
pipeline (``latentjax/data/pipeline.py``) turns it into float32 [T, H, W, 1] in [-1, 1]. Stored
as raw uint8 tensors (9 KB a clip, 16 MB in all): tfds' video feature needs TensorFlow.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from latentjax.data import digits, local
from latentjax.data.local import LocalBuild

NAME = "latentjax_moving_digits"
FRAMES = 9
CANVAS = 32
GLYPH = 16
SPEED = (1.0, 3.0)  # px per frame, [min, max)
SEED = 20261201
SPLIT_SIZES = digits.SPLIT_SIZES


@functools.cache
def glyphs() -> np.ndarray:
    """All 1,797 digits enlarged to uint8 [N, GLYPH, GLYPH] (bilinear, float mode); read-only."""
    images, _ = digits.digit_images()
    out = np.stack(
        [
            np.asarray(
                Image.fromarray(im[..., 0].astype(np.float32)).resize(
                    (GLYPH, GLYPH), Image.Resampling.BILINEAR
                )
            )
            for im in images
        ]
    )
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    out.setflags(write=False)
    return out


def bounce(p: np.ndarray, limit: float) -> np.ndarray:
    """Position on a line folded into [0, ``limit``]: the path of a point reflected at 0 and at
    ``limit`` (a triangle wave of period 2 x limit)."""
    m = np.mod(p, 2.0 * limit)
    return np.where(m <= limit, m, 2.0 * limit - m)


def trajectory(row: int, frames: int = FRAMES) -> np.ndarray:
    """Top-left corners (y, x) of the glyph in each frame of clip ``row``: int [frames, 2]."""
    rng = np.random.default_rng([SEED, row])
    limit = CANVAS - GLYPH
    start = rng.uniform(0.0, limit, 2)
    speed = rng.uniform(*SPEED)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    velocity = speed * np.array([np.sin(angle), np.cos(angle)])
    t = np.arange(frames, dtype=np.float64)[:, None]
    return np.round(bounce(start + t * velocity, limit)).astype(np.int64)


def clip(row: int, frames: int = FRAMES) -> np.ndarray:
    """The clip of digit ``row`` of ``load_digits()``: uint8 [frames, CANVAS, CANVAS, 1]."""
    glyph = glyphs()[row]
    video = np.zeros((frames, CANVAS, CANVAS, 1), np.uint8)
    for t, (y, x) in enumerate(trajectory(row, frames)):
        video[t, y : y + GLYPH, x : x + GLYPH, 0] = glyph
    return video


class LatentjaxMovingDigits(LocalBuild, tfds.core.GeneratorBasedBuilder):
    """scikit-learn digits bouncing on a 32 x 32 canvas, 9 frames, 10 classes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return local.dataset_info(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "video": tfds.features.Tensor(
                        shape=(FRAMES, CANVAS, CANVAS, 1), dtype=np.uint8
                    ),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("video", "label"),
            # Keep generation order: example i of a split is the split's i-th row.
            disable_shuffling=True,
            homepage="https://scikit-learn.org/stable/datasets/toy_dataset.html",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: scikit-learn ships the digits
        return {
            split: self._generate_examples(rows) for split, rows in digits.split_indices().items()
        }

    def _generate_examples(self, rows):
        _, labels = digits.digit_images()
        for i, row in enumerate(rows):
            yield i, {"video": clip(int(row)), "label": int(labels[row])}


def prepare_moving_digits(data_dir: str | None = None) -> str:
    """Builds the dataset under ``data_dir`` unless it is already there (a few seconds);
    returns ``data_dir``."""
    data_dir = data_dir or digits.default_data_dir()
    return local.prepare(LatentjaxMovingDigits, data_dir)
