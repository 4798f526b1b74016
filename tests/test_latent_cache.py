"""``latentjax encode`` (latent cache read by stage 2) and ``latentjax export`` (inference
checkpoint), on a tiny stage-1 run of the digits."""

from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny

from latentjax import paths
from latentjax.commands import main
from latentjax.config import from_json
from latentjax.data import latents, pipeline
from latentjax.data.pipeline import DataError
from latentjax.errors import LatentjaxError
from latentjax.factory import latent_shape
from latentjax.generate import load_generator
from latentjax.parallel import mesh as mesh_lib
from latentjax.run import Run
from latentjax.train import dit
from latentjax.train.autoencoder import load_autoencoder

TINY_DIT = [
    *tiny.DIT,
    "--config.train.num_steps=2",
    "--config.train.checkpoint_every=2",
]


def _train_dit(workdir: Path, *extra: str) -> int:
    """Stage 2 through the command line (stage 1 is the suite's tiny run, conftest.py)."""
    args = ["train", "--config", "configs/dit/digits.py", "--workdir", str(workdir)]
    return main([*args, "--no-progress", *TINY_DIT, *extra])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits_data_dir, tiny_ae_run):
    mp = pytest.MonkeyPatch()
    mp.setenv("LATENTJAX_DATA_DIR", digits_data_dir)
    root = tmp_path_factory.mktemp("runs")
    shutil.copytree(tiny_ae_run, root / "ae")  # the suite's tiny stage 1 (conftest.py)
    args = ["encode", "--workdir", str(root / "ae"), "--split", "test", "--out"]
    assert main([*args, str(root / "cache"), "--flip", "--batch-size", "64"]) == 0
    yield root
    mp.undo()


def _data_dir() -> str:
    return os.environ["LATENTJAX_DATA_DIR"]  # set by the runs fixture


@functools.cache
def _direct(root: Path, flip: bool):
    """The test split's images and their posterior mean and std computed here in one batch;
    also the stage-1 stage and parameters. Cached: several tests compare against it."""
    mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    run = Run.open(root / "ae")
    config = run.config
    stage, params = load_autoencoder(run, mesh)
    source = pipeline.load_source(config.data.name, "test", _data_dir())
    ds = pipeline.make_dataset(
        source,
        global_batch_size=len(source),
        image_size=8,
        shuffle=False,
        repeat=False,
        process_index=0,
        process_count=1,
    )
    batch = next(iter(ds))
    images = batch["image"][:, :, ::-1] if flip else batch["image"]
    posterior = stage.ae.apply(params, jnp.asarray(images), method=stage.ae.encode)
    mean, std = np.asarray(posterior.mean), np.asarray(posterior.std)
    return images, mean, std, batch["label"], (stage, params, mesh)


@pytest.mark.parametrize("flip", [False, True])
def test_cache_holds_the_encoder_posterior(runs, flip):
    _, mean, std, labels, _ = _direct(runs, flip)
    split = "test" + ("_flip" if flip else "")
    source = pipeline.load_source(latents.DEFAULT_NAME, split, str(runs / "cache"))
    assert len(source) == len(mean) == 296
    cached = sorted((source[i] for i in range(len(source))), key=lambda e: e["mean"].sum())
    order = np.argsort(mean.reshape(len(mean), -1).sum(1), kind="stable")
    for e, j in zip(cached, order, strict=True):
        np.testing.assert_allclose(e["mean"], mean[j], atol=1e-5)
        np.testing.assert_allclose(e["std"], std[j], rtol=1e-4)
        assert int(e["label"]) == int(labels[j])
    assert np.all(std > 0)  # a KL bottleneck: the posterior is not a point


def test_cached_step_draws_the_same_latents_as_encoding(runs):
    """The trainer's z from a cached batch equals the frozen encoder's posterior sample for the
    same key: the cache changes the cost, not the objective."""
    images, mean, std, _, (ae_stage, params, mesh) = _direct(runs, False)
    images = jnp.asarray(images[:8])
    from latentjax.config import load_config

    dit_config = load_config("dit/digits.py", [o.removeprefix("--config.") for o in TINY_DIT])
    stage = dit.DiTStage(dit_config, ae_stage.ae, latent_shape(ae_stage.config))
    frozen, _ = dit.frozen_inputs(params, {"shift": 0.3, "scale": 2.0}, mesh)
    rng = jax.random.key(5)
    from_images = stage.latents(frozen, {"image": images}, rng)
    cached = {"mean": jnp.asarray(mean[:8]), "std": jnp.asarray(std[:8])}
    np.testing.assert_allclose(stage.latents(frozen, cached, rng), from_images, atol=1e-5)


