"""Images from a trained two-stage run: sample latents with the DiT (EMA weights), decode them.

Noise, the sampling loop and the decoder run as one jitted program per (sampler, guided) pair;
the number of steps, eta, the guidance scale and interval are runtime arguments, so changing them
does not recompile. The batch is split over every device of the mesh; chunks are padded to a
multiple of the data-parallel size and the padding is dropped on the host.

Image j's randomness comes from ``fold_in(key(seed), j)`` alone, so a sample depends on the seed
and its index, not on the chunk size, the number of devices or processes, or on which chunks a
resumed run skipped.

:func:`write_sample_shards` streams chunks to ``shard-NNNNN.npz`` files plus ``index.json`` (only
process 0 writes), never holding more than one chunk on the host, and resumes by skipping shards
already written and valid.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from latentjax.data.normalization import denormalize
from latentjax.diffusion.samplers import check_sampler
from latentjax.diffusion.samplers import sample as sample_latents
from latentjax.errors import LatentjaxError, WorkdirError
from latentjax.eval.images import image_grid, save_png
from latentjax.factory import is_video, stage2_latent_shape
from latentjax.parallel import mesh as mesh_lib
from latentjax.paths import Path, as_path
from latentjax.run import Run, write_atomic
from latentjax.train import state as state_lib
from latentjax.train.autoencoder import load_autoencoder
from latentjax.train.checkpoint import fingerprints
from latentjax.train.dit import DiTStage, frozen_inputs

INDEX_FILE = "index.json"


@dataclasses.dataclass(frozen=True)
class SampleSpec:
    """How to sample: everything but the labels and the seed."""

    sampler: str = "ddim"
    num_steps: int = 32
    cfg_scale: float = 1.0
    eta: float = 0.0
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    guidance_channels: int = 0  # guide only the first N output channels; 0 = all
    # The sampler's grid, uniform in the time unshifted by this (paths.shift_time); a run's
    # spec takes its training shift, diffusion.time_shift.
    time_shift: float = 1.0

    def __post_init__(self):
        check_sampler(self.sampler, self.num_steps, self.eta)
        if not math.isfinite(self.cfg_scale):
            raise LatentjaxError(f"guidance scale must be a finite number, got {self.cfg_scale}")
        lo, hi = self.guidance_interval
        if not 0.0 <= lo <= hi <= 1.0:
            raise LatentjaxError(
                f"guidance interval must satisfy 0 <= lo <= hi <= 1, got {lo},{hi}"
            )
        if self.guidance_channels < 0:
            raise LatentjaxError(f"guidance channels must be >= 0, got {self.guidance_channels}")
        if not (math.isfinite(self.time_shift) and self.time_shift > 0):
            raise LatentjaxError(
                f"time shift must be a number > 0 (1 = none), got {self.time_shift}"
            )


def check_guidance(model, spec: SampleSpec) -> None:
    """A DiT without the null class (``model.null_class=False``: trained without label
    dropout) has no unconditional model, so classifier-free guidance is a one-line error."""
    if model.num_classes and not model.null_class and spec.cfg_scale != 1.0:
        raise LatentjaxError(
            f"guidance scale {spec.cfg_scale}: this DiT was trained without label dropout (its "
            "label table has no null class), so it cannot use classifier-free guidance; use "
            "--cfg 1"
        )


def class_labels(labels, num: int | None, num_classes: int) -> np.ndarray:
    """The labels to sample, int32 [num]: ``None`` -> the classes in turn (0, 1, ..., 0, 1, ...);
    one int -> that class ``num`` times; a sequence -> cycled to ``num`` (default: its length).
    ``num`` is required unless ``labels`` is a sequence. A class-free model (``num_classes``
    0) takes label 0 only. Shared by ``latentjax sample`` and :class:`~latentjax.pipeline.Pipeline`,
    so the same arguments give the same labels, hence the same images."""
    if labels is None:
        base = np.arange(max(num_classes, 1))
    else:
        base = np.atleast_1d(np.asarray(labels))
        if base.ndim != 1 or base.size == 0 or not np.issubdtype(base.dtype, np.integer):
            raise LatentjaxError(f"labels must be class indices (integers), got {labels!r}")
        bad = base[(base < 0) | (base >= max(num_classes, 1))]
        if bad.size:
            raise LatentjaxError(f"label {int(bad[0])} out of range [0, {max(num_classes, 1)})")
    if num is None:
        if labels is None or np.ndim(labels) == 0:
            raise LatentjaxError("say how many images: num=N (or give a list of labels)")
        num = base.size
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num <= 0:
        raise LatentjaxError(f"the number of images must be a positive integer, got {num!r}")
    return np.resize(base, int(num)).astype(np.int32)


def spec_from_config(config, **overrides) -> SampleSpec:
    """A :class:`SampleSpec` from ``config.sample`` (and the training's time shift,
    ``config.diffusion.time_shift``), then overrides that are not None."""
    s = config.sample
    values = {
        "sampler": s.sampler,
        "num_steps": s.num_steps,
        "cfg_scale": s.cfg_scale,
        "eta": s.eta,
        "guidance_interval": tuple(s.guidance_interval),
        "guidance_channels": s.guidance_channels,
        "time_shift": config.diffusion.time_shift,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return SampleSpec(**values)


@dataclasses.dataclass
class Generator:
    stage: DiTStage
    ema_params: Any
    frozen: dict[str, Any]
    mesh: Mesh
    # [H, W, C] of the decoded images; [T, H, W, C] of the clips of a video stage 2, whose
    # "images" below are clips [N, T, H, W, C] (the sampler and the program are the same).
    image_shape: tuple[int, ...]
    # Which weights sample: the run's step and a fingerprint of the EMA and decoder parameters
    # (recorded with sample shards, so shards of another checkpoint are never reused).
    checkpoint: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self._programs: dict[tuple, Any] = {}

    def program(self, sampler: str, guided: bool, guidance_channels: int = 0, floats=False):
        """The jitted ``run(params, frozen, labels, indices, key, num_steps, eta, cfg, interval,
        time_shift)``
        -> (uint8 images, or float32 in [-1, 1] with ``floats``; which are finite), one per
        (sampler, guided, guidance_channels, floats)."""
        key = (sampler, guided, guidance_channels, floats)
        if key not in self._programs:
            d = self.stage.config.diffusion
            ae = self.stage.ae
            batch = mesh_lib.batch_sharding(self.mesh)
            shape = self.stage.latent_shape

            def run(
                params, frozen, labels, indices, key, num_steps, eta, cfg_scale, interval, shift
            ):
                keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(indices)  # [B]
                noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, 0), shape))(keys)
                noise = jax.lax.with_sharding_constraint(noise, batch)
                step_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
                z = sample_latents(
                    self.stage.apply,
                    params,
                    noise,
                    labels,
                    path=d.path,
                    prediction=d.prediction,
                    num_steps=num_steps,
                    sampler=sampler,
                    keys=step_keys,
                    eta=eta,
                    cfg_scale=cfg_scale,
                    null_label=self.stage.null_label,
                    guided=guided,
                    guidance_interval=(interval[0], interval[1]),
                    guidance_channels=guidance_channels,
                    time_shift=shift,
                )
                # Undo (z - shift) * scale; per-channel vectors broadcast over the last axis.
                z = denormalize(z, frozen["latent_shift"], frozen["latent_scale"])
                x = ae.apply(frozen["ae"], z, method=ae.decode)
                # NaN/Inf would round to black images: flagged per image instead.
                finite = jnp.all(jnp.isfinite(x), axis=tuple(range(1, x.ndim)))
                if floats:  # the decoder's output, clipped to the range uint8 images cover
                    return jnp.clip(x, -1.0, 1.0), finite
                # [-1, 1] -> uint8 on device: 4x less to copy to the host.
                pixels = jnp.round((jnp.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(jnp.uint8)
                return pixels, finite

            self._programs[key] = jax.jit(run, out_shardings=(batch, batch))
        return self._programs[key]

    def sample_chunk(
        self,
        labels: np.ndarray,
        start: int,
        seed: int,
        spec: SampleSpec,
        chunk: int,
        floats: bool = False,
    ) -> np.ndarray:
        """uint8 images [n, H, W, C] (float32 in [-1, 1] with ``floats``) for ``labels``
        (int [n <= chunk]) at global indices start, start + 1, ...; ``chunk`` must be a
        multiple of the data-parallel size."""
        check_guidance(self.stage.config.model, spec)
        guided = self.stage.config.model.num_classes > 0 and spec.cfg_scale != 1.0
        channels = spec.guidance_channels if guided else 0
        program = self.program(spec.sampler, guided, channels, floats)
        sharding = mesh_lib.batch_sharding(self.mesh)
        n = len(labels)
        y = np.concatenate([np.asarray(labels, np.int32), np.zeros(chunk - n, np.int32)])
        idx = np.arange(start, start + chunk, dtype=np.int32)
        images, finite = program(
            self.ema_params,
            self.frozen,
            jax.device_put(y, sharding),
            jax.device_put(idx, sharding),
            jax.random.key(seed),
            np.int32(spec.num_steps),
            np.float32(spec.eta),
            np.float32(spec.cfg_scale),
            np.asarray(spec.guidance_interval, np.float32),
            np.float32(spec.time_shift),
        )
        # Every process gets the whole chunk (on one process this is a plain device_get).
        images, finite = multihost_utils.process_allgather((images, finite), tiled=True)
        bad = int(np.sum(~np.asarray(finite)[:n]))
        if bad:
            raise LatentjaxError(
                f"{bad} of {n} samples came out non-finite (NaN/Inf): the model diverged or the "
                f"sampling settings are out of range (sampler {spec.sampler}, "
                f"{spec.num_steps} steps, cfg {spec.cfg_scale}); nothing was written for them"
            )
        return np.asarray(images)[:n]

    def chunk_size(self, chunk: int) -> int:
        dp = mesh_lib.data_parallel_size(self.mesh)
        return max(dp, (chunk // dp) * dp)

    def sample(
        self, labels: np.ndarray, seed: int, spec: SampleSpec, chunk: int, floats: bool = False
    ) -> Iterator[np.ndarray]:
        """Yields uint8 images [n, H, W, C] (float32 in [-1, 1] with ``floats``) chunk by chunk
        for ``labels`` (int [N])."""
        chunk = self.chunk_size(chunk)
        for start in range(0, len(labels), chunk):
            part = labels[start : start + chunk]
            yield self.sample_chunk(part, start, seed, spec, chunk, floats)


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}.npz"


def _valid_shard(path: Path, labels: np.ndarray, image_shape: tuple[int, ...]) -> bool:
    """The shard exists, loads, and holds uint8 images of the right shape for ``labels``."""
    try:
        with path.open("rb") as f, np.load(f) as data:
            images, got = data["images"], data["labels"]
    except (OSError, KeyError, ValueError, EOFError):
        return False
    return (
        images.dtype == np.uint8
        and images.shape == (len(labels), *image_shape)
        and np.array_equal(got, labels)
    )


def write_sample_shards(
    generator: Generator,
    labels: np.ndarray,
    shard_dir: str | Path,
    seed: int,
    spec: SampleSpec,
    chunk: int,
    progress: bool = True,
    meta: dict[str, Any] | None = None,
    replace: bool = False,
) -> dict[str, Any]:
    """Samples ``labels`` chunk by chunk into ``shard_dir`` (``shard-NNNNN.npz`` with ``images``
    [n, H, W, C] uint8 and ``labels`` [n] int32, and ``index.json``); returns the index, with
    ``reused`` and ``made`` counts of images.

    An existing index with the same settings and checkpoint is resumed: shards already written
    and valid are reused (a shard that fails to load or does not match is redone). Shards of
    other settings or of another checkpoint are an error, or with ``replace`` are deleted and
    made anew. The index is rewritten after every shard, so an interrupted run leaves a
    consistent directory."""
    from tqdm.auto import tqdm

    shard_dir = as_path(shard_dir)
    chunk = generator.chunk_size(chunk)
    labels = np.asarray(labels, np.int32)
    settings = {
        "num": len(labels),
        "chunk": chunk,
        "seed": seed,
        **dataclasses.asdict(spec),
        "guidance_interval": list(spec.guidance_interval),
        "image_shape": list(generator.image_shape),
        "labels_sha": _labels_digest(labels),
        "checkpoint": generator.checkpoint,
        **(meta or {}),
    }
    index_path = shard_dir / INDEX_FILE
    writer = jax.process_index() == 0
    starts = list(range(0, len(labels), chunk))
    done = np.zeros(len(starts), bool)
    if writer:
        if index_path.exists():
            try:
                old = json.loads(index_path.read_text())
            except json.JSONDecodeError:
                old = {"damaged": True}
            old_settings = {k: v for k, v in old.items() if k != "shards"}
            # An index written before guidance_channels existed guided every channel.
            old_settings.setdefault("guidance_channels", 0)
            if old_settings != settings:
                changed = sorted(
                    k for k in set(old_settings) | set(settings)
                    if old_settings.get(k) != settings.get(k)
                )  # fmt: skip
                if not replace:
                    raise LatentjaxError(
                        f"{shard_dir} holds samples made with other settings or another "
                        f"checkpoint ({', '.join(changed)}); use another --shard-dir or delete it"
                    )
                for old_shard in shard_dir.glob("shard-*.npz"):
                    old_shard.unlink()
        shard_dir.mkdir(parents=True, exist_ok=True)
        for i, start in enumerate(starts):
            part = labels[start : start + chunk]
            done[i] = _valid_shard(shard_dir / _shard_name(i), part, generator.image_shape)
    # Every process must run the same chunks (each chunk is one global program).
    done = np.asarray(multihost_utils.broadcast_one_to_all(done)).astype(bool)

    shards = [
        {"file": _shard_name(i), "start": s, "count": len(labels[s : s + chunk])}
        for i, s in enumerate(starts)
    ]

    def write_index():
        listed = [sh for sh, ok in zip(shards, done, strict=True) if ok]
        text = json.dumps({**settings, "shards": listed}, indent=1)
        write_atomic(index_path, lambda f: f.write(text.encode()))

    if writer:
        write_index()
    initial = int(sum(sh["count"] for sh, ok in zip(shards, done, strict=True) if ok))
    with tqdm(
        total=len(labels),
        initial=initial,
        desc="sample",
        unit="img",
        dynamic_ncols=True,
        disable=not (progress and writer and sys.stderr.isatty()),  # a bar on a terminal only
    ) as bar:
        for i, start in enumerate(starts):
            if done[i]:
                continue
            part = labels[start : start + chunk]
            images = generator.sample_chunk(part, start, seed, spec, chunk)
            if writer:
                write_atomic(
                    shard_dir / _shard_name(i),
                    lambda f, images=images, part=part: np.savez(f, images=images, labels=part),
                )
                done[i] = True
                write_index()
            bar.update(len(part))
    return {**settings, "shards": shards, "reused": initial, "made": len(labels) - initial}


def _labels_digest(labels: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(labels, np.int32).tobytes()).hexdigest()[:16]


def read_shards(shard_dir: str | Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of the shards listed in ``index.json``, in order; at most ``limit``."""
    shard_dir = as_path(shard_dir)
    index = json.loads((shard_dir / INDEX_FILE).read_text())
    images, labels, total = [], [], 0
    for sh in sorted(index["shards"], key=lambda s: s["start"]):
        if limit is not None and total >= limit:
            break
        with (shard_dir / sh["file"]).open("rb") as f, np.load(f) as data:
            images.append(data["images"])
            labels.append(data["labels"])
        total += len(labels[-1])
    images, labels = np.concatenate(images), np.concatenate(labels)
    return (images, labels) if limit is None else (images[:limit], labels[:limit])


