"""Wan 2.1's causal video autoencoder (Wan Team 2025, arXiv:2503.20314) trained at 480p, for
planning a slice.

    latentjax plan --config ae/wan21_480p.py --topology v5p-64 --frames 81 --size 480,832

The network is Wan 2.1's own (diffusers' ``AutoencoderKLWan`` defaults, whose weights convert to
it one to one): ch 96, ch_mult (1, 2, 4, 4), 2 res blocks per level, 16 latent channels, time
halved at the last two downsamplings -- x8 in space, x4 in time, so 81 frames of 480 x 832 give
21 latent frames of 60 x 104 x 16. Wan published no training code or recipe; the loss here is
the base recipe (``configs/ae/base.py``: L1, the Haar perceptual term, KL, the 2-D PatchGAN)
applied to every frame, as ``latentjax/train/autoencoder.py`` does for video.

``data.image_size`` is square, so the plan's ``--size 480,832`` gives the frame size; a training
run needs a tfds video dataset of yours under ``data.name`` (clips ``video`` [T, H, W, 3] and a
``label``): nothing here prepares one.
"""

import ml_collections

from latentjax.configs.ae import base
from latentjax.configs.common import mesh_config


def get_config() -> ml_collections.ConfigDict:
    c = base.get_config()
    c.data.name = "my_videos"  # yours: a tfds video dataset prepared in data_dir
    c.data.image_size = 480

    c.model.family = "video"
    c.model.ch = 96
    c.model.ch_mult = (1, 2, 4, 4)
    c.model.num_res_blocks = 2
    c.model.z_channels = 16
    c.model.temporal_downsample = (False, True, True)

    c.train.batch_size = 32  # clips: one per chip of a v5p-64 (32 chips)
    c.optim.lr = base.BASE_LR * c.train.batch_size
    c.optim.disc_lr = base.BASE_LR * c.train.batch_size
    c.mesh = mesh_config(data=-1, fsdp=1)
    return c
