"""Stable Diffusion's autoencoder (SD 1.x ``AutoencoderKL``, latent-diffusion's
``kl-f8``): f = 8, 4 latent channels, 256 px RGB; 83,653,863 parameters, laid out so SD's
weights map one to one (see ``latentjax/models/autoencoder.py``).

    latentjax train --config configs/ae/kl_f8c4_256.py --workdir runs/kl_f8 \
        --config.data.name=<an RGB tfds dataset>

The loss follows latent-diffusion's ``autoencoder_kl_f8`` config (kl_weight 1e-6, disc_start
50001, disc_weight 0.5, a 3-layer PatchGAN) except for the perceptual term: SD uses LPIPS
(weight 1.0), whose VGG weights are not shipped here; set ``loss.perceptual=lpips`` with a
feature network, or keep the weight-free Haar wavelet term. Training this size is for an
accelerator; on a CPU use it for shapes, parameter counts and weight import.
"""

import ml_collections

from configs.ae import digits


def get_config() -> ml_collections.ConfigDict:
    c = digits.get_config()
    c.data.image_size = 256
    c.data.cache = False  # decoded 256 px images do not fit in host memory

    c.model.ch = 128
    c.model.ch_mult = (1, 2, 4, 4)  # three downsamplings: f = 8
    c.model.num_res_blocks = 2
    c.model.z_channels = 4
    c.model.in_channels = 3
    c.model.attn_resolutions = ()  # SD: attention only in the mid blocks
    c.model.num_groups = 32
    c.model.embed_dim = 4
    c.model.bottleneck = "kl"

    c.loss.reconstruction = "l1"
    c.loss.kl_weight = 1e-6
    c.loss.kl_warmup_steps = 0
    c.loss.perceptual = "haar"
    c.loss.perceptual_weight = 1.0
    c.loss.disc_start = 50001
    c.loss.disc_weight = 0.5
    c.loss.disc_ndf = 64
    c.loss.disc_layers = 3
    c.loss.disc_norm = "batch"  # the reference PatchGAN's BatchNorm (training-mode statistics)

    c.optim.lr = 4.5e-6 * 12  # latent-diffusion: base_learning_rate 4.5e-6 x batch 12
    c.optim.disc_lr = 4.5e-6 * 12
    c.optim.warmup_steps = 0

    c.train.batch_size = 12
    c.train.num_steps = 100_000
    c.train.log_every = 100
    c.train.eval_every = 5_000
    c.train.checkpoint_every = 5_000
    return c
