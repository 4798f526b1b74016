"""The modelability study script (benchmarks/modelability.py): one space measured for real with
tiny models (the row it writes is the report's and the probe's figures), and the study's own
work on fakes: rows kept as they are done, a resumed study measuring only what is missing, the
correlations and the probe's resolution computed from the rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tiny

from benchmarks import modelability as study
from latentjax.config import load_config

AE = [o.removeprefix("--config.") for o in tiny.AE]
DIT = [o.removeprefix("--config.") for o in tiny.DIT if "image_size" not in o]


@pytest.mark.slow  # a stage 1, its report and a probe: about a minute on 2 cores
def test_a_space_measured_for_real_is_its_report_card_and_its_probe(
    tmp_path, digits_data_dir, monkeypatch
):
    monkeypatch.setenv("LATENTJAX_DATA_DIR", digits_data_dir)
    overrides = ["train.num_steps=2", "loss.disc_start=1", *AE]
    row = study.measure_space(
        tmp_path, "kl", "ae/digits.py", overrides,
        probe_overrides=DIT, probe_steps=2, seeds=[0], num=20,
    )  # fmt: skip
    card = json.loads((tmp_path / "kl" / "ae" / "eval" / "report.json").read_text())
    truth = json.loads((tmp_path / "kl" / "probe" / "probe.json").read_text())
    m = card["modelability"]
    assert row["psnr"] == card["psnr"] and row["latent_shape"] == [4, 4, 4]
    assert row["latent_high_frequency"] == m["latent_high_frequency"]
    assert row["linear_probe"] == m["linear_probe"]
    assert row["interpolation_excess"] == m["interpolation"]["excess"]
    assert row["recon_frechet_ratio"] == m["interpolation"]["recon_frechet_ratio"]
    assert row["probe"]["frechet_ratio"]["mean"] == truth["seeds"]["0"]["frechet_ratio"]
    assert row["probe_seeds"] == {"0": truth["seeds"]["0"]["frechet_ratio"]}


def _row(truth: float, spread: float, **proxies) -> dict:
    base = {name: 0.0 for name in study.PROXIES}
    spectrum = {"latent_frequency": [0.25, 0.5], "latent_power": [0.6, 0.4]}
    spectrum |= {"pixel_frequency": [0.25, 0.5], "pixel_power": [0.7, 0.3]}
    return {
        **base,
        **proxies,
        "latent_shape": [4, 4, 4],
        "pixel_high_frequency": 0.3,
        "spectrum": spectrum,
        "probe": {"frechet_ratio": {"mean": truth, "std": spread, "seeds": 3}},
        "probe_seeds": {"0": truth, "1": truth, "2": truth},
    }


def test_the_study_keeps_each_row_resumes_and_correlates_the_proxies_with_the_truth(
    tmp_path, monkeypatch, capsys
):
    truths = {"kl": 2.0, "ae": 3.0, "vq": 5.0, "fsq": 4.0, "kl_repa": 1.0}
    measured, calls = [], {}

    def fake(root, name, config_name, overrides, **kwargs):
        measured.append(name)
        calls[name] = kwargs
        t = truths[name]
        # psnr falls as the truth worsens (a good proxy), linear_probe is unrelated.
        unrelated = {"kl": 0.5, "ae": 0.9, "vq": 0.6, "fsq": 0.4, "kl_repa": 0.5}[name]
        centroid = {"kl": 0.1, "ae": 0.2, "vq": 0.4, "fsq": None, "kl_repa": 0.1}[name]
        return _row(t, 0.1, psnr=30 - t, interpolation_frechet_ratio=t**2,
                    linear_probe=unrelated, latent_high_frequency=0.5,
                    latent_centroid=centroid)  # fmt: skip

    monkeypatch.setattr(study, "measure_space", fake)
    kwargs = {"steps": 2, "probe_steps": 2, "seeds": [0, 1, 2], "num": 20}
    study.study(tmp_path, ["kl", "ae"], **kwargs)
    assert json.loads((tmp_path / "results.json").read_text()).keys() == {"kl", "ae"}
    summary = study.study(tmp_path, ["kl", "ae", "vq", "fsq", "vf"], **kwargs)
    assert measured == ["kl", "ae", "vq", "fsq"]  # not again; vf skipped without --vgg
    assert "vf: skipped (needs --vgg)" in capsys.readouterr().out
    corr = summary["correlations"]
    assert corr["psnr"]["rho"] == pytest.approx(-1.0) and corr["psnr"]["right_sign"]
    assert corr["interpolation_frechet_ratio"]["rho"] == pytest.approx(1.0)
    # Ranks 2, 4, 3, 1 against 1, 2, 4, 3: 1 - 6 (1 + 4 + 1 + 4) / (4 (16 - 1)) = 0.
    assert corr["linear_probe"]["rho"] == pytest.approx(0.0, abs=1e-12)
    assert corr["latent_high_frequency"]["rho"] is None  # constant: no ranking
    # A space without the figure (a constant latent, or none) is left out of that proxy's rank.
    assert corr["latent_centroid"]["spaces"] == 3 and corr["latent_centroid"]["rho"] == 1.0
    res = summary["resolution"]
    assert res["pairs"] == 6 and res["pairs_separated"] == 6  # gaps >= 1 > 2 x 0.1
    assert res["max_seed_std"] == pytest.approx(0.1)
    # A generator-side row probes the baseline's own autoencoder with REPA in the DiT; it is
    # reported, not ranked: the correlations stay those of the four spaces.
    again = study.study(tmp_path, ["kl_repa"], vgg="/weights/vgg", **kwargs)
    assert calls["kl_repa"]["ae_name"] == "kl"
    assert "repa.weight=0.5" in calls["kl_repa"]["probe_overrides"]
    assert "repa.encoder_weights=/weights/vgg" in calls["kl_repa"]["probe_overrides"]
    assert again["correlations"] == corr and again["resolution"]["pairs"] == 6
    assert "| kl_repa (REPA in the probe) |" in (tmp_path / "table.md").read_text()
    table = (tmp_path / "table.md").read_text()
    assert table.count("\n| ") >= 4 + 6 and "| vq | 4x4x4 |" in table
    assert (tmp_path / "spectra.png").is_file() and (tmp_path / "proxies.png").is_file()


def test_close_spaces_are_not_counted_as_separated():
    rows = {"a": _row(2.0, 0.3), "b": _row(2.4, 0.3), "c": _row(4.0, 0.1)}
    res = study.resolution(rows)
    assert res["pairs"] == 3 and res["pairs_separated"] == 2  # a-b within 2 sd
    assert res["range_of_means"] == pytest.approx(2.0)
    assert np.isclose(res["median_seed_std"], 0.3)


def test_the_photo_study_probes_with_the_photo_dit_judged_in_vgg16(tmp_path, monkeypatch):
    """``--data photos``: the photo spaces, the photo DiT as the probe, the proxies on the val
    crops, VGG16 as the space samples and interpolations are judged in (required)."""
    calls = {}

    def fake(root, name, config_name, overrides, **kwargs):
        calls[name] = {"config": config_name, "overrides": overrides, **kwargs}
        return _row(2.0, 0.1)

    monkeypatch.setattr(study, "measure_space", fake)
    kwargs = {"steps": 2, "probe_steps": 2, "seeds": [0], "num": 20, "data": "photos"}
    with pytest.raises(SystemExit, match="give --vgg DIR"):
        study.study(tmp_path, ["kl"], **kwargs)
    assert not calls
    study.study(tmp_path, ["kl", "f8_c16", "vf"], vgg="weights/vgg", **kwargs)
    for name, call in calls.items():
        assert call["probe_config"] == "dit/photos.py" and call["proxy_split"] == "val", name
        assert call["vgg16"].endswith("weights/vgg") and call["vgg16"].startswith("/"), name
    assert calls["kl"]["config"] == "ae/photos_f4.py"
    assert calls["f8_c16"]["config"] == "ae/photos_f8.py"
    assert any(o.startswith("loss.vf_encoder_weights=/") for o in calls["vf"]["overrides"])


@pytest.mark.parametrize("name", list(study.PHOTO_SPACES))
def test_every_photo_space_builds_at_the_size_reduction_of_its_kind(name):
    from latentjax.factory import latent_shape

    config_name, overrides = study.PHOTO_SPACES[name]
    config = load_config(config_name, [*overrides, "loss.vf_encoder_weights=/w"])
    assert config.data.name == "latentjax_photos" and config.data.image_size == 32
    h, w, c = latent_shape(config)
    assert 32 * 32 * 3 / (h * w * c) == 12, name  # the f = 4, 4-channel baseline's


def test_a_vgg_judged_row_without_lpips_is_measured_again_keeping_its_timings(
    tmp_path, monkeypatch
):
    """The photo study added LPIPS after some rows were measured: such a row is measured again
    (its runs and probe resume from disk), while a complete row is not; the first measurement's
    timings stay."""
    calls = []

    def fake(root, name, config_name, overrides, **kwargs):
        calls.append(name)
        return {**_row(2.0 + len(calls), 0.1, lpips=0.2), "train_s": 1.0, "probe_s": 2.0}

    old = {**_row(5.0, 0.1), "lpips": None, "train_s": 900.0, "probe_s": 800.0}
    done = {**_row(3.0, 0.1, lpips=0.3), "train_s": 10.0, "probe_s": 20.0}
    (tmp_path / "results.json").write_text(json.dumps({"kl": old, "ae": done}))
    monkeypatch.setattr(study, "measure_space", fake)
    kwargs = {"steps": 2, "probe_steps": 2, "seeds": [0, 1, 2], "num": 20, "data": "photos"}
    study.study(tmp_path, ["kl", "ae"], vgg="/weights/vgg", **kwargs)
    assert calls == ["kl"]
    rows = json.loads((tmp_path / "results.json").read_text())
    assert rows["kl"]["lpips"] == 0.2 and (rows["kl"]["train_s"], rows["kl"]["probe_s"]) == (
        900,
        800,
    )
    assert rows["ae"] == done
    assert "| kl | 4x4x4 | 0.00 | n/a | 0.200 |" in (tmp_path / "table.md").read_text()