@pytest.fixture(scope="module")
def cached_dit(runs) -> Path:
    """Stage 2 trained two steps from the local cache with its flipped copy."""
    common = [f"--config.ae_workdir={runs / 'ae'}", "--config.data.train_split=test"]
    cache = f"--config.data.latent_cache={runs / 'cache'}"
    assert _train_dit(runs / "dit", *common, cache, "--config.data.flip=True") == 0
    return runs / "dit"


def _losses(workdir: Path) -> list[float]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["loss"] for x in lines]


def test_stage2_trains_from_the_cache_with_flips(cached_dit):
    stats = json.loads((cached_dit / "latent_stats.json").read_text())
    assert stats["num_batches"] == 2 and stats["scale"] > 0
    lines = (cached_dit / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2]


def _records(data_dir: str, split: str) -> list[dict]:
    source = pipeline.load_source(latents.DEFAULT_NAME, split, data_dir)
    return [source[i] for i in range(len(source))]


def test_a_cache_encoded_into_a_bucket_is_what_stage2_reads_back(
    runs, cached_dit, gcs_bucket, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv(latents.MIRROR_ENV, str(tmp_path / "mirror"))
    out = f"{gcs_bucket}/caches/{tmp_path.name}"
    args = ["encode", "--workdir", str(runs / "ae"), "--split", "test", "--flip"]
    assert main([*args, "--out", out, "--batch-size", "64"]) == 0
    capsys.readouterr()
    # The bucket holds the local cache's records; this host reads them from its copy.
    copy = Path(latents.local_copy(out))
    assert copy.is_relative_to(tmp_path / "mirror")
    for split in ("test", "test_flip"):
        for a, b in zip(
            _records(str(copy.parent), split), _records(str(runs / "cache"), split), strict=True
        ):
            chex.assert_trees_all_equal(a, b)
    # Stage 2 from the bucket: the same losses as from the local cache, bit for bit.
    common = [f"--config.ae_workdir={runs / 'ae'}", "--config.data.train_split=test"]
    cache = f"--config.data.latent_cache={out}"
    assert _train_dit(tmp_path / "dit", *common, cache, "--config.data.flip=True") == 0
    assert _losses(tmp_path / "dit") == _losses(cached_dit)
    # A second encode into the same folder is refused before anything is encoded.
    assert main([*args, "--out", out]) == 2
    assert "already exists" in capsys.readouterr().err
    # A copy cut short is completed; a different cache at the same URL replaces the copy. Each
    # file is copied under the copy's lock: another process on the host (here: another open
    # file) cannot take it meanwhile, so none removes a copy that is being written.
    shard = next(p for p in copy.rglob("*") if ".array_record" in p.name and p.is_file())
    size = shard.stat().st_size
    shard.write_bytes(b"cut")
    copied, copy_file = [], latents._copy

    def copy_under_the_lock(src, dst):
        with open(latents.mirror_lock(paths.as_path(str(copy))), "a") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        copied.append(dst)
        copy_file(src, dst)

    monkeypatch.setattr(latents, "_copy", copy_under_the_lock)
    assert latents.local_copy(out) == str(copy) and shard.stat().st_size == size
    assert any(d.name == shard.name for d in copied)
    monkeypatch.setattr(latents, "_copy", copy_file)
    info = next(copy.glob(f"*/{latents.CACHE_INFO}"))
    remote_info = paths.as_path(out) / latents.DEFAULT_NAME / info.relative_to(copy)
    changed = {**json.loads(remote_info.read_text()), "split": "other"}
    remote_info.write_text(json.dumps(changed))
    assert latents.read_cache_info(latents.local_copy(out))["split"] == "other"
    # An upload cut short (no info file: the commit marker) is no cache, and is written over.
    remote_info.unlink()
    with pytest.raises(DataError, match="no latent cache there"):
        latents.local_copy(out)
    latents.check_out(out, latents.DEFAULT_NAME)


def test_cache_errors(runs, tmp_path, capsys):
    other = [f"--config.ae_workdir={tmp_path / 'ae2'}"]
    (tmp_path / "ae2").mkdir()
    (tmp_path / "ae2" / "config.json").write_text((runs / "ae" / "config.json").read_text())
    (tmp_path / "ae2" / "checkpoints").symlink_to(runs / "ae" / "checkpoints")
    cache = f"--config.data.latent_cache={runs / 'cache'}"
    assert _train_dit(tmp_path / "d1", *other, cache) == 2
    assert "was encoded by" in capsys.readouterr().err
    missing = f"--config.data.latent_cache={tmp_path / 'nope'}"
    assert _train_dit(tmp_path / "d2", f"--config.ae_workdir={runs / 'ae'}", missing) == 2
    assert "no latent cache there" in capsys.readouterr().err


def test_a_cache_of_older_weights_is_refused(runs, tmp_path, capsys):
    """The cache records the run and step of the weights that encoded it; once the stage-1 run
    holds other weights (trained on), stage 2 refuses the cache in one line, before a step."""
    ae = Run.open(runs / "ae")
    info = latents.read_cache_info(str(runs / "cache"))
    assert (info["ae_run_id"], info["ae_step"]) == (ae.id, ae.weights_step)
    stale = tmp_path / "cache"
    shutil.copytree(runs / "cache", stale)
    info_file = next(stale.glob(f"*/*/{latents.CACHE_INFO}"))
    info_file.write_text(json.dumps({**info, "ae_step": info["ae_step"] - 1}))
    args = [f"--config.ae_workdir={runs / 'ae'}", "--config.data.train_split=test"]
    assert _train_dit(tmp_path / "d", *args, f"--config.data.latent_cache={stale}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "encode the cache again" in err[0], err
    assert sorted(p.name for p in (tmp_path / "d").glob("*")) == [], "the run dir was written"


# --- export ---------------------------------------------------------------------------------


def test_export_is_read_by_load_autoencoder_and_load_generator(runs, tmp_path):
    assert main(["export", "--workdir", str(runs / "ae"), "--out", str(tmp_path / "ae")]) == 0
    mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    _, from_run = load_autoencoder(Run.open(runs / "ae"), mesh)
    _, from_export = load_autoencoder(Run.open(tmp_path / "ae"), mesh)
    jax.tree.map(np.testing.assert_array_equal, from_export, from_run)
    # Parameters alone: no optimiser state, no discriminator.
    assert json.loads((tmp_path / "ae" / "export.json").read_text())["keys"] == ["params.ae"]

    if not (runs / "dit" / "checkpoints").exists():
        test_stage2_trains_from_the_cache_with_flips(runs)
    out = tmp_path / "dit"
    assert main(["export", "--workdir", str(runs / "dit"), "--out", str(out)]) == 0
    run_gen, export_gen = load_generator(runs / "dit", mesh), load_generator(out, mesh)
    jax.tree.map(np.testing.assert_array_equal, export_gen.ema_params, run_gen.ema_params)
    assert from_json((out / "config.json").read_text()).stage == "dit"
    # The same frozen stage 1 and latent normalisation: the same sampler inputs.
    jax.tree.map(np.testing.assert_array_equal, export_gen.frozen, run_gen.frozen)

    # The Python API reads every kind of directory latentjax writes: stage-1 and stage-2 runs
    # and their exports (converted ones are tests/test_convert_workdir.py's).
    import latentjax

    for where in (runs / "ae", tmp_path / "ae", runs / "dit", out):
        ae = latentjax.load_autoencoder(where)
        jax.tree.map(np.testing.assert_array_equal, ae.params, from_run)
    stats = json.loads((runs / "dit" / "latent_stats.json").read_text())
    assert (ae.latent_shift, ae.latent_scale) == (stats["shift"], stats["scale"])  # stage 2's
    for where in (runs / "dit", out):
        dit = latentjax.load_dit(where)
        jax.tree.map(np.testing.assert_array_equal, dit.params, run_gen.ema_params)
    with pytest.raises(LatentjaxError, match="holds a 'ae' run; this needs a stage-2"):
        latentjax.load_dit(runs / "ae")


def test_export_errors(runs, tmp_path, capsys):
    assert main(["export", "--workdir", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
    assert "no run at" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["export", "--workdir", str(runs / "ae"), "--out", str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err
