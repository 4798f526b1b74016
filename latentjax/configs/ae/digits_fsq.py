"""FSQ autoencoder on the digits: ``ae/digits.py`` with finite scalar quantisation,
levels (8, 5, 5, 5) on the 4 latent channels -- an implicit codebook of 1000 codes, one of the
level sets Mentzer et al. (2023, table 1) recommend.

    latentjax train --config ae/digits_fsq.py --workdir runs/digits/ae_fsq
"""

from latentjax.configs.ae import digits


def get_config():
    c = digits.get_config()
    c.model.bottleneck = "fsq"
    c.model.fsq_levels = (8, 5, 5, 5)
    return c
