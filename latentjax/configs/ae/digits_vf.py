"""``ae/digits.py`` with VA-VAE's VF loss (Yao et al. 2025) against LPIPS's VGG16.

    latentjax train --config ae/digits_vf.py --workdir runs/digits/ae_vf \\
        --config.loss.vf_encoder_weights=DIR     # a `latentjax convert lpips` directory

The 1x1-projected 4 x 4 latent is aligned with VGG16's relu4_3 features of the digit resized to
32 px (4 x 4 there: one feature per latent position), with VA-VAE's weight 0.1 and margins:
the setting ``benchmarks/alignment.py`` and ``benchmarks/modelability.py`` measure (README,
"alignment").
"""

import ml_collections

from latentjax.configs.ae import digits


def vgg16_vf(loss: ml_collections.ConfigDict, size: int) -> None:
    """Turns on the VF loss in ``loss`` against VGG16's relu4_3 of the image at ``size`` px
    (weight 0.1; the weights from --config.loss.vf_encoder_weights=DIR)."""
    loss.vf_weight = 0.1
    loss.vf_encoder = "vgg16"
    loss.vf_encoder_weights = ""  # required: --config.loss.vf_encoder_weights=DIR
    loss.vf_encoder_size = size
    loss.vf_vgg_tap = 3  # relu4_3: size / 8 positions a side
    loss.vf_feature_dim = 512  # relu4_3's width (checked against the network when it trains)


def get_config() -> ml_collections.ConfigDict:
    c = digits.get_config()
    vgg16_vf(c.loss, size=32)  # 4 x 4: the latent grid
    return c
