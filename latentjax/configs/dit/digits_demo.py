"""The demo's DiT: ``dit/digits.py`` at four times its learning rate, trained twice as long
(3,000 steps), sampled unguided.

    latentjax train --config dit/digits_demo.py --workdir runs/digits/dit \\
        --config.ae_workdir=runs/digits/ae

Measured for issue 19 (README, "Stage 2's learning rate"): on one autoencoder, 1,500 steps at
lr 5e-4 / 1e-3 / 2e-3 gave samples at 2.62x / 2.46x / 2.38x the real-vs-real Fréchet distance
unguided, recognised 93.5% / 97.1% / 97.5%, with 0.86 / 0.82 / 0.82 of real digits' within-class
variance. At 2e-3 guidance is not needed for recognition (guidance 1.25 gives 99.5%, at 0.69 of
the variance), so the demo samples without it. On the demo's 3,000-step autoencoder
(``ae/digits_demo.py``), 1,500 steps gave 2.03x and 3,000 steps 1.81x (recognised 97.6% and
98.1%, variance 0.91 and 0.90). (Those distances are in the digits feature space v1; in v2,
on 3,000 samples, the demo's DiT reads 1.85x, and a cosine learning-rate decay, no label
dropout, 4,500 steps, twice the width or a time shift of 0.5 read 1.81x to 1.97x: README,
"Stage 2's gap in v2".)
``dit/digits.py`` keeps 5e-4: it is the recipe the modelability probes (``latentjax probe``)
were measured with.
"""

import ml_collections

from latentjax.configs.dit import digits


def get_config() -> ml_collections.ConfigDict:
    c = digits.get_config()
    c.optim.lr = 2e-3
    c.sample.cfg_scale = 1.0
    c.train.num_steps = 3000
    return c
