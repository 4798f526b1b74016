"""`latentjax convert ae|dit` writes inference checkpoints that the run-directory commands read:
a converted diffusers autoencoder is a stage-1 run (`eval`, `encode`, the trainer's restore, with
diffusers' encoder outputs), and a converted DiT with `--ae` is a stage-2 run that `sample`
decodes through it. Tiny random-weight models (as tests/test_convert_*.py) on the 8 px digits."""

import json

import diffusers
import jax
import numpy as np
import pytest
import torch
from test_convert_ae import rel_l2
from test_convert_dit import RefDiT, perturb

import latentjax
from latentjax.commands import main
from latentjax.config import from_json
from latentjax.parallel.mesh import make_mesh
from latentjax.run import Run

# What an original DiT .pt does not say (its test model: 2 heads, 3 classes + the null row).
HEADS_CLASSES = ["--num-heads", "2", "--num-classes", "3"]
# The digits' run config around the converted network: 8 x 8 x 1 images, f = 2 -> 4 x 4 x 4.
AE_RUN = ["--config", "ae/digits.py", "--config.data.image_size=8"]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("latentjax: error: "), err
    return err[0]


@pytest.fixture(scope="module")
def converted_ae(tmp_path_factory, digits_data_dir):
    """(diffusers model, `latentjax convert ae` output directory)."""
    tmp = tmp_path_factory.mktemp("convert")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        in_channels=1,
        out_channels=1,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=8,
        scaling_factor=0.18215,
    ).eval()
    perturb(vae)
    vae.save_pretrained(tmp / "vae")
    out = tmp / "ae"
    argv = ["convert", "ae", str(tmp / "vae"), "--out", str(out), *AE_RUN]
    assert main([*argv, f"--config.data.data_dir={digits_data_dir}"]) == 0
    return vae, out


@pytest.fixture(scope="module")
def dit_pt(tmp_path_factory):
    torch.manual_seed(0)
    ref = RefDiT(size=4, p=2, cin=4, d=32, depth=1, heads=2, classes=3, learn_sigma=True)
    path = tmp_path_factory.mktemp("dit") / "dit.pt"
    torch.save(ref.state_dict(), path)
    return path


def test_converted_autoencoder_is_a_stage1_run(converted_ae, tmp_path):
    from latentjax.train.autoencoder import load_autoencoder

    vae, out = converted_ae
    export = json.loads((out / "export.json").read_text())
    assert export["keys"] == ["params.ae"] and export["step"] == 0
    stats = json.loads((out / "latent_stats.json").read_text())
    assert (stats["shift"], stats["scale"]) == (0.0, 0.18215)
    config = from_json((out / "config.json").read_text())
    assert config.stage == "ae" and config.model.ch_mult == (1, 2)
    assert config.data.image_size == 8 and config.mesh.shape.to_dict()["fsdp"] == 1

    stage, params = load_autoencoder(Run.open(out), make_mesh(config.mesh.shape))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 1)).astype(np.float32)
    with torch.no_grad():
        want = vae.encode(torch.from_numpy(x).permute(0, 3, 1, 2)).latent_dist.mean
    got = stage.ae.apply(params, x, method=stage.ae.encode).mean
    assert rel_l2(got, want.permute(0, 2, 3, 1).numpy()) <= 1e-4
    # The converted format beside it still loads, with the diffusers normalisation.
    ae = latentjax.load_autoencoder(out)
    assert (ae.latent_shift, ae.latent_scale) == (0.0, 0.18215)

    # `encode` writes a latent cache from it, as from a trained run.
    argv = ["encode", "--workdir", str(out), "--split", "test", "--out", str(tmp_path / "lat")]
    assert main(argv) == 0
    assert any((tmp_path / "lat").iterdir())


def test_eval_on_a_converted_autoencoder(converted_ae):
    _, out = converted_ae
    assert main(["eval", "--workdir", str(out), "--max-images", "16", "--num-show", "2"]) == 0
    report = json.loads((out / "eval" / "report.json").read_text())
    assert report["image_shape"] == [8, 8, 1] and report["latent_shape"] == [4, 4, 4]
    assert np.isfinite(report["psnr"])


def test_converted_dit_samples_through_the_converted_autoencoder(converted_ae, dit_pt, tmp_path):
    from latentjax.generate import load_generator

    _, ae_dir = converted_ae
    out = tmp_path / "dit"
    argv = ["convert", "dit", str(dit_pt), "--out", str(out), *HEADS_CLASSES]
    assert main([*argv, "--ae", str(ae_dir)]) == 0
    config = from_json((out / "config.json").read_text())
    d = config.diffusion
    assert (d.path, d.prediction, config.model.learn_sigma) == ("ddpm_linear", "eps", True)
    # DiT's own sampler guides 3 of the 4 latent channels: the samples below do too.
    assert (config.sample.guidance_channels, config.sample.cfg_scale) == (3, 4.0)
    assert config.data.image_size == 8 and config.ae_workdir == str(ae_dir.absolute())
    stats = json.loads((out / "latent_stats.json").read_text())
    assert (stats["shift"], stats["scale"]) == (0.0, 0.18215)
    # The EMA parameters sample reads are the converted ones.
    generator = load_generator(out, make_mesh(config.mesh.shape))
    converted = latentjax.load_dit(out).params
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(generator.ema_params), converted)

    npz = tmp_path / "x.npz"
    argv = ["sample", "--workdir", str(out), "--num", "4", "--steps", "2", "--out", str(npz)]
    assert main([*argv, "--batch-size", "4", "--no-progress"]) == 0
    with np.load(npz) as f:
        assert f["images"].shape == (4, 8, 8, 1) and f["images"].dtype == np.uint8
        assert list(f["labels"]) == [0, 1, 2, 0]


