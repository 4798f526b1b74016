"""The stage-2 report card's pieces that need no model (eval/generation.py); the command end to
end is in test_cli.py (it shares that file's trained tiny runs)."""

import numpy as np
import pytest

from latentjax.errors import LatentjaxError
from latentjax.eval import generation


def test_other_datasets_need_a_network():
    with pytest.raises(LatentjaxError, match="needs a feature space: --inception WEIGHTS"):
        generation.feature_space("my_photos")
    passes = []

    def inception(x):  # one pass gives both feature sets, as convert.inception's does
        passes.append(len(x))
        return {"pool": x[:, 0, 0] / 255.0, "spatial": x[:, :, :, 0].reshape(len(x), -1) / 255.0}

    space = generation.feature_space("my_photos", inception)
    assert space.name == "inception" and space.classifier is None
    x = np.arange(2 * 3 * 3 * 2, dtype=np.uint8).reshape(2, 3, 3, 2)
    np.testing.assert_array_equal(space.features(x), x[:, 0, 0] / 255.0)
    np.testing.assert_array_equal(space.spatial(x), x[..., 0].reshape(2, 9) / 255.0)
    assert passes == [2]  # the spatial features came from the pool features' pass
    digits = generation.feature_space(generation.DIGITS_DATASET)
    assert digits.name == "digits-v2" and digits.classifier is not None and digits.spatial is None


def test_cached_features_compute_once_per_image():
    calls = []

    def features(x):
        calls.append(len(x))
        return x.reshape(len(x), -1).astype(float)

    cached = generation.CachedFeatures(features)
    a = np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3)
    np.testing.assert_array_equal(cached(a), features(a))
    np.testing.assert_array_equal(cached(a.copy()[::-1]), features(a[::-1]))
    cached(a[:1])
    b = np.concatenate([a[1:], 255 - a[:1], 255 - a[:1]])
    np.testing.assert_array_equal(cached(b), features(b))
    # Cached: once for both images, then only b's one new image (twice in b, computed once); a
    # copy, a reordering and a subset come from the cache. Direct: 2, 2 and 3.
    assert calls == [2, 2, 2, 1, 3]
    views = generation.CachedFeatures(lambda x: {"pool": features(x), "flat": features(x)[:, :2]})
    np.testing.assert_array_equal(views.view("flat")(a[::-1]), features(a[::-1])[:, :2])
    np.testing.assert_array_equal(views.view("pool")(a), features(a))


def test_evaluate_samples_each_setting_once_and_keeps_its_keys():
    rng = np.random.default_rng(0)
    real = {
        "train_images": rng.integers(0, 256, (60, 4, 4, 1), np.uint8),
        "train_labels": np.arange(60) % 3,
        "test_images": rng.integers(0, 256, (30, 4, 4, 1), np.uint8),
        "test_labels": np.arange(30) % 3,
    }
    asked = []

    def sample(labels, setting):  # the test images, darkened more the larger the scale
        asked.append(setting["cfg_scale"])
        return (real["test_images"] / setting["cfg_scale"]).astype(np.uint8)

    features = generation.CachedFeatures(lambda x: x.reshape(len(x), -1) / 255.0)
    report, images = generation.evaluate(
        sample, real, None, real["test_labels"], [{"cfg_scale": 1.0}, {"cfg_scale": 4.0}],
        features=features, classifier=None, default={"cfg_scale": 4.0}, k=2,
        spatial_features=lambda x: x.mean(axis=(2, 3)) / 255.0,  # row profiles [N, 4]
    )  # fmt: skip
    assert asked == [1.0, 4.0] and len(images) == 2 and "recon" not in report
    first, second = report["points"]
    assert first["cfg_scale"] == 1.0 and "recognised" not in first
    # Scale 1 returns the test split itself: the same figures as the test split's.
    assert first["frechet"] == pytest.approx(report["real_test"]["frechet"], rel=1e-12)
    assert first["sfid"] == pytest.approx(report["real_test"]["sfid"], rel=1e-12)
    assert second["frechet_ratio"] > 1.5 and second["class_variance_ratio"] < 0.2
    assert second["sfid_ratio"] > 1.5
    assert generation.is_default(second, report["default"])
    assert not generation.is_default(first, report["default"])
    with pytest.raises(LatentjaxError, match="no sampling setting"):
        generation.evaluate(sample, real, None, real["test_labels"], [], features=features,
                            classifier=None)  # fmt: skip


def _figures(seed):
    rng = np.random.default_rng(seed)
    keys = ["recognised", "precision", "recall", "class_variance_ratio", "frechet_ratio"]
    return {k: float(rng.uniform(0.2, 3.0 if k == "frechet_ratio" else 1.0)) for k in keys}


def test_write_draws_a_sweep_only_for_several_settings(tmp_path):
    from PIL import Image

    report = {"real_heldout": _figures(4), "real_test": _figures(0), "recon": _figures(1)}
    report["default"] = {"cfg_scale": 2.0}
    report["points"] = [{"cfg_scale": 2.0, **_figures(2)}]
    paths = generation.write(report, tmp_path / "one")
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["report.json", "report.png"]
    assert paths["card"] == tmp_path / "one" / "report.png"
    report["points"].append({"cfg_scale": 3.0, "guidance_interval": [0.2, 0.8], **_figures(3)})
    paths = generation.write(report, tmp_path / "two")
    assert np.asarray(Image.open(paths["sweep"])).std() > 0
    assert generation.setting_label(report["points"][1]) == "cfg 3 [0.2, 0.8]"
    assert generation.setting_tag(report["points"][1]) == "cfg3_t0.2-0.8"


def test_without_matplotlib_the_report_is_written_without_plots(tmp_path, monkeypatch):
    monkeypatch.setattr(generation, "pyplot", lambda: None)
    report = {"real_heldout": _figures(3), "real_test": _figures(0), "default": {}}
    report["points"] = [{"cfg_scale": 1.0, **_figures(1)}, {"cfg_scale": 2.0, **_figures(2)}]
    paths = generation.write(report, tmp_path)
    assert paths["card"] is None and paths["sweep"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
