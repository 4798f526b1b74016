"""Causal video autoencoder (Wan 2.1's architecture, CPU-sized) on the embedded moving digits.

    latentjax train --config ae/digits_video.py --workdir runs/digits/video

A clip of 9 frames (``latentjax/data/moving_digits.py``: 32 x 32 canvases, resized to 16 x 16 x
1 here) becomes 3 latent frames of 4 x 4 x 6: x4 in time (frame 0 alone, then every 4 frames),
x4 in space, 6 channels; a tensor size reduction of 9 x 256 / (3 x 96) = 8, the same as the
image autoencoder of ``benchmarks/video.py`` (f = 4, 2 channels) applied frame by frame. The
recipe is ``ae/digits.py``'s applied per frame (L1 + KL with warm-up; the 2-D PatchGAN on every
frame for the last 15% of the steps). A step of 4 clips took 2 to 3.4 s on a 2-core CPU
(README, "Video"); this config's 8 clips a step (a batch the 8-device test mesh can split)
take about twice that, so its 300 steps take 20 to 30 minutes there.
"""

import ml_collections

from latentjax.configs.ae.digits import get_config as digits_config


def get_config() -> ml_collections.ConfigDict:
    c = digits_config()
    c.data.name = "latentjax_moving_digits"
    c.data.image_size = 16  # frames resized from the 32 px canvas

    c.model.family = "video"
    c.model.ch = 16
    c.model.ch_mult = (1, 2, 2)  # two downsamplings: x4 in space
    c.model.temporal_downsample = (True, True)  # both halve time too: x4
    c.model.num_res_blocks = 1
    c.model.z_channels = 6

    c.train.batch_size = 8  # clips (72 frames)
    c.train.num_steps = 300
    c.train.log_every = 25
    c.train.eval_every = 100
    c.train.checkpoint_every = 100
    c.loss.kl_warmup_steps = 50
    c.loss.disc_start = 255  # the last 15%
    c.optim.warmup_steps = 25
    return c
