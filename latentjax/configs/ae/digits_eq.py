"""``ae/digits.py`` with equivariance regularisation (EQ-VAE, Kouzelis et al. 2025).

    latentjax train --config ae/digits_eq.py --workdir runs/digits/ae_eq
    # or as a short fine-tune of a trained (or converted) autoencoder:
    latentjax train --config ae/digits_eq.py --workdir runs/digits/ae_eq_ft \\
        --config.init_from=runs/digits/ae --config.train.num_steps=200

Half the batches (EQ-VAE's p = 0.5) decode the latent down-scaled by 1 or 0.75 (4x4 -> 3x3)
and rotated by 0-3 quarter turns, against the image transformed alike. (A factor of 0.5 gives
8 px images, too small for this 2-layer PatchGAN: the config check refuses it.) Everything else is
``ae/digits.py``'s; ``benchmarks/eq_vae.py`` compares the two.
"""

import ml_collections

from latentjax.configs.ae import digits


def get_config() -> ml_collections.ConfigDict:
    c = digits.get_config()
    c.loss.eq_prob = 0.5
    c.loss.eq_scales = (1.0, 0.75)
    c.loss.eq_rotations = (0, 1, 2, 3)
    return c
