"""The offline feature space for natural images (eval/vgg_features.py): VGG16's pooled relu5_3
against torchvision's layers on the same random weights, its classifier, and the report card
judging in it (the labels asked for, the one-line errors)."""

import numpy as np
import pytest
import torch
from test_lpips import vgg16_features as torch_vgg16

from latentjax.convert.common import save_converted
from latentjax.convert.lpips import variables_from_torch
from latentjax.errors import LatentjaxError
from latentjax.eval import generation, vgg_features


@pytest.fixture(scope="module")
def vgg_dir(tmp_path_factory):
    """Random torchvision-layout VGG16 weights (and LPIPS heads) converted to our directory."""
    torch.manual_seed(0)
    features = torch_vgg16()
    sd = {f"features.{k}": v.numpy() for k, v in features.state_dict().items()}
    heads = {
        f"lin{i}.model.1.weight": np.full((1, c, 1, 1), 1.0 / c, np.float32)
        for i, c in enumerate((64, 128, 256, 512, 512))
    }
    out = tmp_path_factory.mktemp("vgg")
    save_converted(
        out, {"kind": "lpips", "config": {"model": "vgg16"}}, variables_from_torch(sd, heads)
    )
    return features, out


def test_pooled_features_match_torch_vgg16(vgg_dir):
    """The spatial mean of relu5_3 (torchvision ``features[:30]``) of uint8 images at
    ``SIZE`` px, with LPIPS's input scaling, grey images repeated over RGB."""
    features, path = vgg_dir
    fn = vgg_features.vgg16_features(path, batch=3)  # batches of 3: the last one is short
    rng = np.random.default_rng(0)
    size = vgg_features.SIZE
    images = rng.integers(0, 256, (5, size, size, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (2, size, size, 1), dtype=np.uint8)
    shift = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]
    for x in (images, grey):
        got = fn(x)
        assert got.shape == (len(x), vgg_features.DIM) and got.dtype == np.float64
        t = torch.from_numpy(np.repeat(x, 3 // x.shape[-1], -1)).permute(0, 3, 1, 2).float()
        with torch.no_grad():
            want = features((t / 127.5 - 1.0 - shift) / scale).mean((2, 3)).double().numpy()
        assert np.linalg.norm(got - want) / np.linalg.norm(want) <= 1e-4


def test_smaller_images_are_resized_to_the_networks_size(vgg_dir):
    _, path = vgg_dir
    fn = vgg_features.vgg16_features(path)
    small = np.random.default_rng(1).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    up = np.repeat(np.repeat(small, 4, 1), 4, 2)  # nearest up-scaling: close, not equal
    got, near = fn(small), fn(up)
    assert got.shape == (2, vgg_features.DIM)
    assert np.linalg.norm(got - near) < 0.5 * np.linalg.norm(near)


def test_feature_classifier_reads_separable_classes():
    rng = np.random.default_rng(0)
    labels = np.arange(90) % 3
    images = np.zeros((90, 2, 2, 1), np.uint8)
    images[:, 0, 0, 0] = 60 * labels + rng.integers(0, 20, 90)  # one pixel tells the class

    def features(x):
        return x.reshape(len(x), -1).astype(float) + rng.normal(0, 1e-3, (len(x), 4))

    judge = vgg_features.classifier_of(features)(images, labels)
    assert judge.accuracy(images, labels) == 1.0
    assert judge.accuracy(images, (labels + 1) % 3) == 0.0


def test_feature_space_of_vgg16_and_its_errors():
    def vgg(x):
        return x.reshape(len(x), -1) / 255.0

    space = generation.feature_space("my_photos", vgg16=vgg)
    assert space.name == "vgg16" and space.classifier is not None and space.spatial is None
    with pytest.raises(LatentjaxError, match="not both"):
        generation.feature_space("my_photos", inception=vgg, vgg16=vgg)
    with pytest.raises(LatentjaxError, match="--vgg16 DIR"):
        generation.feature_space("my_photos")
    with pytest.raises(LatentjaxError, match="--vgg16: no such directory"):
        generation.judging_space("my_photos", None, "/no/such/vgg")


def test_samples_are_asked_for_the_held_out_splits_classes():
    """The photo crops' DiT knows 16 classes and the val split holds 14: only those are asked
    for, in turn; a class-free model is asked for label 0."""
    real = {"test_labels": np.repeat([0, 2, 5], 4), "train_labels": np.arange(16)}
    np.testing.assert_array_equal(generation.judged_labels(real, 7, 16), [0, 2, 5, 0, 2, 5, 0])
    np.testing.assert_array_equal(generation.judged_labels(real, 3, 0), [0, 0, 0])
    np.testing.assert_array_equal(generation.judged_labels(real, 4, 3), [0, 2, 0, 2])
    with pytest.raises(LatentjaxError, match="no class of the model's 2"):
        generation.judged_labels({"test_labels": np.array([5, 7]), "train_labels": [0, 1]}, 4, 2)
    # Only classes the training split holds: the photo crops' test split is two other scenes
    # (14 and 15), which a 16-class DiT's labels cover but no training crop shows.
    real["train_labels"] = np.repeat([0, 5, 9], 3)
    np.testing.assert_array_equal(generation.judged_labels(real, 5, 16), [0, 5, 0, 5, 0])
    scenes = {"test_labels": np.array([14, 15]), "train_labels": np.arange(14)}
    with pytest.raises(LatentjaxError, match=r"classes \(14, 15\) are not in the training split"):
        generation.judged_labels(scenes, 4, 16)