def load_generator(workdir: str | Path, mesh: Mesh) -> Generator:
    """Loads a stage-2 run (and the stage-1 run it names) for sampling."""
    run = Run.open(workdir, stage="dit")
    ae_run = run.ae_run()
    stats = run.latent_stats()
    if stats is None:
        raise WorkdirError(
            f"{run.path} has no latent statistics (they are measured when stage 2 starts); "
            f"train it first: latentjax train --config CONFIG --workdir {run.path}"
        )
    ae_stage, ae_params = load_autoencoder(ae_run, mesh)
    stage = DiTStage(run.config, ae_stage.ae, stage2_latent_shape(run.config, ae_run.config))
    state = state_lib.restore(run, stage.init_state, mesh)
    frozen, _ = frozen_inputs(ae_params, stats, mesh, stage.latent_shape[-1])
    ae = ae_run.config
    image_shape = (ae.data.image_size, ae.data.image_size, ae.model.in_channels)
    if is_video(ae.model):  # clips of the stage-2 run's length
        image_shape = (run.config.data.frames, *image_shape)
    checkpoint = {
        "step": int(jax.device_get(state["step"])) if "step" in state else run.export_info["step"],
        "weights": _weights_digest({"ema": state["ema_params"], "ae": ae_params}),
    }
    return Generator(stage, state["ema_params"], frozen, mesh, image_shape, checkpoint)


