"""KL autoencoder on the embedded scikit-learn digits, upsampled to 16 px (f=4, 4 channels).

    latentjax train --config configs/ae/digits.py --workdir runs/digits/ae

A 16x16x1 image becomes a 4x4x4 latent: a tensor size reduction of 4. Sized to train in a few
minutes on a 2-core CPU; the PatchGAN joins for the last 15% of the steps.
"""

import ml_collections

from configs.common import mesh_config


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.stage = "ae"
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "latentjax_digits"
    c.data.data_dir = ""  # "" -> $LATENTJAX_DATA_DIR or ~/.cache/latentjax/tfds
    c.data.image_size = 16
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.worker_count = 0  # Grain worker processes; 0 reads in the main process
    c.data.cache = True  # decode the split (0.1 MB) once, serve it from memory
    c.data.crop = "none"  # "none" | "center" | "random": a square crop before the resize
    c.data.flip = False  # random horizontal flips

    c.model = ml_collections.ConfigDict()
    c.model.ch = 16
    c.model.ch_mult = (1, 2, 2)  # two downsamplings: f = 4
    c.model.num_res_blocks = 1
    c.model.z_channels = 4
    c.model.in_channels = 1
    c.model.attn_resolutions = ()  # mid-block attention is always on
    c.model.num_groups = 8
    c.model.embed_dim = 4  # 1x1 quant convs around the bottleneck, as in Stable Diffusion
    c.model.bottleneck = "kl"  # "kl" | "ae" | "vq" | "fsq"
    c.model.codebook_size = 256  # vq
    c.model.vq_estimator = "ste"  # vq: "ste" | "rotation"
    c.model.fsq_levels = ()  # fsq: one level count per latent channel

    c.loss = ml_collections.ConfigDict()
    c.loss.reconstruction = "l1"
    c.loss.kl_weight = 1e-6
    c.loss.kl_warmup_steps = 200
    c.loss.kl_free_bits = 0.0  # nats per latent element and channel; 0 = off
    c.loss.codebook_weight = 1.0  # vq
    c.loss.commitment_weight = 0.25  # vq: beta
    c.loss.vq_restart_threshold = 1.0  # vq: restart codes used < this often per step; 0 = off
    c.loss.vq_usage_decay = 0.99  # vq: decay of the per-code usage average
    c.loss.perceptual = "none"  # "none" | "haar" | "fft" | "lpips"
    c.loss.perceptual_weight = 1.0
    # lpips: a `latentjax convert lpips` directory, or "VGG16.pth,HEADS.pth" (torchvision's VGG16
    # state dict and the lpips package's weights/v0.1/vgg.pth); read when training starts.
    c.loss.lpips_weights = ""
    c.loss.gan_loss = "hinge"  # "hinge" | "non_saturating"
    c.loss.disc_start = 850  # PatchGAN switches on here
    c.loss.disc_weight = 0.1  # times the adaptive weight
    c.loss.disc_ndf = 32
    c.loss.disc_layers = 2
    c.loss.disc_norm = "group"  # "group" | "batch" | "none"
    c.loss.r1_weight = 0.0  # gamma of R1 (Mescheder et al. 2018); 0 = off
    c.loss.lecam_weight = 0.0  # LeCam (Tseng et al. 2021); 0 = off
    c.loss.lecam_decay = 0.99

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 1e-3
    c.optim.disc_lr = 2e-4
    c.optim.b1 = 0.5
    c.optim.b2 = 0.9
    c.optim.warmup_steps = 100
    c.optim.grad_clip = 1.0

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 64
    c.train.num_steps = 1000
    c.train.log_every = 50
    c.train.eval_every = 250
    c.train.checkpoint_every = 250
    c.train.keep_checkpoints = 2
    # How a save leaves the loop: "auto" hands the state to a background writer as is on CPU
    # (the step after the save runs undonated, so nothing is copied) and as a snapshot in
    # pinned host memory on accelerators; "hold" holds it on any device (device memory stays
    # in use until written); "device" snapshots into device memory; "off" lets Orbax copy to
    # host on the loop's thread (no extra memory).
    c.train.checkpoint_snapshot = "auto"
    c.train.keep_best = 0  # also keep this many best checkpoints by train.best_metric
    c.train.best_metric = "test_psnr"  # computed on eval steps
    c.train.best_mode = "max"
    c.train.on_nonfinite = "stop"  # NaN/Inf loss or gradient: "stop" | "skip" the update

    c.mesh = mesh_config()
    return c
