"""Training the causal video autoencoder through the stage-1 trainer: what its step APPLIES (the
image recipe per frame), and ``latentjax train`` on the moving digits, resumed.

Tiny: 16 x 16 frames, 8 channels, x2 in space and time."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from latentjax.commands import main
from latentjax.config import load_config
from latentjax.data import moving_digits
from latentjax.losses import perceptual
from latentjax.parallel import mesh as mesh_lib
from latentjax.train import autoencoder as ae_train
from latentjax.train import state as state_lib
from latentjax.train.checkpoint import Checkpointer

TINY = [
    "data.image_size=16",
    "model.ch=8",
    "model.ch_mult=(1, 2)",
    "model.temporal_downsample=(True,)",
    "loss.disc_ndf=8",
    "loss.disc_layers=1",
    "train.batch_size=2",
]
KL_WEIGHT, PERCEPTUAL_WEIGHT, DISC_WEIGHT = 0.05, 0.7, 0.3


def key(seed: int) -> jax.Array:
    return jax.random.key(seed, impl="rbg")  # compiles faster on CPU (test_autoencoder.py)


RNG = key(3)


def clips() -> jax.Array:
    return jnp.tanh(jax.random.normal(key(1), (2, 5, 16, 16, 1)))  # [B, T, H, W, C]


def frames(x):
    return x.reshape(-1, *x.shape[2:])  # [B, T, H, W, C] -> [B T, H, W, C]


def per_example_sum(x):
    return x.reshape(x.shape[0], -1).sum(axis=1)


def reference(stage, ae_params, disc_params, n, judged=frames):
    """The per-frame recipe written out: L1 and the Haar term summed over each frame's pixels
    (mean over the B x T frames), the clip's KL over its T frames (batch mean), the hinge
    generator loss on what the PatchGAN ``judged`` (every frame; whole clips for the 3-D one);
    each term's gradient alone; the discriminator's hinge loss on real and detached
    reconstructions."""
    x = clips()
    rng = jax.random.fold_in(RNG, n)

    def terms(p):
        x_hat, q = stage.ae.apply(p, x, sample=True, rngs={"sample": rng})
        rec = jnp.mean(per_example_sum(jnp.abs(frames(x_hat) - frames(x))))
        per = jnp.mean(perceptual.haar_loss(frames(x), frames(x_hat)))
        k = 0.5 * (q.mean**2 + jnp.exp(q.logvar) - 1.0 - q.logvar)  # [B, t, h, w, z]
        kl = jnp.mean(per_example_sum(k)) / x.shape[1]
        adv = -jnp.mean(stage.disc.apply(disc_params, judged(x_hat)))
        return (rec, per, kl, adv), x_hat

    values, pull, x_hat = jax.vjp(terms, ae_params, has_aux=True)
    grads = [pull(tuple(jnp.float32(i == j) for j in range(4)))[0] for i in range(4)]
    fake = judged(jax.lax.stop_gradient(x_hat))

    def disc(d):
        real, fake_logits = stage.disc.apply(d, judged(x)), stage.disc.apply(d, fake)
        return 0.5 * (jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake_logits)))

    d_loss, g_disc = jax.value_and_grad(disc)(disc_params)
    return values, grads, d_loss, g_disc


def dot(a, b) -> float:
    return float(
        sum(np.vdot(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))
    )


def as64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def combine(*terms):
    return jax.tree.map(lambda *gs: sum(w * g for (w, _), g in zip(terms, gs, strict=True)),
                        *[as64(g) for _, g in terms])  # fmt: skip


def assert_trees_close(got, want, rtol=2e-4):
    floor = 1e-2 * max(float(np.abs(w).max()) for w in jax.tree.leaves(want))
    for (path, g), w in zip(
        jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want), strict=True
    ):
        atol = rtol * max(float(np.abs(w).max()), floor)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow  # compiles a video train step and its reference: minutes on 2 cores
@pytest.mark.parametrize("temporal_kernel", [0, 3])
def test_video_step_applies_the_per_frame_recipe(temporal_kernel):
    """The applied gradient is g_rec + p g_haar + beta g_kl + w g_adv (w: the adaptive weight
    at the decoder's last layer), with the KL per frame; the PatchGAN moves by the gradient of
    its hinge loss on frames, or on whole clips for the 3-D PatchGAN (``temporal_kernel`` 3).
    Both optimisers are SGD(1), so an update is minus a gradient."""
    config = load_config(
        "ae/digits_video.py",
        [
            *TINY,
            f"loss.kl_weight={KL_WEIGHT}",
            "loss.kl_warmup_steps=0",
            "loss.perceptual=haar",
            f"loss.perceptual_weight={PERCEPTUAL_WEIGHT}",
            f"loss.disc_weight={DISC_WEIGHT}",
            "loss.disc_start=0",
            f"loss.disc_temporal_kernel={temporal_kernel}",
        ],
    )
    mesh = mesh_lib.make_mesh(config.mesh.shape)
    task = ae_train.make_task(config, mesh)
    stage = task.train_steps["adversarial"].__self__
    stage.tx = stage.disc_tx = optax.sgd(1.0)
    rules = tuple(tuple(r) for r in config.mesh.rules)
    _, shardings, init = state_lib.build_state(task.init_state, mesh, rules, key(0))
    state = init(key(0))
    step = state_lib.jit_steps(task, shardings, mesh)["adversarial"]
    before = jax.device_get(state)  # the step donates its state
    judged = (lambda clip: clip) if temporal_kernel else frames
    # The 3-D PatchGAN's kernels span 3 frames; the 2-D one's are 4 x 4.
    assert before["params"]["disc"]["params"]["conv_0"]["kernel"].shape[:-2] == (
        (3, 4, 4) if temporal_kernel else (4, 4)
    )
    with mesh_lib.activation_rules(mesh, rules):
        after, metrics = step(state, task.frozen, {"video": clips()}, RNG)
    after = jax.device_get(after)
    values, grads, d_loss, g_disc = jax.device_get(
        jax.jit(functools.partial(reference, stage, judged=judged))(
            before["params"]["ae"], before["params"]["disc"], 0
        )
    )
    (rec, per, kl, adv), (g_rec, g_per, g_kl, g_adv) = values, grads
    g_nll = combine((1.0, g_rec), (PERCEPTUAL_WEIGHT, g_per), (KL_WEIGHT, g_kl))
    last = lambda g: np.asarray(g["params"]["decoder"]["conv_out"]["kernel"], np.float64)  # noqa: E731
    w = DISC_WEIGHT * min(np.linalg.norm(last(g_nll)) / (np.linalg.norm(last(g_adv)) + 1e-4), 1e4)
    got = jax.tree.map(
        lambda a, b: a - b, as64(before["params"]["ae"]), as64(after["params"]["ae"])
    )
    # The KL weight the step applied, read off the update: a KL summed over the clip instead of
    # per frame would show as 5 x beta.
    residual = jax.tree.map(
        lambda a, b: a - b, got, combine((1.0, g_rec), (PERCEPTUAL_WEIGHT, g_per), (w, g_adv))
    )
    np.testing.assert_allclose(dot(residual, g_kl) / dot(g_kl, g_kl), KL_WEIGHT, rtol=2e-2)
    assert_trees_close(got, combine((1.0, g_nll), (w, g_adv)))
    nll = rec + PERCEPTUAL_WEIGHT * per + KL_WEIGHT * kl
    np.testing.assert_allclose(float(metrics["nll"]), nll, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["kl"]), kl, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["adaptive_weight"]), w, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["g_adv"]), adv, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["d_loss"]), d_loss, rtol=1e-5)
    g_applied = jax.tree.map(
        lambda a, b: a - b, as64(before["params"]["disc"]), as64(after["params"]["disc"])
    )
    assert_trees_close(g_applied, as64(g_disc))


# --- latentjax train ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video_data_dir(tmp_path_factory) -> str:
    return moving_digits.prepare_moving_digits(str(tmp_path_factory.mktemp("tfds")))


def _train(workdir: Path, *extra: str, config: str = "ae/digits_video.py") -> int:
    tiny = [f"--config.{o}" for o in TINY]
    steps = ["--config.train.log_every=1", "--config.train.eval_every=1"]
    steps += ["--config.train.checkpoint_every=1"]  # the PatchGAN stays off (the test above)
    argv = ["train", "--config", config, "--workdir", str(workdir), "--no-progress"]
    return main([*argv, *tiny, *steps, *extra])


@pytest.mark.slow
def test_train_and_resume_on_moving_digits(tmp_path, video_data_dir, monkeypatch, capsys):
    monkeypatch.setenv("LATENTJAX_DATA_DIR", video_data_dir)
    run = tmp_path / "video"
    assert _train(run, "--config.train.num_steps=1") == 0
    assert _train(run, "--config.train.num_steps=2") == 0  # resumed
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]  # nothing logged twice
    assert all(np.isfinite(r["test_psnr"]) and r["test_psnr"] > 0 for r in records)
    assert records[0]["nll"] != records[1]["nll"]
    assert Checkpointer(run / "checkpoints").all_steps() == [1, 2]
    assert json.loads((run / "config.json").read_text())["model"]["family"] == "video"
    assert main(["eval", "--workdir", str(run), "--max-images", "4", "--batch-size", "2"]) == 0
    report = json.loads((run / "eval" / "report.json").read_text())
    assert report["num_clips"] == 4 and np.isfinite(report["flicker"])
    assert "flicker" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("config", "dataset", "says"),
    [
        ("ae/digits_video.py", "latentjax_digits", "holds images, but the model takes clips"),
        ("ae/digits.py", moving_digits.NAME, "holds clips, but the model takes images"),
    ],
)
def test_model_and_dataset_kinds_must_match(
    tmp_path, video_data_dir, digits_data_dir, monkeypatch, capsys, config, dataset, says
):
    data_dir = video_data_dir if dataset == moving_digits.NAME else digits_data_dir
    run = tmp_path / "run"
    extra = [f"--config.data.name={dataset}", f"--config.data.data_dir={data_dir}"]
    assert _train(run, *extra, config=config) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("latentjax: error:") and says in err[0]
    assert not run.exists() or not any(run.iterdir())


def test_what_does_not_take_a_video_run_yet_says_so_in_one_line(tmp_path, capsys):
    """A video stage-1 run given images where it takes clips: encode of an image dataset, a
    stage 2 on it with an image dataset (or a latent cache that is not there), the Python API.
    One line each, nothing written: the checks read config.json (and the dataset's first
    example) only, before any checkpoint."""
    import latentjax
    from latentjax.config import to_json
    from latentjax.errors import LatentjaxError

    run = tmp_path / "video"
    run.mkdir()
    (run / "config.json").write_text(to_json(load_config("ae/digits_video.py")))

    def one_line() -> str:
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("latentjax: error:"), err
        return err[0]

    argv = ["encode", "--workdir", str(run), "--out", str(tmp_path / "cache")]
    assert main([*argv, "--data", "latentjax_digits"]) == 2
    assert "holds images, but the autoencoder of" in one_line()
    dit = tmp_path / "dit"
    assert (
        main(
            [
                "train",
                "--config",
                "dit/digits.py",
                "--workdir",
                str(dit),
                f"--config.ae_workdir={run}",
            ]
        )
        == 2
    )
    assert "holds images, but the model takes clips" in one_line()
    cache = [f"--config.ae_workdir={run}", f"--config.data.latent_cache={tmp_path / 'cache'}"]
    assert main(["train", "--config", "dit/digits.py", "--workdir", str(dit), *cache]) == 2
    assert "no latent cache there" in one_line()
    with pytest.raises(LatentjaxError, match="video autoencoder run; load_autoencoder takes image"):
        latentjax.load_autoencoder(run)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["config.json", "video"]


def test_eval_of_a_video_run_is_its_per_frame_report_card(tmp_path, video_data_dir, monkeypatch):
    """``latentjax eval`` on a video stage-1 run (here an inference checkpoint of freshly
    initialised weights: what is judged is the card's wiring, not a trained model) against the
    model applied by hand and the figures computed in float64 numpy."""
    from PIL import Image

    from latentjax.data.pipeline import split_arrays
    from latentjax.factory import build_autoencoder
    from latentjax.train.converted import EXPORTED, save_checkpoint

    monkeypatch.setenv("LATENTJAX_DATA_DIR", video_data_dir)
    config = load_config("ae/digits_video.py", [*TINY, "model.num_res_blocks=1"])
    ae = build_autoencoder(config.model)
    clip = jnp.zeros((1, 5, 16, 16, 1))
    params = nn.unbox(jax.jit(ae.init)({"params": key(0)}, clip))
    run = tmp_path / "video"
    stage = ae_train.AutoencoderStage(config)
    tree = {"params": {"ae": params}}
    save_checkpoint(run, config, stage.init_state, tree, EXPORTED["ae"], "test")
    argv = ["eval", "--workdir", str(run), "--max-images", "3", "--batch-size", "2"]
    assert main([*argv, "--num-show", "2"]) == 0
    report = json.loads((run / "eval" / "report.json").read_text())

    x = np.asarray(split_arrays(config.data, config.data.eval_split)["video"][:3], np.float32)
    z = ae.apply(params, x, method=ae.encode).mode()
    y = np.clip(np.asarray(ae.apply(params, z, method=ae.decode), np.float64), -1.0, 1.0)
    x = x.astype(np.float64)
    mse = ((x - y) ** 2).mean(axis=(2, 3, 4))  # [N, T]
    psnr = 10 * np.log10(4.0 / mse)  # pixels in [-1, 1]: a range of 2
    flicker = np.abs(np.diff(y, axis=1) - np.diff(x, axis=1)).mean(axis=(1, 2, 3, 4))
    n, t, h, w, c = x.shape
    assert report["num_clips"] == 3 and report["clip_shape"] == [t, h, w, c]
    assert report["latent_shape"] == list(z.shape[1:]) and z.shape[1] == 1 + (t - 1) // 2
    assert report["size_reduction"] == pytest.approx(t * h * w * c / np.prod(z.shape[1:]))
    assert report["psnr"] == pytest.approx(psnr.mean(), rel=1e-4)
    np.testing.assert_allclose(report["psnr_per_frame"], psnr.mean(axis=0), rtol=1e-4)
    assert report["flicker"] == pytest.approx(flicker.mean(), rel=1e-4)
    assert report["ssim"] is not None and -1 < report["ssim"] < 1
    assert len(report["latent"]["kl_per_channel"]) == z.shape[-1]
    strip = np.asarray(Image.open(run / "eval" / "frames.png"))
    assert strip.std() > 0
