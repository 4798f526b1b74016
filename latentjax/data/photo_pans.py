"""Slow pans and zooms over the photographs that scikit-learn and scikit-image ship, as a tfds
video dataset: camera motion over natural images, beside the moving digits' object motion.

Each clip is ``FRAMES`` frames of ``SIZE`` x ``SIZE`` RGB, cut from one photograph of
``latentjax/data/photos.py`` (resized so its short side is ``photos.SHORT_SIDE`` pixels, as the
photo crops are), of one of two kinds, alternating:

- a **pan** (even clips): a window of ``SIZE`` pixels moving ``PAN_SPEED`` px per frame (uniform
  in [min, max], rounded to whole pixels) along a uniform direction, so frame t + 1 is frame t
  shifted by a whole-pixel step: the same pixels, moved;
- a **zoom** (odd clips): a window centred on one point whose side goes linearly from ``SIZE``
  x 1 to ``SIZE`` x ``ZOOM`` (in: ``ZOOM`` < 1) or x 1 / ``ZOOM`` (out) over the clip, each
  window resized to ``SIZE`` (Pillow, bicubic, antialiased); frame 0 is a plain crop.

Start points, speeds, directions and zoom senses come from a generator seeded with ``SEED``, the
image's index and the clip's, so the dataset is the same everywhere (given the packages'
images). Splits are the photo crops' own: ``train`` from the 14 training photographs,
``test`` from the 2 held-out ones (no held-out photograph appears in ``train``). The label is
the source image's index in ``photos.IMAGE_NAMES``. Stored as raw uint8 tensors (28 KB a clip).
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from latentjax.data import local, photos
from latentjax.data.digits import default_data_dir
from latentjax.data.local import LocalBuild

NAME = "latentjax_photo_pans"
FRAMES = 9
SIZE = 32
PAN_SPEED = (1.0, 3.0)  # px per frame
ZOOM = 0.6  # the window's side at the end of a zoom-in, as a share of its start
SEED = 20261202
CLIPS = {"train": 32, "test": 48}  # per photograph
SPLITS = {"train": photos.TRAIN_IMAGES, "test": photos.TEST_IMAGES}
SPLIT_SIZES = {k: len(names) * CLIPS[k] for k, names in SPLITS.items()}


@functools.cache
def source(name: str) -> np.ndarray:
    """The photograph, resized as the photo crops' (short side ``photos.SHORT_SIDE``)."""
    image = photos._resized(photos.load_image(name))
    image.setflags(write=False)
    return image


def pan(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A pan over ``image``: uint8 [FRAMES, SIZE, SIZE, 3]."""
    h, w = image.shape[:2]
    speed = rng.uniform(*PAN_SPEED)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    step = np.round(speed * np.array([np.sin(angle), np.cos(angle)])).astype(np.int64)
    travel = np.abs(step) * (FRAMES - 1)
    start = np.array(
        [rng.integers(0, h - SIZE - travel[0] + 1), rng.integers(0, w - SIZE - travel[1] + 1)]
    )
    start = start + np.where(step < 0, travel, 0)  # room to move the way the step points
    corners = start + np.arange(FRAMES)[:, None] * step
    return np.stack([image[y : y + SIZE, x : x + SIZE] for y, x in corners])


def zoom(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A zoom in or out around one point of ``image``: uint8 [FRAMES, SIZE, SIZE, 3]."""
    h, w = image.shape[:2]
    end = ZOOM if rng.integers(0, 2) == 0 else 1.0 / ZOOM
    sides = SIZE * np.linspace(1.0, end, FRAMES)
    widest = int(np.ceil(sides.max()))
    cy = rng.uniform(widest / 2, h - widest / 2)
    cx = rng.uniform(widest / 2, w - widest / 2)
    frames = []
    for side in sides:
        top, left = int(round(cy - side / 2)), int(round(cx - side / 2))
        box = (left, top, left + int(round(side)), top + int(round(side)))
        window = Image.fromarray(image).crop(box)
        if window.size != (SIZE, SIZE):
            window = window.resize((SIZE, SIZE), Image.Resampling.BICUBIC, reducing_gap=None)
        frames.append(np.asarray(window))
    return np.stack(frames)


def clip(name: str, i: int) -> np.ndarray:
    """Clip ``i`` of photograph ``name``: a pan (even ``i``) or a zoom (odd)."""
    rng = np.random.default_rng([SEED, photos.IMAGE_NAMES.index(name), i])
    return (pan if i % 2 == 0 else zoom)(source(name), rng)


class LatentjaxPhotoPans(LocalBuild, tfds.core.GeneratorBasedBuilder):
    """Pans and zooms over shipped photographs: 9 frames of 32 x 32 RGB."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return local.dataset_info(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "video": tfds.features.Tensor(shape=(FRAMES, SIZE, SIZE, 3), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=list(photos.IMAGE_NAMES)),
                }
            ),
            supervised_keys=("video", "label"),
            disable_shuffling=True,  # example k of a split: clip k % n of its k // n-th image
            homepage="https://scikit-image.org/docs/stable/api/skimage.data.html",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: the packages ship the images
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split):
        k = 0
        for name in SPLITS[split]:
            for i in range(CLIPS[split]):
                yield k, {"video": clip(name, i), "label": photos.IMAGE_NAMES.index(name)}
                k += 1


def prepare_photo_pans(data_dir: str | None = None) -> str:
    """Builds the dataset under ``data_dir`` unless it is already there; returns ``data_dir``."""
    data_dir = data_dir or default_data_dir()
    return local.prepare(LatentjaxPhotoPans, data_dir)
