"""``dit/digits.py`` with REPA (Yu et al. 2025) against LPIPS's VGG16.

    latentjax train --config dit/digits_repa.py --workdir runs/digits/dit_repa \\
        --config.ae_workdir=runs/digits/ae --config.repa.encoder_weights=DIR

The hidden state after block 2 of 4, through a 256-wide MLP projector, is pulled towards
VGG16's relu4_3 features of the clean digit at 32 px (4 x 4: the token grid) with REPA's weight
0.5: the setting ``benchmarks/alignment.py`` measures (README, "REPA"). ``DIR`` is a
`latentjax convert lpips` directory.
"""

import ml_collections

from latentjax.configs.dit import digits


def get_config() -> ml_collections.ConfigDict:
    c = digits.get_config()
    c.repa.weight = 0.5
    c.repa.depth = 2
    c.repa.projector_dim = 256
    c.repa.encoder = "vgg16"
    c.repa.encoder_weights = ""  # required: --config.repa.encoder_weights=DIR
    c.repa.encoder_size = 32
    c.repa.vgg_tap = 3
    c.repa.feature_dim = 512  # relu4_3's width (checked against the network when it trains)
    return c
