"""Class-conditional latent DiT on the photo crops autoencoder's latents (rectified flow).

    latentjax train --config dit/photos.py --workdir runs/photos/dit \\
        --config.ae_workdir=runs/photos/f4

Builds on a stage-1 run of ``ae/photos_f4.py`` (32 px crops -> 8 x 8 x 4 latents; patches of
2: 16 tokens). The class is the photograph a crop comes from (``latentjax/data/photos.py``: the
14 training photographs; the 2 held-out ones are classes no training crop has). Everything else
is ``dit/digits.py``'s: a CPU-sized check that stage 2 runs on natural images, not a good photo
generator. Its samples are judged against the ``val`` split (further crops of the training
photographs: the distribution the DiT learns) in LPIPS's VGG16 features, offline:

    latentjax eval --workdir runs/photos/dit --vgg16 DIR     # DIR: `latentjax convert lpips`
"""

import ml_collections

from latentjax.configs.dit import digits
from latentjax.data import photos


def get_config() -> ml_collections.ConfigDict:
    c = digits.get_config()
    c.ae_workdir = "runs/photos/f4"
    c.data.name = "latentjax_photos"
    c.data.image_size = 32
    c.data.eval_split = "val"
    c.model.patch_size = 2
    c.model.num_classes = len(photos.IMAGE_NAMES)
    return c
