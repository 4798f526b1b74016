"""Images from Python in one call: the sampler, guidance, latent normalisation and decoder of a
stage-2 run, behind ``latentjax.load_pipeline(PATH)``.

    pipe = latentjax.load_pipeline("runs/digits/dit")   # a stage-2 run, its export, a conversion
    images = pipe.sample(labels=[0, 1, 2], num=30, steps=32, sampler="heun", cfg=2.0, seed=0)
    # -> uint8 [30, H, W, C]; labels cycled 0, 1, 2, 0, ...; output="float": float32 in [-1, 1]

The pipeline is :class:`~latentjax.generate.Generator` (what ``latentjax sample`` runs) with the
arguments ``latentjax sample`` takes: the same labels for the same ``labels``/``num``
(:func:`~latentjax.generate.class_labels`), the same settings from the run's ``sample`` section
(:func:`~latentjax.generate.spec_from_config`), the same chunks of ``sample.batch_size`` and the
same compiled program. So the same seed gives the same images as ``latentjax sample --seed``.
Image j's noise comes from ``fold_in(key(seed), j)``: the first k images of a call do not depend
on ``num``.

The program is compiled once per (sampler, guided or not, output type) for the run's chunk
shape and kept: the step count, eta, guidance scale and interval, the labels and the seed are
its runtime arguments, so a second call does not recompile. Each chunk is split over the devices
JAX sees (the run's ``mesh.shape``; by default every device on the data axis).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from latentjax.api import Autoencoder, DiTModel
from latentjax.errors import LatentjaxError, WorkdirError
from latentjax.generate import (
    Generator,
    check_guidance,
    class_labels,
    collect_samples,
    load_generator,
    spec_from_config,
)
from latentjax.parallel.mesh import make_mesh
from latentjax.paths import Path, as_path
from latentjax.run import Run

OUTPUTS = ("uint8", "float")


@dataclasses.dataclass
class Pipeline:
    """A loaded two-stage model that samples images (:meth:`sample`); its parts are
    :attr:`autoencoder` (encode/decode/normalise), :attr:`dit` (the EMA network) and
    :attr:`latent_stats`."""

    generator: Generator
    config: ml_collections.ConfigDict  # the stage-2 run's config (its `sample` section: defaults)
    ae_config: ml_collections.ConfigDict  # the stage-1 run's config
    path: Path

    @property
    def num_classes(self) -> int:
        """Classes the DiT was trained on (labels take 0 .. num_classes - 1); 0: unconditional."""
        return int(self.config.model.num_classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one sampled image."""
        return tuple(self.generator.image_shape)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """(h, w, c) of the latents the DiT samples."""
        return tuple(self.generator.stage.latent_shape)

    @functools.cached_property
    def latent_stats(self) -> dict[str, Any]:
        """The normalisation stage 2 works in, ``(z - shift) * scale`` (scalars, or lists per
        channel), with what was measured beside it (``latent_stats.json``: per-channel means
        and stds, ...)."""
        return Run.open(self.path).latent_stats()

    @functools.cached_property
    def autoencoder(self) -> Autoencoder:
        """The frozen stage 1: ``encode`` [B, H, W, C] in [-1, 1] -> latents, ``decode`` back,
        ``normalize``/``denormalize`` with :attr:`latent_stats`."""
        stats = self.latent_stats
        ae_params = self.generator.frozen["ae"]
        ae = self.generator.stage.ae
        return Autoencoder(ae, ae_params, stats["shift"], stats["scale"], self.ae_config)

    @functools.cached_property
    def dit(self) -> DiTModel:
        """The stage-2 network with its EMA weights: ``dit(x_t, t, y)`` on normalised latents
        [B, h, w, c], t [B] in [0, 1000), y [B] labels (``num_classes``: the null label)."""
        return DiTModel(self.generator.stage.dit, self.generator.ema_params, self.config)

    def sample(
        self,
        labels: int | Sequence[int] | None = None,
        num: int | None = None,
        *,
        steps: int | None = None,
        sampler: str | None = None,
        cfg: float | None = None,
        seed: int = 0,
        eta: float | None = None,
        guidance_interval: tuple[float, float] | None = None,
        guidance_channels: int | None = None,
        time_shift: float | None = None,
        batch_size: int | None = None,
        output: str = "uint8",
        progress: bool = True,
    ) -> np.ndarray:
        """Samples ``num`` images -> uint8 [num, H, W, C] in 0..255, or with ``output="float"``
        float32 [num, H, W, C] in [-1, 1] (the decoder's output, clipped); a stage 2 on video
        latents gives clips [num, T, H, W, C].

        ``labels``: None -> the classes in turn (0, 1, ..., 0, 1, ...); an int -> that class;
        a list -> cycled to ``num`` (default: its length). ``steps``, ``sampler`` ("ddim",
        "ddpm", "dpmpp_2m", "euler", "heun", "euler_maruyama"), ``cfg`` (classifier-free
        guidance scale; 1 = none), ``eta`` (DDIM), ``guidance_interval`` ((lo, hi): guide only
        for path times in it), ``guidance_channels`` (guide only the first N latent
        channels; 0 = all) and ``time_shift`` (the sampler grid's) default to the run's config
        (its ``sample`` section and ``diffusion.time_shift``), as in ``latentjax sample``;
        ``batch_size``: images per compiled call (default ``sample.batch_size``; a new size
        compiles a new program). A progress bar shows on a terminal unless ``progress=False``."""
        if output not in OUTPUTS:
            raise LatentjaxError(f"output={output!r}; use one of {', '.join(OUTPUTS)}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise LatentjaxError(f"seed must be an integer, got {seed!r}")
        spec = spec_from_config(
            self.config,
            sampler=sampler,
            num_steps=steps,
            eta=eta,
            cfg_scale=cfg,
            guidance_interval=None if guidance_interval is None else tuple(guidance_interval),
            guidance_channels=guidance_channels,
            time_shift=time_shift,
        )
        check_guidance(self.config.model, spec)
        chosen = class_labels(labels, num, self.num_classes)
        chunk = self.config.sample.batch_size if batch_size is None else batch_size
        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
            raise LatentjaxError(f"batch_size must be a positive integer, got {batch_size!r}")
        return collect_samples(
            self.generator,
            chosen,
            spec,
            int(chunk),
            int(seed),
            floats=output == "float",
            progress=progress,
        )


def load_pipeline(path: str | Path) -> Pipeline:
    """A stage-2 training run (its EMA weights, at the latest checkpoint), its export
    (``latentjax export``) or a converted DiT with its autoencoder (``latentjax convert dit
    --ae``), with the stage-1 run it names -> :class:`Pipeline`."""
    path = as_path(path)
    run = Run.open(path)
    if run.stage != "dit":
        raise WorkdirError(
            f"{path} is a stage-1 ('{run.stage}') run; load_pipeline takes a stage-2 run "
            "trained on it (latentjax.load_autoencoder loads this one)"
        )
    generator = load_generator(path, make_mesh(run.config.mesh.shape))
    return Pipeline(generator, run.config, run.ae_run().config, path)
