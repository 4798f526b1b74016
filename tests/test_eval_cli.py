"""``latentjax eval`` end to end on a tiny stage-1 run, and its one-line errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentjax.commands import main
from latentjax.config import load_config, to_json


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory, digits_data_dir, tiny_ae_run) -> Path:
    """A copy of the suite's tiny stage-1 run (conftest.py; 8 px digits, f = 2, 4 latent
    channels), for ``eval`` to write its pictures into."""
    workdir = tmp_path_factory.mktemp("runs") / "ae"
    shutil.copytree(tiny_ae_run, workdir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LATENTJAX_DATA_DIR", digits_data_dir)
        yield workdir


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("latentjax: error: "), err
    return err[0]


def test_eval_writes_report_and_pictures(ae_run):
    assert main(["eval", "--workdir", str(ae_run), "--max-images", "40", "--num-show", "4"]) == 0
    out = ae_run / "eval"
    report = json.loads((out / "report.json").read_text())
    # 8 x 8 x 1 digits, f = 2, 4 latent channels: 4 x 4 x 4, no reduction.
    assert report["image_shape"] == [8, 8, 1] and report["latent_shape"] == [4, 4, 4]
    assert report["size_reduction"] == 1.0 and report["num_images"] == 40
    assert np.isfinite(report["psnr"]) and report["psnr"] > 0
    assert report["ssim"] is None and report["ms_ssim"] is None  # 8 px < the 11 px window
    assert report["lpips"] is None and report["rfid"] is None
    latent = report["latent"]
    assert len(latent["channel_mean"]) == len(latent["kl_per_channel"]) == 4
    assert min(latent["kl_per_channel"]) >= 0
    np.testing.assert_allclose(
        latent["kl_per_image"], np.sum(latent["kl_per_channel"]) * 16, rtol=1e-6
    )
    # The scale brings the pooled latents to unit variance: pooled var = E[var_c + mean_c^2]
    # - shift^2 over channels (all channels have 16 positions).
    mean, std = np.array(latent["channel_mean"]), np.array(latent["channel_std"])
    pooled = np.mean(std**2 + mean**2) - np.mean(mean) ** 2
    np.testing.assert_allclose(latent["scale"], 1 / np.sqrt(pooled), rtol=1e-4)
    units = report["active_units"]
    assert units["total"] == 64 and 0 <= units["count"] <= 64
    assert sum(units["per_channel"]) == units["count"]
    for name, rows in (
        ("reconstructions", 3),
        ("interpolation_linear", 2),
        ("interpolation_slerp", 2),
    ):
        image = np.asarray(Image.open(out / f"{name}.png"))
        assert image.ndim == 3 and image.shape[-1] == 3
        assert image.shape[0] > rows * 8, name  # rows of (enlarged) 8 px images
        assert image.std() > 0, name


def test_missing_runs_and_a_stage2_run_without_its_stage1_are_one_line(tmp_path, capsys):
    assert main(["eval", "--workdir", str(tmp_path / "nothing")]) == 2
    assert "no run at" in _error_line(capsys)
    (tmp_path / "dit").mkdir()
    (tmp_path / "dit" / "config.json").write_text(to_json(load_config("dit/digits.py")))
    assert main(["eval", "--workdir", str(tmp_path / "dit")]) == 2
    # A stage-2 run gets the stage-2 report card, which needs the stage 1 it names.
    line = _error_line(capsys)
    assert "no run at runs/digits/ae" in line and "latentjax train" in line
    (tmp_path / "empty").mkdir()
    assert main(["eval", "--workdir", str(tmp_path / "empty")]) == 2
    assert "missing config.json" in _error_line(capsys)


def test_bad_options_are_one_line(ae_run, tmp_path, capsys):
    assert main(["eval", "--workdir", str(ae_run), "--max-images", "0"]) == 2
    assert "--max-images" in _error_line(capsys)
    assert main(["eval", "--workdir", str(ae_run), "--inception", str(tmp_path / "x.pth")]) == 2
    assert "--inception: no such file" in _error_line(capsys)


def test_eval_takes_other_data_through_data_overrides(ae_run, capsys, tmp_path):
    # The run's own data, named explicitly through the data section; its report is the same.
    assert main(["eval", "--workdir", str(ae_run), "--max-images", "16", "--num-show", "2"]) == 0
    base = json.loads((ae_run / "eval" / "report.json").read_text())
    argv = ["eval", "--workdir", str(ae_run), "--max-images", "16", "--num-show", "2"]
    assert main([*argv, "--config.data.eval_split=train"]) == 0
    other = json.loads((ae_run / "eval" / "report.json").read_text())
    assert other["split"] == "train" and other["psnr"] != base["psnr"]
    assert main([*argv, "--config.model.ch=4"]) == 2
    assert "eval takes overrides of the data section only" in _error_line(capsys)


def test_the_reports_modelability_proxies_are_those_of_the_runs_own_encoder(ae_run, capsys):
    """The ``modelability`` section recomputed here from the run's encoder and decoder, step by
    step: a proxy fed the wrong latents, split or decoder makes it differ."""
    import jax

    from latentjax.data.pipeline import split_arrays
    from latentjax.eval import fid
    from latentjax.eval import modelability as m
    from latentjax.eval.digits_features import digits_features
    from latentjax.eval.images import to_uint8
    from latentjax.parallel.mesh import make_mesh
    from latentjax.run import Run
    from latentjax.train.autoencoder import load_autoencoder

    assert main(["eval", "--workdir", str(ae_run), "--max-images", "60", "--num-show", "2"]) == 0
    got = json.loads((ae_run / "eval" / "report.json").read_text())["modelability"]
    assert "linear probe" in capsys.readouterr().out
    plot = np.asarray(Image.open(ae_run / "eval" / "spectrum.png"))
    assert plot.ndim == 3 and plot.std() > 0
    run = Run.open(ae_run)
    stage, params = load_autoencoder(run, make_mesh(run.config.mesh.shape))
    ae = stage.ae
    encode = jax.jit(lambda x: ae.apply(params, x, method=ae.encode).mode())
    decode = jax.jit(lambda z: ae.apply(params, z, method=ae.decode).clip(-1, 1))
    test, train = (split_arrays(run.config.data, s) for s in ("test", "train"))
    x, y = np.asarray(test["image"][:60], np.float32), np.asarray(test["label"][:60])
    tx, ty = np.asarray(train["image"][:60], np.float32), np.asarray(train["label"][:60])
    z = np.asarray(encode(x))

    spectrum = m.radial_spectrum(z)
    np.testing.assert_allclose(got["spectrum"]["latent_power"], m.normalised(spectrum), rtol=1e-4)
    np.testing.assert_allclose(got["latent_high_frequency"], spectrum["high"].mean(), rtol=1e-4)
    np.testing.assert_allclose(got["latent_centroid"], spectrum["centroid"].mean(), rtol=1e-4)
    pixels = m.radial_spectrum(x)
    np.testing.assert_allclose(got["pixel_high_frequency"], pixels["high"].mean(), rtol=1e-6)
    probe = m.linear_probe(np.asarray(encode(tx)), ty, z, y)
    assert got["linear_probe"] == pytest.approx(probe, abs=1 / 60)  # one test digit at most
    assert got["chance"] == np.bincount(y).max() / 60
    assert got["feature_space"] == "digits-v2"  # the space its Fréchet figures are in

    def features(images):
        return digits_features(to_uint8(np.asarray(images)))

    stats = fid.statistics(features(tx))
    middle = decode(m.midpoints(z, m.nearest_pairs(z)))
    interp = got["interpolation"]
    for key, images in (("frechet", middle), ("recon_frechet", decode(z)), ("reference", x)):
        expected = fid.frechet_distance_to_features(features(images), *stats)
        np.testing.assert_allclose(interp[key], expected, rtol=1e-3, err_msg=key)
    assert interp["num_points"] == 60
    np.testing.assert_allclose(interp["excess"], interp["frechet"] / interp["recon_frechet"])


def test_the_interpolation_score_is_taken_in_the_space_it_is_given(ae_run):
    """``space_fn`` (``eval --vgg16``'s VGG16 features; here a fixed random projection of the
    pixels) is the space of the interpolation score instead of the digits' own."""
    from latentjax.data.pipeline import split_arrays
    from latentjax.eval import fid
    from latentjax.eval.autoencoder import evaluate
    from latentjax.parallel.mesh import make_mesh
    from latentjax.run import Run
    from latentjax.train.autoencoder import load_autoencoder

    run = Run.open(ae_run)
    stage, params = load_autoencoder(run, make_mesh(run.config.mesh.shape))
    test, train = (split_arrays(run.config.data, s) for s in ("test", "train"))
    x, tx = (np.asarray(a["image"][:40], np.float32) for a in (test, train))
    weights = np.random.default_rng(0).normal(size=(x[0].size, 6))

    def space(images):
        return np.asarray(images, np.float64).reshape(len(images), -1) @ weights

    kwargs = {"max_images": 40, "write": False}
    got = evaluate(run, stage.ae, params, space_fn=space, space_name="proj", **kwargs)
    got = got["modelability"]
    own = evaluate(run, stage.ae, params, **kwargs)["modelability"]
    assert (got["feature_space"], own["feature_space"]) == ("proj", "digits-v2")
    want = fid.frechet_distance_to_features(space(x), *fid.statistics(space(tx)))
    np.testing.assert_allclose(got["interpolation"]["reference"], want, rtol=1e-6)
    assert got["interpolation"]["reference"] != own["interpolation"]["reference"]
    assert got["linear_probe"] == own["linear_probe"]  # the other proxies do not change


def test_a_point_without_a_within_class_variance_prints_n_a():
    """A set with no class of 2+ samples that the training split also holds has no within-class
    variance ratio (None): the progress line says so instead of failing to format it."""
    from latentjax.commands.eval import summary

    point = {"precision": 0.5, "recall": 0.25, "frechet_ratio": 2.0, "recognised": 0.75}
    assert summary({**point, "class_variance_ratio": None}).endswith("within-class variance n/a")
    assert summary({**point, "class_variance_ratio": 0.9}).endswith("variance 0.90 of real")
