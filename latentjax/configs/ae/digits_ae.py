"""Plain (unregularised) autoencoder on the digits: ``ae/digits.py`` without the KL.

latentjax train --config ae/digits_ae.py --workdir runs/digits/ae_plain
"""

from latentjax.configs.ae import digits


def get_config():
    c = digits.get_config()
    c.model.bottleneck = "ae"
    return c
