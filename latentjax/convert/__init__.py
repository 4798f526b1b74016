"""Weight converters: diffusers autoencoders, DiT and DINOv2 checkpoints into latentjax's models."""

from latentjax.convert.common import ConvertError
from latentjax.convert.diffusers_ae import load_diffusers_autoencoder
from latentjax.convert.dinov2 import load_dinov2
from latentjax.convert.dit import load_dit

__all__ = ["ConvertError", "load_diffusers_autoencoder", "load_dinov2", "load_dit"]
