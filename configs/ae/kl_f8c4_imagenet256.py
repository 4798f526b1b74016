"""Stable Diffusion's KL-f8 autoencoder recipe on ImageNet at 256 px, for a TPU pod.

    latentjax plan --config configs/ae/kl_f8c4_imagenet256.py --topology v5p-64
    launch/tpu_pod.sh --name ae --accelerator-type v5p-64 -- \
        train --config configs/ae/kl_f8c4_imagenet256.py --workdir gs://BUCKET/runs/ae

The recipe is latent-diffusion's ``models/first_stage_models/kl-f8/config.yaml`` (CompVis):
ch 128, ch_mult (1, 2, 4, 4), 2 res blocks, no attention outside the mid block, z 4 (double_z:
mean and log-variance), embed_dim 4; ``LPIPSWithDiscriminator`` with kl_weight 1e-6,
disc_start 50001, disc_weight 0.5, perceptual weight 1, a 3-layer PatchGAN with hinge loss;
base_learning_rate 4.5e-6 scaled by the global batch (latent-diffusion's main.py multiplies it by
GPUs x batch x accumulation). The perceptual term here is ``haar`` (weight 1): the trainer does
not load LPIPS feature weights yet; switch with ``--config.loss.perceptual=lpips`` once it does.

Data: tfds ``imagenet2012``, prepared beforehand in ``data.data_dir`` as array_record (it needs
a manual download; nothing is fetched). Without it, training stops with a one-line error.
"""

import ml_collections

from configs.ae import digits
from configs.common import mesh_config

BASE_LR = 4.5e-6  # latent-diffusion kl-f8: per example of the global batch


def get_config() -> ml_collections.ConfigDict:
    c = digits.get_config()
    c.data.name = "imagenet2012"
    c.data.data_dir = ""
    c.data.image_size = 256
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.worker_count = 8  # Grain workers per host

    c.model.ch = 128
    c.model.ch_mult = (1, 2, 4, 4)  # three downsamplings: f = 8, 256 px -> 32 x 32 x 4
    c.model.num_res_blocks = 2
    c.model.z_channels = 4
    c.model.in_channels = 3
    c.model.attn_resolutions = ()
    c.model.num_groups = 32
    c.model.embed_dim = 4
    c.model.bottleneck = "kl"

    c.loss.reconstruction = "l1"
    c.loss.kl_weight = 1e-6
    c.loss.kl_warmup_steps = 0
    c.loss.perceptual = "haar"  # SD: LPIPS; see the docstring
    c.loss.perceptual_weight = 1.0
    c.loss.gan_loss = "hinge"
    c.loss.disc_start = 50001
    c.loss.disc_weight = 0.5
    c.loss.disc_ndf = 64
    c.loss.disc_layers = 3

    c.train.batch_size = 128  # 4 per chip on a v5p-64 (32 chips)
    c.optim.lr = BASE_LR * c.train.batch_size
    c.optim.disc_lr = BASE_LR * c.train.batch_size
    c.optim.b1 = 0.5  # latent-diffusion's Adam betas for both optimisers
    c.optim.b2 = 0.9
    c.optim.warmup_steps = 0
    c.optim.grad_clip = 0.0

    c.train.num_steps = 200_000
    c.train.log_every = 100
    c.train.eval_every = 5_000
    c.train.checkpoint_every = 5_000

    # Data parallel over the pod; parameters and Adam state of the 84M-parameter AE sharded over
    # groups of 4 chips (FSDP) to leave room for 256 px activations.
    c.mesh = mesh_config(data=-1, fsdp=4)
    return c
