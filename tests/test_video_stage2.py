"""Stage 2 on a video autoencoder's latents: the video DiT trained through ``latentjax train``
on the moving digits' clips, encoded in the step by the frozen causal encoder.

The stage-1 run is an inference checkpoint of freshly initialised tiny weights (what is tested is
the wiring, not a trained model): 16 x 16 frames, x2 in space and time, 6 latent channels."""

from __future__ import annotations

import json
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from latentjax.commands import main
from latentjax.config import load_config
from latentjax.data import moving_digits
from latentjax.data.normalization import normalize
from latentjax.factory import build_autoencoder
from latentjax.models.video_dit import VideoDiT
from latentjax.parallel import mesh as mesh_lib
from latentjax.train import dit as dit_train

AE = [
    "data.image_size=16",
    "model.ch=8",
    "model.ch_mult=(1, 2)",
    "model.temporal_downsample=(True,)",
    "model.num_res_blocks=1",
    "loss.disc_ndf=8",
    "loss.disc_layers=1",
]
DIT = [
    f"--config.data.name={moving_digits.NAME}",
    "--config.data.image_size=16",
    "--config.data.latent_stats_batches=2",
    "--config.model.hidden_size=16",
    "--config.model.depth=2",
    "--config.model.num_heads=2",
    "--config.model.patch_size=2",
    "--config.model.attention=factorised",
    "--config.train.batch_size=8",
    "--config.train.num_steps=2",
    "--config.train.log_every=1",
    "--config.train.eval_every=2",
    "--config.train.eval_images=2",
    "--config.train.checkpoint_every=2",
    "--config.sample.num_steps=2",
]


@pytest.fixture(scope="module")
def video_ae(tmp_path_factory) -> tuple[Path, object, dict]:
    from latentjax.train.autoencoder import AutoencoderStage
    from latentjax.train.converted import EXPORTED, save_checkpoint

    config = load_config("ae/digits_video.py", AE)
    ae = build_autoencoder(config.model)
    params = nn.unbox(jax.jit(ae.init)({"params": jax.random.key(0)}, jnp.zeros((1, 5, 16, 16, 1))))
    run = tmp_path_factory.mktemp("video") / "ae"
    tree = {"params": {"ae": params}}
    save_checkpoint(run, config, AutoencoderStage(config).init_state, tree, EXPORTED["ae"], "test")
    return run, ae, params


@pytest.fixture(scope="module")
def trained(video_ae, tmp_path_factory):
    run, _, _ = video_ae
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    workdir = tmp_path_factory.mktemp("video") / "dit"
    args = ["train", "--config", "dit/digits.py", "--workdir", str(workdir), "--no-progress"]
    extra = [f"--config.ae_workdir={run}", f"--config.data.data_dir={data_dir}"]
    assert main([*args, *extra, *DIT]) == 0
    return workdir


