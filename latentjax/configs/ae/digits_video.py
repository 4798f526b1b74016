"""Causal video autoencoder (Wan 2.1's architecture, CPU-sized) on the embedded moving digits.

    latentjax train --config ae/digits_video.py --workdir runs/digits/video

A clip of 9 frames of 32 x 32 x 1 (``latentjax/data/moving_digits.py``) becomes 3 latent
frames of 8 x 8 x 4: x4 in time (frame 0 alone, then every 4 frames), x4 in space, 4 channels;
a tensor size reduction of 9 x 1024 / (3 x 256) = 12. The recipe is ``ae/digits.py``'s applied
per frame (L1 + KL with warm-up; the 2-D PatchGAN on every frame for the last 15% of the steps).
"""

import ml_collections

from latentjax.configs.ae.digits import get_config as digits_config


def get_config() -> ml_collections.ConfigDict:
    c = digits_config()
    c.data.name = "latentjax_moving_digits"
    c.data.image_size = 32  # the canvas, unchanged

    c.model.family = "video"
    c.model.ch = 16
    c.model.ch_mult = (1, 2, 2)  # two downsamplings: x4 in space
    c.model.temporal_downsample = (True, True)  # both halve time too: x4
    c.model.num_res_blocks = 1
    c.model.z_channels = 4

    c.train.batch_size = 8
    c.train.num_steps = 600
    c.train.log_every = 25
    c.train.eval_every = 200
    c.train.checkpoint_every = 200
    c.loss.kl_warmup_steps = 100
    c.loss.disc_start = 510  # the last 15%
    c.optim.warmup_steps = 50
    return c
