"""``latentjax probe``: a fixed small DiT on a stage-1 run's latents, over seeds, judged by the
stage-2 report card; resumable, and refusing to mix protocols."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tiny

from latentjax.commands import main
from latentjax.probe import FIGURES

# The tiny DiT of the suite, without its image size (the probe takes the run's data section).
DIT = [o for o in tiny.DIT if not o.startswith("--config.data.image_size")]


def _probe(ae: Path, out: Path, *extra: str) -> int:
    args = ["probe", "--workdir", str(ae), "--out", str(out), "--steps", "2", "--num", "20"]
    return main([*args, "--no-progress", *DIT, *extra])


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("latentjax: error: "), err
    return err[0]


@pytest.fixture(scope="module")
def probed(tmp_path_factory, tiny_ae_run, digits_data_dir) -> Path:
    out = tmp_path_factory.mktemp("probe") / "probe"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LATENTJAX_DATA_DIR", digits_data_dir)
        assert _probe(tiny_ae_run, out, "--seeds", "0,1") == 0
        yield out


def test_each_seed_is_a_stage2_run_on_the_runs_latents_judged_as_eval_judges_it(
    probed, tiny_ae_run, capsys
):
    report = json.loads((probed / "probe.json").read_text())
    assert sorted(report["seeds"]) == ["0", "1"]
    for seed in (0, 1):
        config = json.loads((probed / f"seed_{seed}" / "config.json").read_text())
        assert config["seed"] == seed and config["train"]["num_steps"] == 2
        assert config["ae_workdir"] == str(tiny_ae_run)
        assert config["data"]["image_size"] == 8  # the autoencoder run's, not dit/digits.py's
    # A seed's figures are those of `latentjax eval` on its run at guidance 1, 20 samples.
    argv = ["eval", "--workdir", str(probed / "seed_1"), "--cfg", "1", "--num", "20"]
    assert main([*argv, "--seed", "0", "--out", str(probed / "eval")]) == 0
    capsys.readouterr()
    card = json.loads((probed / "eval" / "report.json").read_text())
    for figure in ("frechet_ratio", "precision", "recall", "recognised"):
        assert report["seeds"]["1"][figure] == pytest.approx(card["points"][0][figure]), figure
    assert report["recon"]["frechet_ratio"] == pytest.approx(card["recon"]["frechet_ratio"])
    # The summary is the seeds' mean and spread.
    for figure, row in report["summary"].items():
        assert figure in FIGURES
        values = [report["seeds"][s][figure] for s in ("0", "1")]
        assert row["mean"] == pytest.approx(np.mean(values))
        assert row["std"] == pytest.approx(np.std(values, ddof=1)) and row["seeds"] == 2
    # Two seeds trained two different generators.
    assert report["seeds"]["0"]["frechet"] != report["seeds"]["1"]["frechet"]


def test_a_probe_goes_on_where_it_stopped_and_refuses_another_protocol(probed, tiny_ae_run, capsys):
    before = (probed / "probe.json").read_text()
    assert _probe(tiny_ae_run, probed, "--seeds", "1,0") == 0  # nothing left to do
    assert "Fréchet" in capsys.readouterr().out
    assert (probed / "probe.json").read_text() == before
    assert not (probed / "seed_2").exists()
    # Another budget in the same directory: refused in one line, nothing changed.
    assert _probe(tiny_ae_run, probed, "--seeds", "2", "--steps", "3") == 2
    assert "another protocol (steps: 2 there, 3 asked)" in _error_line(capsys)
    assert (probed / "probe.json").read_text() == before
    assert not (probed / "seed_2").exists()
    # The autoencoder trained on since the probe (another checkpoint step): another space.
    report = json.loads(before)
    assert report["protocol"]["ae_step"] == 4  # the suite's tiny run: 2 steps, resumed to 4
    report["protocol"]["ae_step"] = 2
    (probed / "probe.json").write_text(json.dumps(report))
    assert _probe(tiny_ae_run, probed, "--seeds", "0,1") == 2
    assert "another protocol (ae_step: 2 there, 4 asked)" in _error_line(capsys)
    (probed / "probe.json").write_text(before)


def test_bad_probes_are_one_line(tiny_ae_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert _probe(tiny_ae_run, out, "--seeds", "a") == 2
    assert "--seeds must be comma-separated integers" in _error_line(capsys)
    assert _probe(tiny_ae_run, out, "--seeds", "0,0") == 2
    assert "distinct" in _error_line(capsys)
    assert _probe(tmp_path / "nothing", out) == 2
    assert "no run at" in _error_line(capsys)
    args = ["probe", "--workdir", str(tiny_ae_run), "--out", str(out), "--config"]
    assert main([*args, "ae/digits.py"]) == 2
    assert "a probe is a DiT" in _error_line(capsys)
    assert not out.exists()


def test_a_seed_whose_training_stopped_early_is_not_judged(
    tiny_ae_run, tmp_path, capsys, monkeypatch
):
    """A preempted training (SIGTERM: saved, returned early) must not be judged as if done."""
    from latentjax.config import load_config
    from latentjax.train import trainer

    monkeypatch.setattr(trainer, "train", lambda config, workdir, **kw: {"step": 1, "loss": 1.0})
    out = tmp_path / "probe"
    assert _probe(tiny_ae_run, out, "--seeds", "0") == 2
    assert "stopped at step 1 of 2 (preempted?)" in _error_line(capsys)
    assert not (out / "probe.json").exists()
    config = load_config("dit/digits.py", ["train.num_steps=2"])
    trainer.check_finished({"step": 2, "loss": 1.0}, config, out)  # finished: no error


def test_a_config_edited_between_two_calls_is_another_protocol(probed, tiny_ae_run, capsys):
    """The protocol records the probe config's contents, not only its name: a probe.json whose
    digest differs is refused; one written before digests were recorded is taken, with a note."""
    before = (probed / "probe.json").read_text()
    report = json.loads(before)
    digest = report["protocol"]["config_digest"]
    assert len(digest) == 16
    report["protocol"]["config_digest"] = "0" * 16  # dit/digits.py edited since
    (probed / "probe.json").write_text(json.dumps(report))
    assert _probe(tiny_ae_run, probed, "--seeds", "0,1") == 2
    assert "the contents of dit/digits.py differ" in _error_line(capsys)
    del report["protocol"]["config_digest"]  # an older probe
    (probed / "probe.json").write_text(json.dumps(report))
    assert _probe(tiny_ae_run, probed, "--seeds", "0,1") == 0
    assert "does not record its config's contents" in capsys.readouterr().out
    # Written on 2026-12-02 or 03, with a digest of the whole config: the same contents.
    from latentjax.probe import _whole_config_digest, probe_config
    from latentjax.run import Run

    config = probe_config(
        Run.open(tiny_ae_run), "dit/digits.py", report["protocol"]["overrides"], 2, 0
    )
    report["protocol"]["config_digest"] = _whole_config_digest(config)
    (probed / "probe.json").write_text(json.dumps(report))
    assert _probe(tiny_ae_run, probed, "--seeds", "0,1") == 0
    assert "does not record" not in capsys.readouterr().out
    # Another override changes the contents too (and is named as the difference).
    (probed / "probe.json").write_text(before)
    assert _probe(tiny_ae_run, probed, "--seeds", "0,1", "--config.optim.lr=0.5") == 2
    assert "another protocol (overrides:" in _error_line(capsys)
    assert (probed / "probe.json").read_text() == before


def test_a_key_added_to_the_defaults_leaves_the_digest_alone(monkeypatch):
    """The digest is of what a probe config sets beyond the DiT's defaults: a key the defaults
    gain later, at its default, leaves it as it was; set otherwise, or any default edited by the
    config, it changes."""
    import ml_collections

    from latentjax import probe
    from latentjax.config import load_config

    config = load_config("dit/digits.py")
    digest = probe.config_digest(config)

    def with_knob(c, value=3):
        c = ml_collections.ConfigDict(c.to_dict())
        c.optim.new_knob = value
        return c

    base = probe.base_config
    monkeypatch.setattr(probe, "base_config", lambda stage: with_knob(base(stage)))
    assert probe.config_digest(with_knob(config)) == digest
    assert probe.config_digest(with_knob(config, 4)) != digest
    assert probe.config_digest(load_config("dit/digits.py", ["optim.lr=0.5"])) != digest
    seeded = load_config("dit/digits.py", ["seed=7"])
    assert probe.config_digest(seeded) == digest  # seeds differ in nothing else
