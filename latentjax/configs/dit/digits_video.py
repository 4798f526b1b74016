"""Class-conditional latent video DiT on the causal video autoencoder's latents of the moving
digits (rectified flow): ``dit/digits.py``'s recipe over clips.

    latentjax train --config dit/digits_video.py --workdir runs/digits/video_dit \
        --config.ae_workdir=runs/digits/video

Builds on the stage-1 run in ``ae_workdir`` (``configs/ae/digits_video.py``: a 9-frame clip of
16 x 16 frames becomes 3 latent frames of 4 x 4 x 6), whose encoder stays frozen and encodes the
clips in the step. With patches of 1 x 1 x 1 a clip is 48 tokens, so full spatio-temporal
attention costs little. ``latentjax demo --video`` trains both stages and judges the clips.
"""

import ml_collections

from latentjax.configs.dit import digits


def get_config() -> ml_collections.ConfigDict:
    c = digits.get_config()
    c.ae_workdir = "runs/digits/video"
    c.data.name = "latentjax_moving_digits"
    c.model.attention = "full"
    c.train.batch_size = 32  # clips: each is encoded by the frozen causal encoder in the step
    c.train.num_steps = 1500
    c.train.eval_images = 10
    c.sample.batch_size = 50
    return c