def _weights_digest(params) -> str:
    """A short digest of parameters' values (their checkpoint fingerprints, hashed)."""
    import hashlib

    sums = json.dumps(fingerprints(params), sort_keys=True).encode()
    return hashlib.sha256(sums).hexdigest()[:16]


def collect_samples(
    generator: Generator,
    labels,
    spec: SampleSpec,
    chunk: int,
    seed: int = 0,
    floats: bool = False,
    progress: bool = True,
):
    """All samples for ``labels`` as one uint8 array [N, H, W, C] (float32 in [-1, 1] with
    ``floats``; small N), with a progress bar on a terminal."""
    from tqdm.auto import tqdm

    out = []
    bar = tqdm(
        total=len(labels),
        desc="sample",
        unit="img",
        dynamic_ncols=True,
        disable=not (progress and sys.stderr.isatty()),  # a bar on a terminal only
    )
    with bar:
        for images in generator.sample(labels, seed, spec, chunk, floats):
            out.append(images)
            bar.update(len(images))
    return np.concatenate(out)


def write_samples(
    out: str | Path, images: np.ndarray, labels: np.ndarray, ncol: int = 10, grid=None
) -> Path:
    """``out`` (.npz: ``images`` uint8 [N, H, W, C], ``labels`` [N]) and a PNG grid beside it of
    ``grid`` (default: all the images); -> the grid's path. Clips [N, T, H, W, C] are written
    as ``videos``, with a frame grid (a row of frames per clip, the first 10 clips) and an
    animated GIF of them (``.gif``) beside it."""
    out = as_path(out)
    if out.suffix != ".npz":
        raise LatentjaxError(f"--out must end in .npz, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if images.ndim == 5:
        write_atomic(out, lambda f: np.savez(f, videos=images, labels=labels))
        save_animation(out.with_suffix(".gif"), images[:ncol])
        return save_frames(out.with_suffix(".png"), images[:ncol])
    write_atomic(out, lambda f: np.savez(f, images=images, labels=labels))
    shown = images if grid is None else grid
    return save_grid(out.with_suffix(".png"), shown, ncol)


def save_frames(path: Path, clips: np.ndarray) -> Path:
    """A PNG of uint8 clips [N, T, H, W, C]: a row of T frames per clip."""
    frames = clips.reshape(-1, *clips.shape[2:])
    return save_png(
        path, image_grid(frames, ncol=clips.shape[1]), scale=max(1, 64 // clips.shape[2])
    )


def save_animation(path: Path, clips: np.ndarray, frame_ms: int = 200) -> Path:
    """An animated GIF of uint8 clips [N, T, H, W, C] side by side (a grid of up to 5 a row),
    looping, ``frame_ms`` per frame (written whole, as every file here)."""
    from PIL import Image

    n, frames = clips.shape[:2]
    scale = max(1, 64 // clips.shape[2])
    pictures = []
    for t in range(frames):
        grid = image_grid(clips[:, t], ncol=min(n, 5))
        grid = grid[..., 0] if grid.shape[-1] == 1 else grid
        pil = Image.fromarray(grid)
        pictures.append(pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST))
    write_atomic(
        path,
        lambda f: pictures[0].save(
            f, format="GIF", save_all=True, append_images=pictures[1:], duration=frame_ms, loop=0
        ),
    )
    return path


def save_grid(path: Path, images: np.ndarray, ncol: int = 10) -> Path:
    """A PNG grid of uint8 images, enlarged so a side is at least about 128 px."""
    return save_png(path, image_grid(images, ncol=ncol), scale=max(1, 128 // images.shape[1]))
