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

from configs.ae import kl_f8c4_256
from configs.common import mesh_config

BASE_LR = 4.5e-6  # latent-diffusion kl-f8: per example of the global batch


def get_config() -> ml_collections.ConfigDict:
    c = kl_f8c4_256.get_config()  # the network and loss of SD's autoencoder; here data and scale
    c.data.name = "imagenet2012"
    c.data.data_dir = ""
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.worker_count = 8  # Grain workers per host

    c.train.batch_size = 128  # 4 per chip on a v5p-64 (32 chips)
    c.optim.lr = BASE_LR * c.train.batch_size
    c.optim.disc_lr = BASE_LR * c.train.batch_size
    c.optim.b1 = 0.5  # latent-diffusion's Adam betas for both optimisers
    c.optim.b2 = 0.9
    c.optim.grad_clip = 0.0

    c.train.num_steps = 200_000

    # Data parallel over the pod; parameters and Adam state of the 84M-parameter AE sharded over
    # groups of 4 chips (FSDP) to leave room for 256 px activations.
    c.mesh = mesh_config(data=-1, fsdp=4)
    return c
