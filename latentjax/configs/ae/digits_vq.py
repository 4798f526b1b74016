"""VQ autoencoder on the digits: ``ae/digits.py`` with a 256-code codebook of
4-dimensional codes (VQ-VAE losses, straight-through gradients; ``model.vq_estimator=rotation``
for the rotation trick).

    latentjax train --config ae/digits_vq.py --workdir runs/digits/ae_vq
"""

from latentjax.configs.ae import digits


def get_config():
    c = digits.get_config()
    c.model.bottleneck = "vq"
    c.model.codebook_size = 256
    return c
