"""Class-conditional latent DiT on the digits autoencoder's latents (rectified flow).

    latentjax train --config configs/dit/digits.py --workdir runs/digits/dit \
        --config.ae_workdir=runs/digits/ae

Builds on the stage-1 run in ``ae_workdir`` (configs/ae/digits.py), whose encoder stays frozen.
"""

import ml_collections

from configs.common import mesh_config


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.stage = "dit"
    c.seed = 0
    c.ae_workdir = "runs/digits/ae"

    c.data = ml_collections.ConfigDict()
    c.data.name = "latentjax_digits"
    c.data.data_dir = ""
    c.data.image_size = 16  # must match the autoencoder's
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.worker_count = 0
    c.data.cache = True  # decode the split (0.1 MB) once, serve it from memory
    c.data.crop = "none"  # "none" | "center" | "random": a square crop before the resize
    c.data.flip = False  # random horizontal flips
    # A latent cache written by `latentjax encode` (its --out DIR, or DIR/NAME); "" encodes
    # images on the fly. With data.flip, its flipped copy is used too.
    c.data.latent_cache = ""
    c.data.latent_stats_batches = 8  # batches used to measure the latent shift/scale

    c.model = ml_collections.ConfigDict()
    c.model.patch_size = 1  # the 4x4x4 latent is 16 tokens
    c.model.hidden_size = 128
    c.model.depth = 4
    c.model.num_heads = 4
    c.model.mlp_ratio = 4.0
    c.model.num_classes = 10
    c.model.learn_sigma = False

    c.diffusion = ml_collections.ConfigDict()
    c.diffusion.path = "linear"  # rectified flow: x_t = (1 - t) x0 + t eps
    c.diffusion.prediction = "velocity"
    c.diffusion.t_sampling = "logit_normal"
    # none | min_snr | snr | snr_plus_one | truncated_snr (latentjax/losses/diffusion.py)
    c.diffusion.loss_weighting = "none"
    c.diffusion.min_snr_gamma = 5.0
    c.diffusion.label_drop = 0.1  # classifier-free guidance training

    c.sample = ml_collections.ConfigDict()
    # ddim | ddpm | dpmpp_2m | euler | heun | euler_maruyama (latentjax/diffusion/samplers.py)
    c.sample.sampler = "euler"
    c.sample.num_steps = 32
    c.sample.eta = 0.0  # DDIM only
    c.sample.guidance_interval = (0.0, 1.0)  # guide for path times t in [lo, hi]
    c.sample.cfg_scale = 2.0
    c.sample.batch_size = 100

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 5e-4
    c.optim.weight_decay = 0.0
    c.optim.warmup_steps = 100
    c.optim.grad_clip = 1.0
    c.optim.ema_decay = 0.999

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 64
    c.train.num_steps = 1500
    c.train.log_every = 50
    c.train.eval_every = 1000
    c.train.checkpoint_every = 500
    c.train.keep_checkpoints = 2
    # How a save leaves the loop: "auto" hands the state to a background writer as is on CPU
    # (the step after the save runs undonated, so nothing is copied) and as a snapshot in
    # pinned host memory on accelerators; "hold" holds it on any device (device memory stays
    # in use until written); "device" snapshots into device memory; "off" lets Orbax copy to
    # host on the loop's thread (no extra memory).
    c.train.checkpoint_snapshot = "auto"
    c.train.keep_best = 0  # also keep this many best checkpoints by train.best_metric
    c.train.best_metric = "loss"
    c.train.best_mode = "min"
    c.train.on_nonfinite = "stop"  # NaN/Inf loss or gradient: "stop" | "skip" the update

    c.mesh = mesh_config()
    return c
