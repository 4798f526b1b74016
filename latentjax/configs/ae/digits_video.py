"""Causal video autoencoder (Wan 2.1's architecture, CPU-sized) on the embedded moving digits.

    latentjax train --config ae/digits_video.py --workdir runs/digits/video

A clip of 9 frames (``latentjax/data/moving_digits.py``: 32 x 32 canvases, resized to 16 x 16 x
1 here, so the digit is 8 px) becomes 5 latent frames of 8 x 8 x 4: x2 in time (frame 0 alone,
then every 2 frames), x2 in space, 4 channels; a tensor size reduction of 9 x 256 / (5 x 256) =
1.8. Wan's x4 in time and x4 in space (``--config.model.ch_mult="(1, 2, 2)"
--config.model.temporal_downsample="(True, True)"``, 6 channels: a size reduction of 8) left each
latent position a quarter of the digit's width, and its reconstructions were recognised in 61% of
the frames after 2,000 steps, against 84% for this one after 1,500 (README, "The video demo").
The recipe is ``ae/digits.py``'s applied per frame (L1 + KL with warm-up; the 2-D PatchGAN on
every frame for the last 15% of the steps). The chunks are unrolled (``model.unroll_chunks``):
on a CPU its gradient is then about 14x faster than with the chunks in a loop, and the 1,500
steps of 8 clips take about 7 minutes on 2 cores.
"""

import ml_collections

from latentjax.configs.ae.digits import get_config as digits_config


def get_config() -> ml_collections.ConfigDict:
    c = digits_config()
    c.data.name = "latentjax_moving_digits"
    c.data.image_size = 16  # frames resized from the 32 px canvas

    c.model.family = "video"
    c.model.ch = 16
    c.model.ch_mult = (1, 2)  # one downsampling: x2 in space
    c.model.temporal_downsample = (True,)  # it halves time too: x2
    c.model.num_res_blocks = 1
    c.model.z_channels = 4
    c.model.unroll_chunks = True  # its gradient ~14x faster on a CPU (benchmarks/video_scan.py)

    c.train.batch_size = 8  # clips (72 frames)
    c.train.num_steps = 1500
    c.train.log_every = 100
    c.train.eval_every = 500
    c.train.checkpoint_every = 500
    c.loss.kl_warmup_steps = 50
    c.loss.disc_start = 1275  # the last 15%
    c.optim.warmup_steps = 25
    return c
