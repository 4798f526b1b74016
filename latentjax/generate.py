"""Images from a trained two-stage run: sample latents with the DiT (EMA weights), decode them.

Noise, the sampling loop and the decoder run as one jitted program per chunk, with the batch
split over every device of the mesh. Chunks are padded to a multiple of the data-parallel size
and the padding is dropped on the host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from latentjax.config import from_json
from latentjax.diffusion.samplers import sample as sample_latents
from latentjax.errors import LatentjaxError, WorkdirError
from latentjax.parallel import mesh as mesh_lib
from latentjax.train import loop
from latentjax.train.autoencoder import load_autoencoder
from latentjax.train.dit import DiTStage, frozen_inputs, read_latent_stats


@dataclasses.dataclass
class Generator:
    stage: DiTStage
    ema_params: Any
    frozen: dict[str, Any]
    mesh: Mesh

    def __post_init__(self):
        self._programs: dict[tuple, Any] = {}

    def _program(self, num_steps: int, cfg_scale: float):
        key = (num_steps, float(cfg_scale))
        if key not in self._programs:
            d = self.stage.config.diffusion
            ae = self.stage.ae_stage.ae
            batch = mesh_lib.batch_sharding(self.mesh)

            def run(params, frozen, labels, rng):
                noise = jax.random.normal(rng, (labels.shape[0], *self.stage.latent_shape))
                noise = jax.lax.with_sharding_constraint(noise, batch)
                z = sample_latents(
                    self.stage.apply,
                    params,
                    noise,
                    labels,
                    path=d.path,
                    prediction=d.prediction,
                    num_steps=num_steps,
                    cfg_scale=cfg_scale,
                    null_label=self.stage.null_label,
                )
                z = z / frozen["latent_scale"] + frozen["latent_shift"]
                x = ae.apply(frozen["ae"], z, method=ae.decode)
                # [-1, 1] -> uint8 on device: 4x less to copy to the host.
                return jnp.round((jnp.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(jnp.uint8)

            self._programs[key] = jax.jit(run, out_shardings=batch)
        return self._programs[key]

    def sample(
        self, labels: np.ndarray, seed: int, *, num_steps: int, cfg_scale: float, chunk: int
    ) -> Iterator[np.ndarray]:
        """Yields uint8 images [n, H, W, C] chunk by chunk for ``labels`` (int [N])."""
        program = self._program(num_steps, cfg_scale)
        dp = mesh_lib.data_parallel_size(self.mesh)
        chunk = max(dp, (chunk // dp) * dp)
        rng = jax.random.key(seed)
        for i, start in enumerate(range(0, len(labels), chunk)):
            part = np.asarray(labels[start : start + chunk], np.int32)
            padded = np.concatenate([part, np.zeros(chunk - len(part), np.int32)])
            y = jax.device_put(padded, mesh_lib.batch_sharding(self.mesh))
            images = program(self.ema_params, self.frozen, y, jax.random.fold_in(rng, i))
            # Every process gets the whole chunk (on one process this is a plain device_get).
            yield np.asarray(multihost_utils.process_allgather(images, tiled=True))[: len(part)]


def load_generator(workdir: str | Path, mesh: Mesh) -> Generator:
    """Loads a stage-2 run (and the stage-1 run it names) for sampling."""
    workdir = Path(workdir)
    config_path = workdir / "config.json"
    if not config_path.exists():
        raise WorkdirError(f"no run at {workdir} (missing config.json)")
    config = from_json(config_path.read_text())
    if config.stage != "dit":
        raise WorkdirError(
            f"{workdir} holds a '{config.stage}' run; sampling needs a stage-2 (dit) run"
        )
    _, ae_stage, ae_params = load_autoencoder(config.ae_workdir, mesh)
    stage = DiTStage(config, ae_stage)
    stats = read_latent_stats(workdir)
    if stats is None:
        raise WorkdirError(f"{workdir} has no latent statistics; was it trained?")
    state = loop.restore_latest(workdir, stage.init_state, config, mesh)
    frozen, _ = frozen_inputs(ae_params, stats, mesh)
    return Generator(stage, state["ema_params"], frozen, mesh)


def parse_labels(spec: str | None, num: int, num_classes: int) -> np.ndarray:
    """``None`` -> classes in turn (0, 1, ..., 0, 1, ...); "3" -> all 3; "1,2,3" -> cycled."""
    if num <= 0:
        raise LatentjaxError(f"--num must be positive, got {num}")
    if spec is None or spec == "":
        base = np.arange(max(num_classes, 1))
    else:
        try:
            base = np.array([int(s) for s in spec.split(",")])
        except ValueError:
            msg = f"--labels must be comma-separated integers, got {spec!r}"
            raise LatentjaxError(msg) from None
        bad = base[(base < 0) | (base >= max(num_classes, 1))]
        if bad.size:
            raise LatentjaxError(f"label {int(bad[0])} out of range [0, {num_classes})")
    return np.resize(base, num).astype(np.int32)
