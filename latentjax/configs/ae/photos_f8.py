"""KL autoencoder on the embedded photo crops at 32 px, f = 8 (32x32x3 -> 4x4x4: size / 48).

    python -m latentjax.data.photos            # build the dataset once (offline, ~30 s)
    latentjax train --config ae/photos_f8.py --workdir runs/photos/f8
    latentjax eval --workdir runs/photos/f8

``configs/ae/photos_f4.py`` with one more downsampling (Stable Diffusion's f = 8 with 4
channels, on a CPU-sized network and 32 px crops).
"""

import ml_collections

from latentjax.configs.ae.photos_f4 import get_config as photos_config


def get_config() -> ml_collections.ConfigDict:
    return photos_config(ch_mult=(1, 2, 2, 4))
