"""KL autoencoder on the embedded photo crops at 32 px, f = 4 (32x32x3 -> 8x8x4: size / 12).

    python -m latentjax.data.photos            # build the dataset once (offline, ~30 s)
    latentjax train --config ae/photos_f4.py --workdir runs/photos/f4
    latentjax eval --workdir runs/photos/f4

The 64 px crops of ``latentjax/data/photos.py`` are resized to 32 px (antialiased). Sized for a
CPU: a natural-image check of the stage-1 recipe, not a good photo autoencoder. Everything not
set here is ``configs/ae/digits.py``'s (L1 + 1e-6 KL with warm-up, PatchGAN for the last 15%).
"""

import ml_collections

from latentjax.configs.ae.digits import get_config as digits_config


def get_config(ch_mult=(1, 2, 2)) -> ml_collections.ConfigDict:
    c = digits_config()
    c.data.name = "latentjax_photos"
    c.data.image_size = 32
    c.data.eval_split = "test"
    c.model.in_channels = 3
    c.model.ch = 32
    c.model.ch_mult = ch_mult  # len - 1 downsamplings: f = 4
    c.model.num_res_blocks = 1
    c.model.num_groups = 8
    c.model.z_channels = 4
    c.model.embed_dim = 4
    c.train.batch_size = 16
    c.train.num_steps = 600
    c.train.eval_every = 200
    c.train.checkpoint_every = 200
    c.train.log_every = 50
    c.loss.kl_warmup_steps = 100
    c.loss.disc_start = 510  # the last 15%
    c.optim.warmup_steps = 50
    return c
