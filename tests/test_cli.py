"""The ``latentjax`` command end to end on tiny models: train both stages, resume, sample, and
one-line errors for the mistakes a user makes."""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
import tiny
from PIL import Image
from threadpoolctl import threadpool_limits

import latentjax
from latentjax.commands import main
from latentjax.config import load_config
from latentjax.data.pipeline import split_arrays
from latentjax.eval import distribution as dist
from latentjax.eval.images import to_uint8
from latentjax.run import Run
from latentjax.train import autoencoder, state
from latentjax.train.checkpoint import Checkpointer

TINY_AE = tiny.AE_RUN
TINY_DIT = [
    *tiny.DIT,
    "--config.train.checkpoint_every=2",
    "--config.sample.num_steps=3",
]


def _train(kind: str, workdir: Path, *extra: str) -> int:
    tiny = TINY_AE if kind == "ae" else TINY_DIT
    return main(
        [
            "train",
            "--config",
            f"configs/{kind}/digits.py",
            "--workdir",
            str(workdir),
            "--no-progress",
        ]
        + tiny
        + list(extra)
    )


def _steps(workdir: Path) -> list[int]:
    return [
        json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()
    ]


def _params(workdir: Path, overrides: list[str]):
    config = load_config("ae/digits.py", [o.removeprefix("--config.") for o in overrides])
    stage = autoencoder.AutoencoderStage(config)
    mesh = jax.make_mesh((1, 1, 1), ("data", "fsdp", "tensor"))
    return state.restore(Run.open(workdir), stage.init_state, mesh)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits_data_dir, monkeypatch_module, tiny_ae_run):
    monkeypatch_module.setenv("LATENTJAX_DATA_DIR", digits_data_dir)
    root = tmp_path_factory.mktemp("runs")
    # Stage 1 in two sittings: 2 steps, then resumed to 4 (crossing disc_start=2), through
    # these same flags (conftest.py); this file's copy is its own to change.
    shutil.copytree(tiny_ae_run, root / "ae")
    assert (
        _train(
            "dit", root / "dit", "--config.train.num_steps=2", f"--config.ae_workdir={root / 'ae'}"
        )
        == 0
    )
    return root


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_train_writes_the_run_directory(runs):
    ae = runs / "ae"
    assert json.loads((ae / "config.json").read_text())["stage"] == "ae"
    assert _steps(ae) == [1, 2, 3, 4]  # resumed at 2; nothing logged twice
    metrics = [json.loads(line) for line in (ae / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["d_loss"] == 0.0 and metrics[3]["d_loss"] > 0.0  # the GAN joined at step 2
    assert "test_psnr" in metrics[3]
    assert Checkpointer(ae / "checkpoints").all_steps() == [2, 4]
    stats = json.loads((runs / "dit" / "latent_stats.json").read_text())
    assert stats["scale"] > 0 and len(stats["channel_std"]) == 4


def test_resumed_run_equals_an_uninterrupted_one(runs, tmp_path):
    straight = tmp_path / "straight"
    assert _train("ae", straight, "--config.train.num_steps=4") == 0
    a, b = _params(runs / "ae", TINY_AE), _params(straight, TINY_AE)
    assert int(a["step"]) == int(b["step"]) == 4
    jax.tree.map(np.testing.assert_array_equal, a["params"], b["params"])


def test_sample_writes_npz_and_grid(runs, tmp_path):
    out = tmp_path / "s.npz"
    assert (
        main(
            [
                "sample",
                "--workdir",
                str(runs / "dit"),
                "--num",
                "5",
                "--labels",
                "3,7",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    data = np.load(out)
    assert data["images"].shape == (5, 8, 8, 1) and data["images"].dtype == np.uint8
    assert data["labels"].tolist() == [3, 7, 3, 7, 3]
    assert out.with_suffix(".png").exists()


def test_sample_into_a_bucket(runs, tmp_path, gcs_bucket):
    # `sample` with gs:// paths (the GCS emulator): shards and their grid in --shard-dir, and
    # --out gathered into one .npz whose working shards are removed. Same seed, same images as
    # a local --out.
    from latentjax.paths import as_path

    argv = ["sample", "--workdir", str(runs / "dit"), "--num", "5", "--labels", "3,7"]
    shards = as_path(f"{gcs_bucket}/cli/shards")
    assert main([*argv, "--shard-dir", str(shards), "--no-progress"]) == 0
    assert (shards / "index.json").exists() and (shards / "grid.png").exists()
    out = as_path(f"{gcs_bucket}/cli/s.npz")
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    assert out.with_suffix(".png").exists() and not out.with_suffix(".shards").exists()
    assert main([*argv, "--out", str(tmp_path / "s.npz"), "--no-progress"]) == 0
    with out.open("rb") as f, np.load(f) as remote, np.load(tmp_path / "s.npz") as local:
        np.testing.assert_array_equal(remote["images"], local["images"])
        assert remote["labels"].tolist() == [3, 7, 3, 7, 3]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("latentjax: error:"), err
    return err[0]


def test_unknown_config_key_is_one_line(capsys, tmp_path):
    assert (
        main(
            [
                "train",
                "--config",
                "configs/ae/digits.py",
                "--workdir",
                str(tmp_path),
                "--config.model.chh=3",
            ]
        )
        == 2
    )
    assert "unknown config key 'model.chh'" in _error_line(capsys)


def test_workdir_of_another_model_is_refused(runs, capsys):
    assert _train("ae", runs / "ae", "--config.model.ch=16", "--config.train.num_steps=5") == 2
    assert "holds a different run (model.ch" in _error_line(capsys)
    assert _train("ae", runs / "dit", "--config.train.num_steps=5") == 2
    assert "holds a different run (stage" in _error_line(capsys)


def test_num_zero_and_bad_labels(runs, capsys, tmp_path):
    out = str(tmp_path / "x.npz")
    assert main(["sample", "--workdir", str(runs / "dit"), "--num", "0", "--out", out]) == 2
    assert "--num must be positive" in _error_line(capsys)
    assert (
        main(
            ["sample", "--workdir", str(runs / "dit"), "--num", "2", "--labels", "12", "--out", out]
        )
        == 2
    )
    assert "out of range" in _error_line(capsys)
    assert main(["sample", "--workdir", str(runs / "ae"), "--num", "2", "--out", out]) == 2
    assert "needs a stage-2" in _error_line(capsys)
    # --eval's own refusals, before anything is sampled or written.
    argv = ["sample", "--workdir", str(runs / "dit"), "--out", out]
    bad = [
        (["--num", "3", "--eval"], "--eval needs --num above 3"),
        (["--num", "8", "--inception", out], "--inception is for --eval"),
        (["--num", "8", "--eval", "--inception", out], "--inception: no such file"),
        (["--num", "8", "--vgg16", out], "--vgg16 is for --eval"),
        (["--num", "8", "--eval", "--vgg16", out], "--vgg16: no such directory"),
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    for extra, message in bad:
        assert main([*argv, *extra]) == 2, extra
        assert message in _error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_stage2_without_its_stage1_run(capsys, tmp_path):
    assert _train("dit", tmp_path / "dit", f"--config.ae_workdir={tmp_path / 'missing'}") == 2
    assert "no stage-1 run there" in _error_line(capsys)


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def test_a_refused_resume_leaves_the_run_as_it_was(runs, capsys):
    # Another discriminator width: the stage and model match, the saved state does not.
    before = _files(runs / "ae")
    assert _train("ae", runs / "ae", "--config.loss.disc_ndf=4", "--config.train.num_steps=6") == 2
    assert "does not match this model's state" in _error_line(capsys)
    assert _files(runs / "ae") == before  # config.json included: the finished run still evaluates
    # A rerun that trains nothing (the run is at its last step) rewrites nothing either.
    assert _train("ae", runs / "ae", "--config.train.num_steps=4", "--config.seed=3") == 0
    assert _files(runs / "ae") == before


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ('--config.model.ch_mult=(1, "a")', "model.ch_mult=(1, 'a'): use positive integers"),
        ("--config.data.image_size=15", "not divisible by the autoencoder's f=2"),
        ("--config.model.num_groups=3", "model.num_groups=3 does not divide the 8 channels"),
        ("--config.model.ch=0", "model.ch=0"),
        ("--config.train.checkpoint_every=0", "train.checkpoint_every=0 must be a positive"),
        ("--config.train.num_steps=0", "train.num_steps=0 must be a positive integer"),
        ("--config.train.keep_checkpoints=0", "keep at least the last checkpoint"),
        ("--config.train.batch_size=0", "train.batch_size=0 must be a positive integer"),
    ],
)
def test_a_config_no_run_can_use_is_one_line_before_anything_is_written(
    tmp_path, capsys, override, message
):
    workdir = tmp_path / "new"
    assert _train("ae", workdir, override) == 2
    assert message in _error_line(capsys)
    assert not workdir.exists()


def test_unusable_workdirs_are_one_line(tmp_path, capsys):
    assert main(["train", "--config", "ae/digits.py", "--workdir", ""]) == 2
    assert "--workdir is empty" in _error_line(capsys)
    (tmp_path / "file").write_text("x")
    assert _train("ae", tmp_path / "file") == 2
    assert "is a file, not a directory" in _error_line(capsys)


def test_stage2_records_its_stage1_run_and_meets_only_that_one(runs, tmp_path, capsys):
    config = json.loads((runs / "dit" / "config.json").read_text())
    ae_id = json.loads((runs / "ae" / "run.json").read_text())["id"]
    assert config["ae_workdir"] == str((runs / "ae").absolute())
    assert config["ae_run_id"] == ae_id
    # Given relative to where it runs, the path is recorded absolutely: sampling from another
    # directory finds it.
    import os

    here = os.getcwd()
    try:
        os.chdir(runs)
        assert (
            _train("dit", tmp_path / "rel", "--config.train.num_steps=1", "--config.ae_workdir=ae")
            == 0
        )
        os.chdir(tmp_path)
        out = tmp_path / "s.npz"
        assert (
            main(["sample", "--workdir", str(tmp_path / "rel"), "--num", "2", "--out", str(out)])
            == 0
        )
    finally:
        os.chdir(here)
    # Another stage-1 run at the recorded path (here: the same files with another identity) is
    # refused, not silently decoded with.
    (runs / "ae" / "run.json").write_text(json.dumps({"id": "another", "stage": "ae"}))
    capsys.readouterr()
    try:
        argv = ["sample", "--workdir", str(runs / "dit"), "--num", "2", "--out", str(out)]
        assert main(argv) == 2
        assert "holds another stage-1 run (id another)" in _error_line(capsys)
    finally:
        (runs / "ae" / "run.json").write_text(json.dumps({"id": ae_id, "stage": "ae"}))


def test_sampling_again_after_more_training_makes_new_samples(runs, tmp_path, capsys):
    out = tmp_path / "s.npz"
    argv = ["sample", "--workdir", str(runs / "dit"), "--num", "4", "--out", str(out)]
    assert main(argv) == 0
    first = np.load(out)["images"]
    assert "4 made" in capsys.readouterr().out and not out.with_suffix(".shards").exists()
    # The run trains on; the same command must not hand back the old checkpoint's images.
    more = ["--config.train.num_steps=4", f"--config.ae_workdir={runs / 'ae'}"]
    more += ["--config.optim.warmup_steps=1", "--config.optim.lr=0.05"]  # weights that move
    assert _train("dit", runs / "dit", *more) == 0
    capsys.readouterr()
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "4 made" in said and "reused" not in said and "step 4" in said
    assert not np.array_equal(np.load(out)["images"], first)


def test_a_full_disk_while_sampling_is_one_line_and_leaves_no_empty_file(
    runs, tmp_path, capsys, monkeypatch
):
    import errno
    import os

    import latentjax.generate

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(latentjax.generate.np, "savez", full)
    out = tmp_path / "s.npz"
    argv = ["sample", "--workdir", str(runs / "dit"), "--num", "2", "--out", str(out)]
    assert main(argv) == 2
    assert "No space left on device" in _error_line(capsys)
    assert not out.exists() and not out.with_suffix(".png").exists()
    assert main([*argv[:-1], str(tmp_path)]) == 2  # --out naming a directory
    assert "must end in .npz" in _error_line(capsys)


def test_a_damaged_config_json_is_one_line(runs, tmp_path, capsys):
    copy = tmp_path / "dit"
    shutil.copytree(runs / "dit", copy)
    (copy / "config.json").write_text('{"stage": "dit", "model": {')
    assert (
        main(["sample", "--workdir", str(copy), "--num", "2", "--out", str(tmp_path / "s.npz")])
        == 2
    )
    assert "config.json: not valid JSON" in _error_line(capsys)


def test_a_fine_tune_starts_from_init_from_with_its_model(runs, tmp_path):
    """``init_from``: the run's model section replaces the config's (a wider ``model.ch`` given
    here is overridden) and its parameters are the starting point: the first step's learning
    rate is 0 (the warm-up starts there), so one step leaves them exactly as the source run's
    last checkpoint (a from-scratch start would leave them at a fresh initialisation)."""
    tune = tmp_path / "tune"
    assert (
        _train(
            "ae", tune, f"--config.init_from={runs / 'ae'}", "--config.model.ch=16",
            "--config.train.num_steps=1",
        )
        == 0
    )  # fmt: skip
    config = json.loads((tune / "config.json").read_text())
    assert config["model"] == json.loads((runs / "ae" / "config.json").read_text())["model"]
    assert config["init_from"] == str((runs / "ae").absolute())
    source, tuned = _params(runs / "ae", TINY_AE), _params(tune, TINY_AE)
    assert int(tuned["step"]) == 1
    jax.tree.map(np.testing.assert_array_equal, tuned["params"]["ae"], source["params"]["ae"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--config.init_from=/nonexistent/run"], "init_from='/nonexistent/run': no stage-1 run"),
        (["--config.loss.eq_prob=1.5"], "loss.eq_prob=1.5 must be in [0, 1]"),
        (["--config.loss.eq_prob=0.5", "--config.loss.eq_scales=(0.3,)"], "loss.eq_scales has 0.3"),
        (["--config.loss.eq_prob=0.5", "--config.loss.eq_rotations=(4,)"], "quarter turns from"),
        (
            [
                "--config.loss.eq_prob=0.5",
                "--config.loss.eq_scales=(0.5,)",
                "--config.loss.disc_layers=2",
                "--config.train.num_steps=5",
            ],
            "its 4 px images are too small for the PatchGAN",
        ),
        (["--config.loss.vf_weight=0.1"], "loss.vf_weight > 0 needs loss.vf_encoder_weights"),
        (
            ["--config.loss.vf_weight=0.1", f"--config.loss.vf_encoder_weights={__file__}.x"],
            "no weights file",
        ),
    ],
)
def test_bad_fine_tune_and_eq_settings_are_one_line(tmp_path, capsys, overrides, message):
    workdir = tmp_path / "new"
    assert _train("ae", workdir, *overrides) == 2
    assert message in _error_line(capsys)
    assert not workdir.exists()


# --- latentjax eval on a stage-2 run (eval/generation.py) -------------------------------------


@pytest.fixture
def one_blas_thread():
    """The tiny scikit-learn fits of the digits' feature space and classifier: on 2 busy cores,
    BLAS threads spinning for each other stretch them (see test_distribution.py)."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def test_eval_sweep_is_the_report_of_what_sample_makes(runs, tmp_path, capsys, one_blas_thread):
    out = tmp_path / "card"
    argv = ["eval", "--workdir", str(runs / "dit"), "--num", "40", "--cfg", "1,3", "--steps", "2"]
    argv += ["--guidance-interval", "0.3,0.7"]
    assert main([*argv, "--seed", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "cfg 1 [0.3, 0.7]: recognised" in printed and "cfg 3 [0.3, 0.7]: recognised" in printed
    report = json.loads((out / "report.json").read_text())
    settings = [(p["cfg_scale"], p["guidance_interval"]) for p in report["points"]]
    assert settings == [(1.0, [0.3, 0.7]), (3.0, [0.3, 0.7])]
    assert report["default"] == {"cfg_scale": 1.25, "guidance_interval": [0.0, 1.0]}
    assert report["feature_space"] == "digits-v2" and report["num_samples"] == 40

    # The same images from `latentjax sample` (same seed and settings, classes in turn), judged
    # by distribution.report beside reconstructions of the training split made through the public
    # autoencoder API.
    config = Run.open(runs / "dit").config
    train = split_arrays(config.data, "train")
    test = split_arrays(config.data, "test")
    ae = latentjax.load_autoencoder(runs / "dit")
    recon = to_uint8(np.asarray(ae.decode(ae.encode(train["image"]))))
    npz = tmp_path / "s.npz"
    sample = ["sample", "--workdir", str(runs / "dit"), "--num", "40", "--steps", "2", "--cfg", "3"]
    sample += ["--guidance-interval", "0.3,0.7", "--seed", "5", "--out", str(npz), "--no-progress"]
    assert main([*sample, "--eval"]) == 0  # and judged as it is written: s.eval/
    assert "recognised" in capsys.readouterr().out
    card = json.loads((tmp_path / "s.eval" / "report.json").read_text())
    assert card["points"][0]["cfg_scale"] == 3.0 and card["num_samples"] == 40
    with np.load(npz) as f:
        images, labels = f["images"], f["labels"]
    np.testing.assert_array_equal(labels, np.arange(40) % 10)
    want = dist.report(
        to_uint8(train["image"]), train["label"], to_uint8(test["image"]), test["label"],
        images, labels, train_reconstructions=recon,
    )  # fmt: skip
    sets = (("samples", report["points"][1]), ("real_test", report["real_test"]))
    sets += (("samples", card["points"][0]), ("real_test", card["real_test"]))
    sets += (("real_heldout", report["real_heldout"]), ("real_heldout", card["real_heldout"]))
    for name, got in (*sets, ("recon", report["recon"]), ("recon", card["recon"])):
        assert {f"{name}_{k}" for k in got} >= {k for k in want if k.startswith(name)}
        for figure, value in got.items():
            if f"{name}_{figure}" in want:
                # The reconstructions here (one call on the whole split) and eval's (batches)
                # can round a few of the 1,501 x 256 pixels to the next grey level.
                rel = 1e-4 if name == "recon" else 1e-6
                assert value == pytest.approx(want[f"{name}_{figure}"], rel=rel, abs=1e-9), figure
    assert report["real_heldout"]["frechet_ratio"] == 1.0
    names = ["report.png", "guidance_sweep.png", "samples_cfg1_t0.3-0.7.png"]
    names += ["samples_cfg3_t0.3-0.7.png"]
    for png in names:
        assert np.asarray(Image.open(out / png)).std() > 0, png


def test_eval_stage2_errors_are_one_line(runs, tmp_path, capsys):
    before = sorted(p.name for p in (runs / "dit").iterdir())
    bad = [
        (["--cfg", "1,x"], "--cfg must be comma-separated numbers"),
        (["--cfg", "nan"], "guidance scale must be a finite number"),
        (["--guidance-interval", "0.8,0.2"], "guidance interval must satisfy"),
        (["--sampler", "rk45"], "rk45"),
        (["--max-images", "5"], "--max-images is for a stage-1 run"),
        (["--config.data.name=x"], "--config.data.name=x is for a stage-1 run"),
        (["--inception", str(tmp_path / "none.pth")], "--inception: no such file"),
        (["--vgg16", str(tmp_path / "none")], "--vgg16: no such directory"),
        (["--vgg16", str(tmp_path), "--inception", "x"], "--inception or --vgg16, not both"),
        (["--split", "nosuch", "--num", "4"], "nosuch"),
    ]
    for extra, message in bad:
        assert main(["eval", "--workdir", str(runs / "dit"), *extra]) == 2, extra
        assert message in _error_line(capsys)
    assert sorted(p.name for p in (runs / "dit").iterdir()) == before  # nothing written
    ae_run = runs / "ae"
    assert main(["eval", "--workdir", str(ae_run), "--cfg", "2"]) == 2
    assert "--cfg is for a stage-2 run" in _error_line(capsys)
    assert main(["eval", "--workdir", str(ae_run), "--vgg16", str(tmp_path / "none")]) == 2
    assert "--vgg16: no such directory" in _error_line(capsys)


def test_eval_stage2_judges_against_the_split_it_is_given(runs, tmp_path, capsys, one_blas_thread):
    """``--split`` is the held-out set of real-vs-real and of the reconstructions."""
    argv = ["eval", "--workdir", str(runs / "dit"), "--num", "20", "--steps", "2", "--cfg", "1"]
    assert main([*argv, "--split", "train", "--out", str(tmp_path / "card")]) == 0
    report = json.loads((tmp_path / "card" / "report.json").read_text())
    config = Run.open(runs / "dit").config
    sizes = {s: len(split_arrays(config.data, s)["label"]) for s in ("train", "test")}
    assert sizes["train"] != sizes["test"]
    assert report["num_real_test"] == sizes["train"] and report["num_real_train"] == sizes["train"]


def test_stage2_refuses_its_stage1_run_trained_on_since(runs, tmp_path, capsys):
    # Stage 2 on a copy of the stage-1 run (4 steps), which is then trained on to step 5: the
    # stage-2 run's latents belong to step 4's weights, and decoding them with step 5's would be
    # silently wrong. Sampling and training on are refused in one line; nothing is changed.
    ae, dit = tmp_path / "ae", tmp_path / "dit"
    shutil.copytree(runs / "ae", ae)
    assert _train("dit", dit, "--config.train.num_steps=1", f"--config.ae_workdir={ae}") == 0
    assert json.loads((dit / "config.json").read_text())["ae_step"] == 4
    assert _train("ae", ae, "--config.train.num_steps=5", "--config.train.checkpoint_every=1") == 0
    before = {p: p.read_bytes() for p in dit.rglob("*") if p.is_file()}
    capsys.readouterr()
    out = tmp_path / "s.npz"
    sample = ["sample", "--workdir", str(dit), "--num", "2", "--out", str(out)]
    assert main(sample) == 2
    line = _error_line(capsys)
    assert "holds its stage-1 run at step 5, but this stage-2 run was trained on it at step 4" in (
        line
    )
    assert not out.exists()
    assert _train("dit", dit, "--config.train.num_steps=2", f"--config.ae_workdir={ae}") == 2
    assert "at step 5, but this stage-2 run was trained on it at step 4" in _error_line(capsys)
    assert {p: p.read_bytes() for p in dit.rglob("*") if p.is_file()} == before
    # The remedy the line names: step 4, still kept, exported and named as ae_workdir.
    bad = tmp_path / "ae3"
    assert main(["export", "--workdir", str(ae), "--step", "3", "--out", str(bad)]) == 2
    assert "keeps no checkpoint of step 3; it keeps steps 4, 5" in _error_line(capsys)
    assert not bad.exists()
    ae4 = tmp_path / "ae4"
    assert main(["export", "--workdir", str(ae), "--step", "4", "--out", str(ae4)]) == 0
    assert json.loads((ae4 / "export.json").read_text())["step"] == 4
    assert _train("dit", dit, "--config.train.num_steps=2", f"--config.ae_workdir={ae4}") == 0
    assert main(sample) == 0 and np.load(out)["images"].shape[0] == 2
