"""``latentjax encode``: a dataset's latents under a trained stage-1 run, written as a latent
cache (``latentjax/data/latents.py``) that stage-2 training reads with ``data.latent_cache``."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from latentjax.data import latents, pipeline
from latentjax.data.digits import default_data_dir
from latentjax.errors import ConfigError
from latentjax.factory import clip_latent_shape, is_video, latent_shape
from latentjax.parallel import mesh as mesh_lib
from latentjax.paths import Path, absolute
from latentjax.run import Run
from latentjax.train.autoencoder import load_autoencoder


def encode_run(
    workdir: str | Path,
    *,
    out: str,
    data: str | None = None,
    split: str | None = None,
    data_dir: str | None = None,
    name: str | None = None,
    flip: bool = False,
    batch_size: int = 64,
) -> dict:
    """Encodes ``data:split`` (default: the run's training split) with the stage-1 run in
    ``workdir`` into the data_dir ``out`` (a local folder or a bucket) as dataset ``name``;
    returns what was written (the cache's info, its ``name`` and ``count``)."""
    name = name or latents.DEFAULT_NAME
    latents.check_out(out, name)  # before anything is loaded or encoded
    run = Run.open(workdir, stage="ae")
    config = run.config
    data = data or config.data.name
    split = split or config.data.train_split
    data_dir = data_dir or config.data.data_dir or default_data_dir()
    source = pipeline.load_source(data, split, data_dir)
    video = is_video(config.model)
    if video != (len(source) > 0 and pipeline.example_key(source[0]) == "video"):
        raise ConfigError(
            f"dataset {data!r} holds {'images' if video else 'clips'}, but the autoencoder of "
            f"{workdir} takes {'clips' if video else 'images'}"
        )
    mesh = mesh_lib.make_mesh(config.mesh.shape)
    stage, params = load_autoencoder(run, mesh)

    @jax.jit
    def encode(images):
        posterior = stage.ae.apply(params, images, method=stage.ae.encode)
        mean = posterior.mode()
        std = posterior.std if hasattr(posterior, "logvar") else jnp.zeros_like(mean)
        return mean, std

    shape = latent_shape(config)
    frames = 0
    if video:
        frames = pipeline.clip_frames(source)
        shape = clip_latent_shape(config, frames)

    def batches(flipped: bool):
        return lambda: latents.encoded_batches(
            encode,
            source,
            batch_size=batch_size,
            image_size=config.data.image_size,
            crop=config.data.crop,
            flip=flipped,
            mesh=mesh,
        )

    splits = {split: batches(False)}
    if flip:
        splits[split + latents.FLIP_SUFFIX] = batches(True)
    info = {
        "ae_workdir": str(absolute(workdir)),
        # Which weights encoded it: stage 2 refuses the cache once the run holds others.
        "ae_run_id": run.id or "",
        "ae_step": run.weights_step,
        "data": data,
        "split": split,
        "data_dir": data_dir,
        "image_size": config.data.image_size,
        "flip": flip,
        "latent_shape": list(shape),
        "frames": frames,  # clip length (0: images)
    }
    latents.write_cache(out, name, shape, splits, info)
    return {**info, "name": name, "count": len(source)}
