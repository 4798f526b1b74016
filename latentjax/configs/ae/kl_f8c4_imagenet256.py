"""Stable Diffusion's KL-f8 autoencoder recipe on ImageNet at 256 px, for a TPU pod.

    latentjax plan --config ae/kl_f8c4_imagenet256.py --topology v5p-64
    launch/tpu_pod.sh --name ae --accelerator-type v5p-64 -- \
        train --config ae/kl_f8c4_imagenet256.py --workdir gs://BUCKET/runs/ae

The network and loss are the base recipe (``configs/ae/base.py``: latent-diffusion's kl-f8);
here the data, the global batch and the mesh of a pod. The learning rate is latent-diffusion's
base_learning_rate 4.5e-6 scaled by the global batch (its main.py multiplies it by GPUs x batch x
accumulation).

Data: tfds ``imagenet2012``, prepared beforehand in ``data.data_dir`` as array_record (it needs
a manual download; nothing is fetched). Without it, training stops with a one-line error.
"""

import ml_collections

from latentjax.configs.ae import base
from latentjax.configs.common import mesh_config


def get_config() -> ml_collections.ConfigDict:
    c = base.get_config()
    c.train.batch_size = 128  # 4 per chip on a v5p-64 (32 chips)
    c.optim.lr = base.BASE_LR * c.train.batch_size
    c.optim.disc_lr = base.BASE_LR * c.train.batch_size
    c.train.num_steps = 200_000
    c.train.eval_images = 8  # held-out images, reconstructions, latent PCA in TensorBoard

    # Data parallel over the pod; parameters and Adam state of the 84M-parameter AE sharded over
    # groups of 4 chips (FSDP) to leave room for 256 px activations.
    c.mesh = mesh_config(data=-1, fsdp=4)
    return c
