"""``latentjax train``: config -> mesh, data pipeline and stage; then the loop."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from latentjax.data import latents, pipeline
from latentjax.data.digits import default_data_dir
from latentjax.errors import ConfigError
from latentjax.parallel import mesh as mesh_lib
from latentjax.train import autoencoder, dit, loop

STAGES = ("ae", "dit")


def data_dir(config) -> str:
    return config.data.data_dir or default_data_dir()


def train_iterator(config, mesh, *, seed: int | None = None, repeat: bool = True):
    dp = mesh_lib.data_parallel_size(mesh)
    if config.train.batch_size % dp:
        raise ConfigError(
            f"train.batch_size={config.train.batch_size} is not divisible by the "
            f"{dp} data-parallel devices of the mesh"
        )
    source = pipeline.load_source(config.data.name, config.data.train_split, data_dir(config))
    dataset = pipeline.make_dataset(
        source,
        global_batch_size=config.train.batch_size,
        image_size=config.data.image_size,
        crop=config.data.get("crop", "none"),
        flip=config.data.get("flip", False),
        seed=config.seed if seed is None else seed,
        repeat=repeat,
        cache=config.data.get("cache", False),
    )
    return pipeline.make_iterator(dataset, worker_count=config.data.worker_count)


def cache_iterator(config, mesh, *, seed: int | None = None, repeat: bool = True):
    """Batches ``{"mean", "std", "label"}`` of the latent cache ``config.data.latent_cache``
    (with its mirrored copy when ``data.flip``), checked to come from ``config.ae_workdir``."""
    cache = config.data.latent_cache
    info = latents.read_cache_info(cache)
    ae_workdir = str(Path(config.ae_workdir).absolute())
    if info["ae_workdir"] != ae_workdir or info["image_size"] != config.data.image_size:
        raise ConfigError(
            f"data.latent_cache={cache!r} was encoded by {info['ae_workdir']} at "
            f"{info['image_size']} px, but this run uses {ae_workdir} at "
            f"{config.data.image_size} px"
        )
    source = latents.load_cache(cache, config.data.train_split, config.data.get("flip", False))
    dataset = pipeline.make_dataset(
        source,
        global_batch_size=config.train.batch_size,
        seed=config.seed if seed is None else seed,
        repeat=repeat,
        transform=latents.LatentRecord(),
    )
    return pipeline.make_iterator(dataset, worker_count=config.data.worker_count)


def split_arrays(config, split: str) -> dict[str, np.ndarray]:
    """A whole (small) split as preprocessed host arrays, in dataset order."""
    source = pipeline.load_source(config.data.name, split, data_dir(config))
    dataset = pipeline.make_dataset(
        source,
        global_batch_size=len(source),
        image_size=config.data.image_size,
        crop="center" if config.data.get("crop", "none") != "none" else "none",
        seed=0,
        shuffle=False,
        repeat=False,
        drop_remainder=False,
        process_index=0,
        process_count=1,
    )
    return next(iter(dataset))


def train(config, workdir: str | Path, *, progress: bool = True) -> Any:
    """Trains the stage ``config.stage`` names into ``workdir`` (resuming if it has checkpoints)."""
    if config.stage not in STAGES:
        raise ConfigError(f"config.stage must be one of {STAGES}, got {config.stage!r}")
    mesh_lib.check_rules(config.mesh.rules)
    mesh = mesh_lib.make_mesh(config.mesh.shape)
    workdir = Path(workdir)
    if config.stage == "ae":
        loop.prepare_workdir(workdir, config)
        eval_images = split_arrays(config, config.data.eval_split)["image"]
        task = autoencoder.make_task(config, mesh, eval_images=eval_images)
    else:
        ae_workdir = Path(config.ae_workdir)
        if not (ae_workdir / "config.json").exists():
            raise ConfigError(
                f"ae_workdir={str(ae_workdir)!r}: no stage-1 run there; train "
                "configs/ae/… into it first or set --config.ae_workdir"
            )
        loop.prepare_workdir(workdir, config)
        _, ae_stage, ae_params = autoencoder.load_autoencoder(ae_workdir, mesh)
        stage = dit.DiTStage(config, ae_stage)
        cache = config.data.get("latent_cache", "")
        stats = dit.read_latent_stats(workdir)
        if stats is None:
            if cache:
                batches = itertools.islice(
                    cache_iterator(config, mesh, seed=config.seed + 1, repeat=False),
                    config.data.latent_stats_batches,
                )
                stats = latents.measure_stats(batches, config.seed)
            else:
                batches = itertools.islice(
                    train_iterator(config, mesh, seed=config.seed + 1, repeat=False),
                    config.data.latent_stats_batches,
                )
                stats = dit.measure_latent_stats(ae_stage, ae_params, batches, mesh, config.seed)
            dit.write_latent_stats(workdir, stats)
        task = dit.make_task(stage, ae_params, stats, mesh)
    if config.stage == "dit" and config.data.get("latent_cache", ""):
        host_iterator = cache_iterator(config, mesh)
    else:
        host_iterator = train_iterator(config, mesh)
    iterator = pipeline.DevicePrefetch(host_iterator, mesh)
    try:
        return loop.run(task, config, workdir, iterator, mesh, progress=progress)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def describe_devices() -> str:
    d = jax.devices()
    return (
        f"{len(d)} {d[0].platform} device(s) over {jax.process_count()} process(es)"
        f"{' (XLA_FLAGS=' + os.environ['XLA_FLAGS'] + ')' if 'XLA_FLAGS' in os.environ else ''}"
    )
