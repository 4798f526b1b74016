"""KL autoencoder on the embedded scikit-learn digits, upsampled to 16 px (f=4, 4 channels).

    latentjax train --config ae/digits.py --workdir runs/digits/ae

A 16x16x1 image becomes a 4x4x4 latent: a tensor size reduction of 4. Sized to train in a few
minutes on a 2-core CPU; the PatchGAN joins for the last 15% of the steps. Everything not set
here is the base recipe's (``configs/ae/base.py``).
"""

import ml_collections

from latentjax.configs.ae import base


def get_config() -> ml_collections.ConfigDict:
    c = base.get_config()
    c.data.name = "latentjax_digits"
    c.data.image_size = 16
    c.data.eval_split = "test"
    c.data.worker_count = 0
    c.data.cache = True  # the split is 0.1 MB decoded

    c.model.ch = 16
    c.model.ch_mult = (1, 2, 2)  # two downsamplings: f = 4
    c.model.num_res_blocks = 1
    c.model.in_channels = 1
    c.model.num_groups = 8

    c.loss.kl_warmup_steps = 200
    c.loss.perceptual = "none"
    c.loss.disc_start = 850
    c.loss.disc_weight = 0.1
    c.loss.disc_ndf = 32
    c.loss.disc_layers = 2
    c.loss.disc_norm = "group"

    c.optim.lr = 1e-3
    c.optim.disc_lr = 2e-4
    c.optim.warmup_steps = 100
    c.optim.grad_clip = 1.0

    c.train.batch_size = 64
    c.train.num_steps = 1000
    c.train.log_every = 50
    c.train.eval_every = 250
    c.train.checkpoint_every = 250
    return c
