"""latentjax: two-stage latent generative models in JAX/Flax.

An autoencoder learns a latent space; a diffusion transformer learns to generate in it. The
Python API (the same code the ``latentjax`` command runs):

    import latentjax

    config = latentjax.config.load("ae/digits.py", overrides={"train.num_steps": 500})
    metrics = latentjax.train(config, "runs/ae")      # -> {"step": 500, "loss": ..., ...}
    config = latentjax.config.load("dit/digits.py", overrides={"ae_workdir": "runs/ae"})
    latentjax.train(config, "runs/dit")               # resumes if runs/dit has checkpoints

    pipe = latentjax.load_pipeline("runs/dit")        # a stage-2 run, export or conversion
    images = pipe.sample(labels=[3], num=16, steps=32, cfg=2.0, seed=0)  # uint8 [16, H, W, C]

    ae = latentjax.load_autoencoder("runs/ae")        # also diffusers / converted directories
    z = ae.encode(x)                                  # [B, H, W, C] in [-1, 1] -> [B, h, w, c]
    dit = latentjax.load_dit("DiT-XL-2-256x256.pt", num_heads=16, num_classes=1000)

``config.load`` (:mod:`latentjax.config`), ``train`` (:mod:`latentjax.train`), ``load_pipeline``
(:mod:`latentjax.pipeline`), ``load_autoencoder`` and ``load_dit`` (:mod:`latentjax.api`).
Errors a user can act on raise :class:`latentjax.errors.LatentjaxError` with a one-line message.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# name -> the module that defines it; imported on first use, so that `import latentjax` (the
# CLI's entry) does not import JAX and the converters.
_API = {
    "load_autoencoder": "latentjax.api",
    "load_dit": "latentjax.api",
    "load_pipeline": "latentjax.pipeline",
    "Autoencoder": "latentjax.api",
    "DiTModel": "latentjax.api",
    "Pipeline": "latentjax.pipeline",
    "LatentjaxError": "latentjax.errors",
}
# Modules that are part of the API: `latentjax.config.load`, and `latentjax.train(config,
# workdir)`, a package that is also the training function (see latentjax/train/__init__.py).
_MODULES = ("config", "train")

__all__ = [
    "Autoencoder",
    "DiTModel",
    "LatentjaxError",
    "Pipeline",
    "config",
    "load_autoencoder",
    "load_dit",
    "load_pipeline",
    "train",
]

if TYPE_CHECKING:
    from latentjax import config, train
    from latentjax.api import Autoencoder, DiTModel, load_autoencoder, load_dit
    from latentjax.errors import LatentjaxError
    from latentjax.pipeline import Pipeline, load_pipeline


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"latentjax.{name}")
    raise AttributeError(f"module 'latentjax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
