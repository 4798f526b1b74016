"""``latentjax train``: config -> run directory, mesh, data pipeline and stage; then the loop."""

from __future__ import annotations

import itertools
from typing import Any

import jax
import ml_collections
import numpy as np

from latentjax import run as run_lib
from latentjax.data import latents, pipeline
from latentjax.data.digits import default_data_dir
from latentjax.errors import ConfigError, WorkdirError
from latentjax.factory import check_autoencoder_config, is_video, stage2_latent_shape
from latentjax.parallel import mesh as mesh_lib
from latentjax.paths import Path, absolute, as_path
from latentjax.run import Run
from latentjax.train import autoencoder, dit, loop

STAGES = ("ae", "dit")


def data_dir(config) -> str:
    return config.data.data_dir or default_data_dir()


def train_iterator(
    config,
    mesh,
    *,
    seed: int | None = None,
    repeat: bool = True,
    channels: int | None = None,
    video: bool = False,
):
    """Batches of the training split; ``channels``: the image channels the model takes;
    ``video``: whether it takes clips (a video dataset) rather than images."""
    mesh_lib.check_batch_size(config.train.batch_size, mesh, "train.batch_size")
    source = pipeline.load_source(config.data.name, config.data.train_split, data_dir(config))
    if len(source):
        key = pipeline.example_key(source[0])
        if (key == "video") != video:
            raise ConfigError(
                f"dataset {config.data.name!r} holds {'clips' if key == 'video' else 'images'}, "
                f"but the model takes {'clips' if video else 'images'} (model.family="
                f"'video' trains on a video dataset, the others on images)"
            )
    if channels is not None and len(source):
        got = np.asarray(source[0][key]).shape[-1]
        if got != channels:
            raise ConfigError(
                f"dataset {config.data.name!r} has {got}-channel images, the model takes "
                f"{channels} (model.in_channels of the stage-1 config)"
            )
    dataset = pipeline.make_dataset(
        source,
        global_batch_size=config.train.batch_size,
        image_size=config.data.image_size,
        crop=config.data.crop,
        flip=config.data.flip,
        seed=config.seed if seed is None else seed,
        repeat=repeat,
        cache=config.data.cache,
    )
    return pipeline.make_iterator(dataset, worker_count=config.data.worker_count)


def cache_iterator(config, mesh, *, seed: int | None = None, repeat: bool = True):
    """Batches ``{"mean", "std", "label"}`` of the latent cache ``config.data.latent_cache``
    (with its mirrored copy when ``data.flip``), checked to come from ``config.ae_workdir``."""
    cache = latents.local_copy(config.data.latent_cache)  # a bucket's: copied to this host
    info = latents.read_cache_info(cache)
    ae_workdir = str(absolute(config.ae_workdir))
    if info["ae_workdir"] != ae_workdir or info["image_size"] != config.data.image_size:
        raise ConfigError(
            f"data.latent_cache={config.data.latent_cache!r} was encoded by "
            f"{info['ae_workdir']} at "
            f"{info['image_size']} px, but this run uses {ae_workdir} at "
            f"{config.data.image_size} px"
        )
    # Caches written before the weights were recorded (no "ae_step") are taken on trust.
    encoded = (info.get("ae_run_id"), info.get("ae_step"))
    if "ae_step" in info and encoded != (config.ae_run_id or "", config.ae_step):
        raise ConfigError(
            f"data.latent_cache={config.data.latent_cache!r} was encoded by the weights of run "
            f"{encoded[0] or '?'} at step {encoded[1]}, but {ae_workdir} now holds run "
            f"{config.ae_run_id or '?'} at step {config.ae_step}: its latents belong to the "
            "older weights; encode the cache again (latentjax encode)"
        )
    source = latents.load_cache(cache, config.data.train_split, config.data.flip)
    dataset = pipeline.make_dataset(
        source,
        global_batch_size=config.train.batch_size,
        seed=config.seed if seed is None else seed,
        repeat=repeat,
        transform=latents.LatentRecord(),
    )
    return pipeline.make_iterator(dataset, worker_count=config.data.worker_count)


