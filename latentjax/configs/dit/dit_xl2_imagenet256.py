"""DiT-XL/2 on ImageNet 256 px latents (Peebles & Xie 2023), for a TPU pod.

    latentjax plan --config dit/dit_xl2_imagenet256.py --topology v5p-64 \
        --ae-config ae/kl_f8c4_imagenet256.py
    launch/tpu_pod.sh --name dit --accelerator-type v5p-64 -- \
        train --config dit/dit_xl2_imagenet256.py --workdir gs://BUCKET/runs/dit \
        --config.ae_workdir=gs://BUCKET/runs/ae

The paper's recipe is the base config (``configs/dit/base.py``); here the stage-1 run and the
mesh of a pod. Data: tfds ``imagenet2012`` prepared beforehand (array_record) in
``data.data_dir``; the frozen stage-1 encoder comes from ``ae_workdir``
(``configs/ae/kl_f8c4_imagenet256.py``).
"""

import ml_collections

from latentjax.configs.common import mesh_config
from latentjax.configs.dit import base


def get_config() -> ml_collections.ConfigDict:
    c = base.get_config()
    c.ae_workdir = "runs/imagenet256/ae"
    # 675M parameters: f32 weights + EMA + Adam are ~11 GB, sharded over groups of 8 chips (FSDP);
    # the rest of the slice is data parallel. 16 heads allow tensor=2/4/8 for larger variants.
    c.mesh = mesh_config(data=-1, fsdp=8)
    # A grid of 16 samples (fixed noise, classes 0-15) in TensorBoard at each evaluation.
    c.train.eval_images = 16
    return c
