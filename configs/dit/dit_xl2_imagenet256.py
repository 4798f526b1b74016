"""DiT-XL/2 on ImageNet 256 px latents (Peebles & Xie 2023, "Scalable Diffusion Models with
Transformers"), for a TPU pod.

    latentjax plan --config configs/dit/dit_xl2_imagenet256.py --topology v5p-64 \
        --ae-config configs/ae/kl_f8c4_imagenet256.py
    launch/tpu_pod.sh --name dit --accelerator-type v5p-64 -- \
        train --config configs/dit/dit_xl2_imagenet256.py --workdir gs://BUCKET/runs/dit \
        --config.ae_workdir=gs://BUCKET/runs/ae

The paper's recipe (sec. 4 and 5): XL/2 (hidden 1152, depth 28, 16 heads, patch 2) on the
32 x 32 x 4 latents of SD's f8 autoencoder; AdamW, constant lr 1e-4, no weight decay, no warm-up,
global batch 256, EMA decay 0.9999, 400K steps (the 7M-step model is the same run continued);
the DDPM linear beta schedule with T = 1000, eps prediction, learned sigma (the output's second
half; the loss here trains the eps half only, as the simple objective), label dropout 0.1 for
classifier-free guidance; sampling with 250 steps.

Data: tfds ``imagenet2012`` prepared beforehand (array_record) in ``data.data_dir``; the frozen
stage-1 encoder comes from ``ae_workdir`` (configs/ae/kl_f8c4_imagenet256.py).
"""

import ml_collections

from configs.common import mesh_config
from configs.dit import digits


def get_config() -> ml_collections.ConfigDict:
    c = digits.get_config()
    c.ae_workdir = "runs/imagenet256/ae"

    c.data.name = "imagenet2012"
    c.data.data_dir = ""
    c.data.image_size = 256  # -> 32 x 32 x 4 latents through the f8 autoencoder
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    c.data.worker_count = 8
    c.data.cache = False  # decoded 256 px images do not fit in host memory
    c.data.latent_stats_batches = 32

    c.model.patch_size = 2  # XL/2: 16 x 16 = 256 tokens
    c.model.hidden_size = 1152
    c.model.depth = 28
    c.model.num_heads = 16
    c.model.mlp_ratio = 4.0
    c.model.num_classes = 1000
    c.model.learn_sigma = True

    c.diffusion.path = "ddpm_linear"  # betas linear in [1e-4, 0.02], T = 1000 (Ho et al. 2020)
    c.diffusion.prediction = "eps"
    c.diffusion.t_sampling = "uniform"
    c.diffusion.label_drop = 0.1

    c.sample.num_steps = 250
    c.sample.cfg_scale = 4.0  # the paper's sample figures; its FID-50K table uses 1.5
    c.sample.batch_size = 64

    c.optim.lr = 1e-4
    c.optim.weight_decay = 0.0
    c.optim.warmup_steps = 0
    c.optim.grad_clip = 0.0
    c.optim.ema_decay = 0.9999

    c.train.batch_size = 256
    c.train.num_steps = 400_000
    c.train.log_every = 100
    c.train.eval_every = 50_000
    c.train.checkpoint_every = 50_000
    c.train.keep_checkpoints = 3

    # 675M parameters: f32 weights + EMA + Adam are ~11 GB, sharded over groups of 8 chips (FSDP);
    # the rest of the slice is data parallel. 16 heads allow tensor=2/4/8 for larger variants.
    c.mesh = mesh_config(data=-1, fsdp=8)
    return c
