"""Class-conditional latent DiT on the photo crops autoencoder's latents (rectified flow).

    latentjax train --config dit/photos.py --workdir runs/photos/dit \\
        --config.ae_workdir=runs/photos/f4

Builds on a stage-1 run of ``ae/photos_f4.py`` (32 px crops -> 8 x 8 x 4 latents; patches of
2: 16 tokens). The class is the photograph a crop comes from (``latentjax/data/photos.py``: the
14 training photographs; the 2 held-out ones are classes no training crop has). Everything else
is ``dit/digits.py``'s: a CPU-sized check that stage 2 runs on natural images, not a good photo
generator. No feature space for judging photo samples ships offline (the FID Inception
network's weights are a download), so its samples are looked at, not scored.
"""

import ml_collections

from latentjax.configs.dit import digits
from latentjax.data import photos


def get_config() -> ml_collections.ConfigDict:
    c = digits.get_config()
    c.ae_workdir = "runs/photos/f4"
    c.data.name = "latentjax_photos"
    c.data.image_size = 32
    c.model.patch_size = 2
    c.model.num_classes = len(photos.IMAGE_NAMES)
    return c