def train(config, workdir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Trains the stage ``config.stage`` names into ``workdir`` (resuming if it has checkpoints)
    -> its final metrics: the last record of ``metrics.jsonl`` (``{"step": N, "loss": ...}``,
    with the evaluation's metrics, which the last step runs); ``{}`` where this process does
    not see that file (not process 0, on another host).

    Everything that can be checked is checked before the run directory is touched; the
    directory is locked while this process trains into it, and ``config.json`` (with the
    latent statistics of stage 2) is written only once the run really starts."""
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(
            f"train takes a config (latentjax.config.load(NAME, overrides={{...}})), got "
            f"{type(config).__name__}"
        )
    if "stage" not in config or config.stage not in STAGES:
        stage = config.get("stage")
        raise ConfigError(f"config.stage must be one of {STAGES}, got {stage!r}")
        raise ConfigError(f"config.stage must be one of {STAGES}, got {config.stage!r}")
    if not str(workdir).strip():
        raise ConfigError("--workdir is empty; name a run directory")
    if config.stage == "ae":
        autoencoder.adopt_init_from(config)
    check_config(config)
    mesh = mesh_lib.make_mesh(config.mesh.shape)
    mesh_lib.check_batch_size(config.train.batch_size, mesh, "train.batch_size")
    workdir, writer = as_path(workdir), jax.process_index() == 0
    with run_lib.owned(workdir, write=writer):
        run_lib.check_workdir(workdir, config)
        files = {}  # written when the run starts
        if config.stage == "ae":
            video = is_video(config.model)
            host_iterator = train_iterator(
                config, mesh, channels=config.model.in_channels, video=video
            )
            eval_split = pipeline.split_arrays(config.data, config.data.eval_split)
            eval_images = eval_split["video" if video else "image"]
            task = autoencoder.make_task(config, mesh, eval_images=eval_images)
        else:
            ae_run = _stage1_run(config, workdir)
            video = is_video(ae_run.config.model)
            channels = ae_run.config.model.in_channels
            if not config.data.latent_cache:  # the dataset's kind is checked before loading
                host_iterator = train_iterator(config, mesh, channels=channels, video=video)
            if video:
                if config.data.latent_cache:  # the cache knows its clips' length
                    frames = latents.read_cache_info(config.data.latent_cache).get("frames", 0)
                else:
                    frames = _clip_frames(config)
                if config.data.frames not in (0, frames):
                    raise ConfigError(
                        f"data.frames={config.data.frames} but {config.data.name!r} holds "
                        f"clips of {frames} frames"
                    )
                config.data.frames = frames  # recorded in the run's config
            shape = stage2_latent_shape(config, ae_run.config)
            ae_stage, ae_params = autoencoder.load_autoencoder(ae_run, mesh)
            stage = dit.DiTStage(config, ae_stage.ae, shape)
            stats_file = workdir / run_lib.LATENT_STATS_FILE
            if stats_file.exists():  # measured when the run started
                stats = run_lib.read_json(stats_file)
            else:
                stats = files[run_lib.LATENT_STATS_FILE] = _measure_stats(
                    config, mesh, ae_stage, ae_params, video
                )
            task = dit.make_task(stage, ae_params, stats, mesh)
            if config.data.latent_cache:
                host_iterator = cache_iterator(config, mesh)

        def start() -> None:
            # train.resume_step is an instruction for this start: the run's config keeps 0, so
            # resuming it again goes on from its latest checkpoint.
            config.train.resume_step = 0
            if writer:
                run_lib.write_config(workdir, config)
                for name, value in files.items():
                    run_lib.write_json(workdir / name, value)

        iterator = pipeline.DevicePrefetch(host_iterator, mesh)
        try:
            loop.run(task, config, workdir, iterator, mesh, progress=progress, start=start)
        finally:
            iterator.close()
    metrics = workdir / run_lib.METRICS_FILE
    records = loop.read_metrics(metrics) if metrics.exists() else []
    return records[-1] if records else {}


def check_finished(result: dict[str, Any], config, workdir) -> None:
    """Raises unless a :func:`train` call that returned ``result`` ended at
    ``train.num_steps``: a preempted run (SIGTERM) saves and returns early, and what follows a
    training in the same program (a probe's judging, a demo's samples) must not read a model
    that stopped half way. Process 0's metrics decide, for every process."""
    from jax.experimental import multihost_utils

    step = int(result.get("step", 0)) if jax.process_index() == 0 else 0
    step = int(multihost_utils.broadcast_one_to_all(np.int32(step)))
    if step < config.train.num_steps:
        raise WorkdirError(
            f"{workdir} stopped at step {step} of {config.train.num_steps} (preempted?); run "
            "the same command again to go on from its last checkpoint"
        )


def _stage1_run(config, workdir: Path) -> Run:
    """The stage-1 run of a stage-2 config: recorded by its absolute path, id and weights' step
    in the config, and checked to be the one an existing run in ``workdir`` was trained on."""
    try:
        ae_run = Run.open(config.ae_workdir, stage="ae")
    except WorkdirError as e:
        raise ConfigError(
            f"ae_workdir={config.ae_workdir!r}: no stage-1 run there ({e}); train "
            "ae/… into it first or set --config.ae_workdir"
        ) from e
    if config.data.image_size != ae_run.config.data.image_size:
        raise ConfigError(
            f"data.image_size={config.data.image_size} but the stage-1 run was trained at "
            f"{ae_run.config.data.image_size}"
        )
    if (workdir / run_lib.CONFIG_FILE).exists():
        run_lib.check_ae_run(Run.open(workdir).config, ae_run)
    config.ae_workdir = str(absolute(ae_run.path))
    config.ae_run_id = ae_run.id or ""
    config.ae_step = -1 if ae_run.weights_step is None else ae_run.weights_step
    return ae_run


def check_config(config) -> None:
    """One-line errors for values no run can use, before anything is built or compiled."""
    loop.check_train_config(config.train)
    if config.data.image_size < 1:
        raise ConfigError(f"data.image_size={config.data.image_size} must be positive")
    mesh_lib.check_rules(config.mesh.rules)
    if config.stage == "ae":
        check_autoencoder_config(config)
    else:
        dit.check_diffusion_config(config)


def _clip_frames(config) -> int:
    """Frames per clip of a stage-2 config's (video) training split."""
    source = pipeline.load_source(config.data.name, config.data.train_split, data_dir(config))
    return pipeline.clip_frames(source)


def _measure_stats(config, mesh, ae_stage, ae_params, video: bool = False) -> dict[str, Any]:
    """The latent shift and scale, from the latent cache or the frozen encoder on the fly."""
    if config.data.latent_cache:
        batches = itertools.islice(
            cache_iterator(config, mesh, seed=config.seed + 1, repeat=False),
            config.data.latent_stats_batches,
        )
        return latents.latent_stats(latents.cached_moments(batches, config.seed))
    batches = itertools.islice(
        train_iterator(config, mesh, seed=config.seed + 1, repeat=False, video=video),
        config.data.latent_stats_batches,
    )
    key = "video" if video else "image"
    return dit.measure_latent_stats(ae_stage.ae, ae_params, batches, mesh, config.seed, key)
