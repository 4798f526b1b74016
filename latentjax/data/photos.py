"""Crops of real photographs that scikit-learn and scikit-image ship, as a tfds dataset.

A natural-image check that needs no download: RGB crops of ``CROP`` x ``CROP`` pixels from
photographs inside the two packages' wheels, stored PNG-encoded (Pillow; tfds' encoder needs
TensorFlow) in array_record files, like ``latentjax/data/digits.py``.

Images (all load offline; scikit-image's eagle, lily, skin, brain, cells3d, kidney, vortex,
protein_transport, nickel_solidification, human_mitosis and palisades_of_vogt need a download and
are not used):

- ``train``: scikit-image's astronaut, chelsea, coffee, rocket, hubble_deep_field,
  immunohistochemistry, retina (colour) and camera, moon, grass, gravel, brick, coins (grey,
  copied to three channels), and scikit-learn's china.jpg; ``TRAIN_CROPS`` crops of each;
- ``val``: ``VAL_CROPS`` further crops of each training photograph, drawn from their own seed
  stream. They are new draws from the distribution the training crops are drawn from (the same
  scenes; a val crop may overlap training crops in part): the held-out set stage 2's samples are
  judged against (real-vs-real), since the generator learns the training scenes, not others;
- ``test`` (held out: no crop of these images is in ``train``): scikit-learn's flower.jpg and the
  left view of scikit-image's stereo_motorcycle; ``TEST_CROPS`` crops of each. What stage 1's
  reconstruction is measured on: scenes the autoencoder has never seen.

Each image is first resized (Pillow, bicubic, antialiased) so its short side is ``SHORT_SIDE``
pixels, so a crop covers a comparable share of every scene whatever the source resolution;
crop corners are drawn uniformly from a generator seeded with ``SEED``, the image's position and
the split's stream (0 for ``train`` and ``test``, 1 for ``val``), so the dataset is the same on
every machine (given the same package images). The label is the index of the source image in
``IMAGE_NAMES``.
"""

from __future__ import annotations

import functools
import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from latentjax.data import local
from latentjax.data.digits import default_data_dir
from latentjax.data.local import LocalBuild

NAME = "latentjax_photos"
CROP = 64
SHORT_SIDE = 320
SEED = 20261123
TRAIN_CROPS = 192
TEST_CROPS = 128
VAL_CROPS = 48
TRAIN_IMAGES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
    "moon",
    "grass",
    "gravel",
    "brick",
    "coins",
    "sklearn_china",
)
TEST_IMAGES = ("sklearn_flower", "stereo_motorcycle_left")
IMAGE_NAMES = TRAIN_IMAGES + TEST_IMAGES
# split -> (photographs, crops of each, seed stream)
SPLITS = {
    "train": (TRAIN_IMAGES, TRAIN_CROPS, 0),
    "val": (TRAIN_IMAGES, VAL_CROPS, 1),
    "test": (TEST_IMAGES, TEST_CROPS, 0),
}
SPLIT_SIZES = {k: len(names) * n for k, (names, n, _) in SPLITS.items()}


@functools.cache
def load_image(name: str) -> np.ndarray:
    """One source photograph as uint8 [H, W, 3] (grey images repeated over three channels);
    cached and read-only."""
    if name.startswith("sklearn_"):
        from sklearn.datasets import load_sample_image  # slow import; only when building

        image = load_sample_image(name.removeprefix("sklearn_") + ".jpg")
    elif name == "stereo_motorcycle_left":
        import skimage.data

        image = skimage.data.stereo_motorcycle()[0]
    else:
        import skimage.data

        image = getattr(skimage.data, name)()
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.dtype != np.uint8 or image.shape[-1] != 3:
        raise ValueError(f"{name}: expected uint8 RGB or grey, got {image.dtype} {image.shape}")
    image.setflags(write=False)
    return image


def _resized(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    s = SHORT_SIDE / min(h, w)
    size = (max(CROP, round(w * s)), max(CROP, round(h * s)))  # Pillow: (width, height)
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))


def crop_corners(name: str, count: int, height: int, width: int, stream: int = 0) -> np.ndarray:
    """Top-left corners [count, 2] (y, x) of the crops of image ``name`` of this size, from seed
    stream ``stream``. Stream 0's are version 1.0.0's (train and test crops are unchanged);
    another stream's leave out the corners of stream 0's ``TRAIN_CROPS`` crops, so no val crop is
    a training crop."""
    key = [SEED, IMAGE_NAMES.index(name)] + ([stream] if stream else [])
    rng = np.random.default_rng(key)
    draws = count if stream == 0 else 2 * count
    ys = rng.integers(0, height - CROP + 1, draws)
    xs = rng.integers(0, width - CROP + 1, draws)
    corners = np.stack([ys, xs], axis=1)
    if stream:
        taken = {tuple(c) for c in crop_corners(name, TRAIN_CROPS, height, width)}
        corners = np.array([c for c in corners if tuple(c) not in taken])
        if len(corners) < count:
            raise ValueError(f"{name}: too few free crop corners at {height} x {width}")
    return corners[:count]


def crops(name: str, count: int, stream: int = 0) -> np.ndarray:
    """``count`` seeded random CROP x CROP crops of one image from seed stream ``stream``.
    -> uint8 [count, CROP, CROP, 3]"""
    image = _resized(load_image(name))
    corners = crop_corners(name, count, *image.shape[:2], stream=stream)
    return np.stack([image[y : y + CROP, x : x + CROP] for y, x in corners])


@functools.cache
def split_crops(split: str) -> tuple[np.ndarray, np.ndarray]:
    """All crops of a split, uint8 [N, CROP, CROP, 3], and their source-image labels [N]."""
    names, count, stream = SPLITS[split]
    images = np.concatenate([crops(n, count, stream) for n in names])
    labels = np.repeat([IMAGE_NAMES.index(n) for n in names], count).astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


class LatentjaxPhotos(LocalBuild, tfds.core.GeneratorBasedBuilder):
    """64 x 64 RGB crops of photographs shipped by scikit-learn and scikit-image."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "1.1.0": "A val split (further crops of the training photographs); train, test as before.",
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return local.dataset_info(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(CROP, CROP, 3)),
                    "label": tfds.features.ClassLabel(names=list(IMAGE_NAMES)),
                }
            ),
            supervised_keys=("image", "label"),
            # Keep generation order (tfds otherwise orders examples by a hash of their key), so
            # example i of a split is crop i of split_crops(split): images in listed order.
            disable_shuffling=True,
            homepage="https://scikit-image.org/docs/stable/api/skimage.data.html",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: the packages ship the images
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split):
        images, labels = split_crops(split)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield i, {"image": _png(image), "label": int(label)}


def prepare_photos(data_dir: str | None = None) -> str:
    """Builds the dataset under ``data_dir`` unless it is already there; returns ``data_dir``."""
    data_dir = data_dir or default_data_dir()
    return local.prepare(LatentjaxPhotos, data_dir)


if __name__ == "__main__":  # python -m latentjax.data.photos [DATA_DIR]
    import sys

    print(prepare_photos(sys.argv[1] if len(sys.argv) > 1 else None))
