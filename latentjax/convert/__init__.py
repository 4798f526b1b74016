"""Weight readers: diffusers autoencoders, the Wan 2.1 video VAE, DiT, DINOv2, LPIPS and the FID
Inception network, from the files their projects publish, into latentjax's models."""

from latentjax.convert.common import ConvertError
from latentjax.convert.diffusers_ae import load_diffusers_autoencoder
from latentjax.convert.dinov2 import load_dinov2
from latentjax.convert.dit import load_dit
from latentjax.convert.wan import load_wan_autoencoder

__all__ = [
    "ConvertError",
    "load_diffusers_autoencoder",
    "load_dinov2",
    "load_dit",
    "load_wan_autoencoder",
]
