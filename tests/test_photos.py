"""The embedded photographs: built offline, fixed, held-out images disjoint from training."""

import numpy as np
import pytest

from latentjax.data import photos
from latentjax.data.pipeline import load_source, make_dataset


@pytest.fixture(scope="module")
def photos_data_dir(tmp_path_factory) -> str:
    return photos.prepare_photos(str(tmp_path_factory.mktemp("tfds")))


def test_every_listed_image_loads_offline():
    for name in photos.IMAGE_NAMES:
        image = photos.load_image(name)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3, name
        assert min(image.shape[:2]) >= photos.CROP, name
    assert not set(photos.TRAIN_IMAGES) & set(photos.TEST_IMAGES)


def test_crops_are_seeded_and_come_from_the_image():
    a, b = photos.crops("astronaut", 5), photos.crops("astronaut", 5)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (5, photos.CROP, photos.CROP, 3)
    # Each crop is the window of the resized image (short side SHORT_SIDE) at its corner.
    full = photos._resized(photos.load_image("astronaut"))
    assert min(full.shape[:2]) == photos.SHORT_SIDE
    corners = photos.crop_corners("astronaut", 5, *full.shape[:2])
    assert len({tuple(c) for c in corners}) == 5
    for crop, (y, x) in zip(a, corners, strict=True):
        np.testing.assert_array_equal(crop, full[y : y + photos.CROP, x : x + photos.CROP])
    assert not np.array_equal(photos.crops("coffee", 5), a)


def test_val_crops_are_new_draws_of_the_training_photographs():
    """``val`` holds further crops of the 14 training photographs (stage 2's real-vs-real), none
    at a training crop's corner; ``train`` keeps version 1.0.0's seed, so its crops (what every
    committed photo run trained on) are unchanged."""
    images, labels = photos.split_crops("val")
    assert images.shape == (
        len(photos.TRAIN_IMAGES) * photos.VAL_CROPS,
        photos.CROP,
        photos.CROP,
        3,
    )
    counts = np.bincount(labels, minlength=len(photos.IMAGE_NAMES))
    train_ids = [photos.IMAGE_NAMES.index(n) for n in photos.TRAIN_IMAGES]
    assert set(np.flatnonzero(counts)) == set(train_ids)
    assert (counts[train_ids] == photos.VAL_CROPS).all()
    for name in photos.TRAIN_IMAGES:
        h, w = photos._resized(photos.load_image(name)).shape[:2]
        train = photos.crop_corners(name, photos.TRAIN_CROPS, h, w)
        val = photos.crop_corners(name, photos.VAL_CROPS, h, w, stream=1)
        assert not {tuple(c) for c in val} & {tuple(c) for c in train}, name
        rng = np.random.default_rng([photos.SEED, photos.IMAGE_NAMES.index(name)])  # 1.0.0's
        ys = rng.integers(0, h - photos.CROP + 1, photos.TRAIN_CROPS)
        np.testing.assert_array_equal(train[:, 0], ys)


def test_dataset_round_trip(photos_data_dir):
    for split, size in photos.SPLIT_SIZES.items():
        source = load_source(photos.NAME, split, photos_data_dir)
        assert len(source) == size
        images, labels = photos.split_crops(split)
        for i in (0, size // 2, size - 1):  # PNG is lossless
            np.testing.assert_array_equal(source[i]["image"], images[i])
            assert source[i]["label"] == labels[i]
    test_labels = {int(load_source(photos.NAME, "test", photos_data_dir)[i]["label"])
                   for i in (0, photos.SPLIT_SIZES["test"] - 1)}  # fmt: skip
    assert {photos.IMAGE_NAMES[k] for k in test_labels} == set(photos.TEST_IMAGES)
    batch = next(
        iter(
            make_dataset(
                load_source(photos.NAME, "train", photos_data_dir),
                global_batch_size=8,
                image_size=32,
                process_index=0,
                process_count=1,
            )
        )  # fmt: skip
    )
    assert batch["image"].shape == (8, 32, 32, 3)
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0


@pytest.mark.parametrize("name, factor", [("photos_f4", 4), ("photos_f8", 8)])
def test_photo_configs_build(name, factor):
    from latentjax.config import load_config
    from latentjax.train.autoencoder import build_autoencoder

    config = load_config(f"ae/{name}.py")
    assert config.data.name == photos.NAME and config.model.in_channels == 3
    ae = build_autoencoder(config.model)
    assert ae.downsample_factor == factor and ae.latent_channels == 4