def test_converted_dit_without_ae_cannot_sample(converted_ae, dit_pt, tmp_path, capsys):
    out = tmp_path / "dit"
    argv = ["convert", "dit", str(dit_pt), "--out", str(out), *HEADS_CLASSES]
    assert main(argv) == 0
    assert not (out / "latent_stats.json").exists()
    capsys.readouterr()
    sample = ["sample", "--workdir", str(out), "--num", "4", "--out", str(tmp_path / "x.npz")]
    assert main(sample) == 2
    assert "--ae AE_DIR" in _error_line(capsys)
    # Run-config overrides apply, but not to the converted model.
    _, ae_dir = converted_ae
    again = [*argv[:4], str(tmp_path / "other"), *argv[5:], "--ae", str(ae_dir)]
    assert main([*again, "--config.sample.num_steps=2"]) == 0
    assert from_json((tmp_path / "other" / "config.json").read_text()).sample.num_steps == 2
    assert main([*again, "--config.model.depth=2"]) == 2
    assert "the model is the converted network's" in _error_line(capsys)
    # A DiT for another resolution than the autoencoder's: named, with the fix.
    torch.manual_seed(0)
    big = RefDiT(size=8, p=2, cin=4, d=32, depth=1, heads=2, classes=3, learn_sigma=True)
    torch.save(big.state_dict(), tmp_path / "big.pt")
    again[2] = str(tmp_path / "big.pt")
    assert main(again) == 2
    assert "--config.data.image_size=16" in _error_line(capsys)


def test_stage2_training_on_a_converted_autoencoder(converted_ae, digits_data_dir, tmp_path):
    from test_cli import TINY_DIT

    _, ae_dir = converted_ae
    workdir = tmp_path / "dit"
    argv = ["train", "--config", "configs/dit/digits.py", "--workdir", str(workdir)]
    extra = [f"--config.ae_workdir={ae_dir}", f"--config.data.data_dir={digits_data_dir}"]
    assert main([*argv, "--no-progress", *TINY_DIT, *extra, "--config.train.num_steps=2"]) == 0
    assert (workdir / "latent_stats.json").exists()
    out = tmp_path / "x.npz"
    sample = ["sample", "--workdir", str(workdir), "--num", "2", "--steps", "2", "--out", str(out)]
    assert main([*sample, "--batch-size", "2", "--no-progress"]) == 0


def test_converted_diffusers_dit_keeps_its_numerics(tmp_path):
    """diffusers' DiT differs from the paper's code in two details (model options): the run
    config carries them into the trainer's `build_dit`."""
    from test_convert_dit import inputs, make_diffusers_dit

    from latentjax.factory import build_dit

    _, src = make_diffusers_dit(tmp_path)
    assert main(["convert", "dit", str(src), "--out", str(tmp_path / "c")]) == 0
    config = from_json((tmp_path / "c" / "config.json").read_text())
    dit = build_dit(config.model, (8, 8, 4))
    assert (dit.timestep_freq_shift, dit.mlp_norm_eps) == (1.0, 1e-5)
    converted = latentjax.load_dit(tmp_path / "c")
    x, t, y = inputs(8, 4, 6)
    ours = jax.jit(dit.apply)(converted.params, x, t, y)  # jitted, as `converted` is
    np.testing.assert_array_equal(ours, converted(x, t, y))


def test_convert_never_replaces_a_run_it_did_not_write(converted_ae, tmp_path, capsys):
    vae_dir = converted_ae[1].parent / "vae"
    # A training run (here: a directory holding a run's files, without a conversion's marker).
    run = tmp_path / "trained"
    run.mkdir()
    (run / "config.json").write_text('{"stage": "ae"}')
    (run / "latent_stats.json").write_text('{"shift": 0.5, "scale": 2.0}')
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert main(["convert", "ae", str(vae_dir), "--out", str(run), *AE_RUN]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds something else than an earlier conversion" in err[0], err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    # An earlier conversion is replaced (converting again is how a conversion is redone).
    again = tmp_path / "again"
    assert main(["convert", "ae", str(vae_dir), "--out", str(again), *AE_RUN]) == 0
    assert main(["convert", "ae", str(vae_dir), "--out", str(again), *AE_RUN]) == 0
