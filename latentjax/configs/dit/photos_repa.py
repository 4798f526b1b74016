"""``dit/photos.py`` with REPA (Yu et al. 2025) against LPIPS's VGG16.

    latentjax train --config dit/photos_repa.py --workdir runs/photos/dit_repa \\
        --config.ae_workdir=runs/photos/f4 --config.repa.encoder_weights=DIR

The hidden state after block 2 of 4, through a 256-wide MLP projector, is pulled towards
VGG16's relu4_3 features of the clean crop at 32 px (4 x 4: the token grid) with REPA's weight
0.5, as ``dit/digits_repa.py`` does for the digits. ``DIR`` is a `latentjax convert lpips`
directory.
"""

import ml_collections

from latentjax.configs.dit import digits_repa, photos


def get_config() -> ml_collections.ConfigDict:
    c = photos.get_config()
    c.repa = digits_repa.get_config().repa
    return c