def test_a_video_dit_trains_on_the_clips_latents(trained):
    config = json.loads((trained / "config.json").read_text())
    assert config["data"]["frames"] == moving_digits.FRAMES  # recorded from the dataset
    steps = [json.loads(x)["step"] for x in (trained / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    stats = json.loads((trained / "latent_stats.json").read_text())
    assert len(stats["channel_mean"]) == 4 and stats["scale"] > 0  # the 4 latent channels
    # The run is a video DiT: its exported weights load into one over the clip latent grid.
    assert main(["export", "--workdir", str(trained), "--out", str(trained.parent / "x")]) == 0


def test_the_step_encodes_the_clips_through_the_frozen_causal_encoder(video_ae):
    """``DiTStage.latents`` of a batch of clips: the posterior sample of the frozen encoder,
    normalised; the network is the video DiT over (t, h, w, c)."""
    _, ae, params = video_ae
    config = load_config("dit/digits.py", [o.removeprefix("--config.") for o in DIT])
    shape = (5, 8, 8, 4)  # 9 frames: 1 + 8 / 2 latent frames of 8 x 8 x 4
    stage = dit_train.DiTStage(config, ae, shape)
    assert isinstance(stage.dit, VideoDiT) and stage.dit.attention == "factorised"
    mesh = mesh_lib.make_mesh({"data": 1, "fsdp": 1, "tensor": 1})
    frozen, _ = dit_train.frozen_inputs(params, {"shift": 0.1, "scale": 1.5}, mesh)
    clips = jnp.tanh(jax.random.normal(jax.random.key(1), (2, 9, 16, 16, 1)))
    rng = jax.random.key(2)
    got = stage.latents(frozen, {"video": clips, "label": jnp.zeros(2, int)}, rng)
    posterior = ae.apply(params, clips, method=ae.encode)
    want = normalize(posterior.sample(rng), 0.1, 1.5)
    chex.assert_shape(got, (2, *shape))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.asarray(posterior.std).min() > 0  # a sample, not the mode


def test_sample_writes_videos_a_frame_grid_and_an_animation(trained, tmp_path, capsys):
    from PIL import Image

    argv = ["sample", "--workdir", str(trained), "--num", "4", "--steps", "2", "--no-progress"]
    assert main([*argv, "--batch-size", "4", "--out", str(tmp_path / "a.npz")]) == 0
    assert "wrote 4 clips" in capsys.readouterr().out
    with np.load(tmp_path / "a.npz") as data:
        videos, labels = data["videos"], data["labels"]
        assert "images" not in data
    assert videos.shape == (4, moving_digits.FRAMES, 16, 16, 1) and videos.dtype == np.uint8
    assert labels.tolist() == [0, 1, 2, 3]
    gif = Image.open(tmp_path / "a.gif")
    assert gif.n_frames == moving_digits.FRAMES and gif.info["loop"] == 0
    grid = np.asarray(Image.open(tmp_path / "a.png"))
    assert grid.shape[0] > 4 * 16 and grid.shape[1] > moving_digits.FRAMES * 16
    # A clip depends on the seed and its index, not on how the batch was cut.
    assert main([*argv, "--batch-size", "2", "--out", str(tmp_path / "b.npz")]) == 0
    with np.load(tmp_path / "b.npz") as data:
        np.testing.assert_array_equal(data["videos"], videos)
    assert main([*argv, "--eval", "--out", str(tmp_path / "c.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "for clips of a video stage 2 it is not built yet" in err[0]


def test_the_video_demos_judge_reads_the_clips_it_wrote(trained, tmp_path):
    """``judge_video_run`` (what ``latentjax demo --video`` reports) recomputed from the clips it
    wrote, the real held-out clips and the frame classifier."""
    from latentjax.data.pipeline import split_arrays
    from latentjax.demo import judge_video_run
    from latentjax.eval import motion
    from latentjax.eval.images import to_uint8
    from latentjax.run import Run

    times: dict = {}
    got = judge_video_run(trained, tmp_path, 1, times)
    with np.load(tmp_path / "samples.npz") as data:
        clips, labels = data["videos"], data["labels"]
    assert labels.tolist() == list(range(10)) and got["num_clips_judged"] == 10
    assert (tmp_path / "samples.gif").is_file() and (tmp_path / "samples.png").is_file()
    data = Run.open(trained).config.data
    train, test = split_arrays(data, "train"), split_arrays(data, "test")
    real = to_uint8(np.asarray(test["video"]))
    judge = motion.FrameClassifier(to_uint8(np.asarray(train["video"])), train["label"], 8)
    assert got["recognised_per_frame_samples"] == judge.recognised(clips, labels).mean()
    assert got["recognised_per_frame_real_test"] == judge.accuracy(real, test["label"])
    assert got["motion_samples"] == motion.motion_report(real, clips)
    assert got["diversity_samples"] == motion.diversity_report(
        real, test["label"], clips, labels, glyph=8
    )
    assert times["sample_s"] > 0 and got["clip_shape"] == [moving_digits.FRAMES, 16, 16, 1]


@pytest.mark.slow  # compiles two video train steps: about 4 minutes on 2 cores
def test_demo_video_quick_trains_both_stages_and_judges_the_clips(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LATENTJAX_DATA_DIR", str(tmp_path / "tfds"))
    run = tmp_path / "demo"
    assert main(["demo", "--video", "--quick", "--workdir", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["quick"] and summary["num_clips_judged"] == 20
    assert "recognised in" in capsys.readouterr().out
    for name in ("video_ae/config.json", "video_dit/config.json", "samples.npz", "samples.gif"):
        assert (run / name).is_file(), name
    # Stage 2 read the clips' latents from the cache the demo encoded with its autoencoder.
    dit_config = json.loads((run / "video_dit/config.json").read_text())
    assert dit_config["data"]["latent_cache"] == str(run / "video_latents")
    assert summary["encode_s"] > 0


def test_a_latent_cache_of_clips_is_what_stage2_trains_on(video_ae, tmp_path):
    """``encode`` of a video run caches each clip's posterior (and its mirror with ``--flip``)
    as [t, h, w, c]; stage 2 trains from it, its clip length read from the cache."""
    from latentjax.data import latents, pipeline

    run, ae, params = video_ae
    data_dir = str(tmp_path / "tfds")
    cache = tmp_path / "cache"
    argv = ["encode", "--workdir", str(run), "--split", "test", "--data-dir", data_dir, "--flip"]
    assert main([*argv, "--out", str(cache), "--batch-size", "8"]) == 0
    info = latents.read_cache_info(str(cache))
    assert info["frames"] == moving_digits.FRAMES and info["latent_shape"] == [5, 8, 8, 4]
    clips = pipeline.split_arrays(_video_data(data_dir), "test")["video"]
    encode = jax.jit(lambda x: ae.apply(params, x, method=ae.encode))
    for split, x in (("test", clips), ("test_flip", clips[..., ::-1, :])):
        source = pipeline.load_source(latents.DEFAULT_NAME, split, str(cache))
        posterior = encode(jnp.asarray(x))
        # tfds shuffles records as it writes them: compare in an order of their own.
        want = np.argsort(np.asarray(posterior.mean).reshape(len(x), -1).sum(1))
        cached = sorted((source[i] for i in range(len(source))), key=lambda e: e["mean"].sum())
        assert len(cached) == len(x) == 296
        for e, j in zip(cached[:5], want[:5], strict=True):
            np.testing.assert_allclose(e["mean"], posterior.mean[j], atol=1e-5)
            np.testing.assert_allclose(e["std"], posterior.std[j], rtol=1e-4, atol=1e-6)
    workdir = tmp_path / "dit"
    args = ["train", "--config", "dit/digits.py", "--workdir", str(workdir), "--no-progress"]
    extra = [f"--config.ae_workdir={run}", f"--config.data.latent_cache={cache}"]
    extra += ["--config.data.train_split=test", "--config.data.flip=True"]
    extra += ["--config.train.eval_images=0"]
    assert main([*args, *extra, *DIT]) == 0
    assert json.loads((workdir / "config.json").read_text())["data"]["frames"] == 9


def _video_data(data_dir: str):
    config = load_config("dit/digits_video.py", ["data.image_size=16", f"data.data_dir={data_dir}"])
    return config.data
