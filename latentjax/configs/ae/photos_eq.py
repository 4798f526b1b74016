"""``ae/photos_f4.py`` with equivariance regularisation (EQ-VAE, Kouzelis et al. 2025).

    latentjax train --config ae/photos_eq.py --workdir runs/photos/f4_eq

Half the batches (EQ-VAE's p = 0.5) decode the 8 x 8 latent down-scaled by 1 or 0.5 (to 4 x 4:
16 px images, which the PatchGAN still sees whole) and rotated by 0-3 quarter turns, against
the image transformed alike. Everything else is ``ae/photos_f4.py``'s;
``benchmarks/photo_shaping.py`` compares the two (and the VF loss, ``ae/photos_vf.py``).
"""

import ml_collections

from latentjax.configs.ae import photos_f4


def get_config() -> ml_collections.ConfigDict:
    c = photos_f4.get_config()
    c.loss.eq_prob = 0.5
    c.loss.eq_scales = (1.0, 0.5)
    c.loss.eq_rotations = (0, 1, 2, 3)
    return c
