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


def get_config() -> ml_collections.ConfigDict:
    c = digits.get_config()
    c.loss.vf_weight = 0.1
    c.loss.vf_encoder = "vgg16"
    c.loss.vf_encoder_weights = ""  # required: --config.loss.vf_encoder_weights=DIR
    c.loss.vf_encoder_size = 32
    c.loss.vf_vgg_tap = 3  # relu4_3: 4 x 4 at 32 px
    c.loss.vf_feature_dim = 512  # relu4_3's width (checked against the network when it trains)
    return c
