"""Stage 2, every key: DiT-XL/2 on 256 px ImageNet latents (Peebles & Xie 2023).

This file is the one place where a stage-2 default lives. Experiment configs start from it
(``configs/dit/dit_xl2_imagenet256.py`` for a pod, ``configs/dit/digits.py`` for a CPU) and change
what differs; a run directory saved before a key existed is completed from it
(``latentjax.config.complete``). ``latentjax config show dit/base.py`` prints every key with its
comment.

The paper's recipe (sec. 4 and 5): XL/2 (hidden 1152, depth 28, 16 heads, patch 2) on the
32 x 32 x 4 latents of SD's f8 autoencoder; AdamW, constant lr 1e-4, no weight decay, no warm-up,
global batch 256, EMA decay 0.9999, 400K steps; the DDPM linear beta schedule with T = 1000, eps
prediction, learned sigma (the output's second half; the loss here trains the eps half only, as
the simple objective), label dropout 0.1 for classifier-free guidance; 250 sampling steps.
"""

import ml_collections

from latentjax.configs.common import mesh_config, train_config
from latentjax.models.dit import dit_kwargs


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.stage = "dit"  # which trainer runs: the diffusion transformer (stage 2)
    c.seed = 0  # parameters, data order, noise and label dropout
    # The stage-1 run (or `latentjax convert ae` directory) whose encoder stays frozen.
    c.ae_workdir = ""
    # The id of that run (its run.json), recorded when training starts (with ae_workdir made
    # absolute) and checked wherever this run is used: set by latentjax, not by hand.
    c.ae_run_id = ""
    # The step of that run's weights when training started (its latest checkpoint's, or its
    # export's), recorded and checked likewise: trained on since, it is another autoencoder and
    # this run's latents no longer decode by it. -1: not recorded (runs written before it).
    c.ae_step = -1

    c.data = ml_collections.ConfigDict()
    c.data.name = "imagenet2012"  # a tfds dataset prepared as array_record in data_dir
    c.data.data_dir = ""  # "" -> $LATENTJAX_DATA_DIR or ~/.cache/latentjax/tfds
    c.data.image_size = 256  # must match the autoencoder's
    c.data.train_split = "train"  # the split trained on
    c.data.eval_split = "validation"  # the held-out split
    c.data.worker_count = 8  # Grain worker processes per host; 0 reads in the main process
    c.data.cache = False  # decode the split once and serve it from host memory (small data)
    c.data.crop = "none"  # "none" | "center" | "random": a square crop before the resize
    c.data.flip = False  # random horizontal flips
    # A latent cache written by `latentjax encode` (its --out DIR, or DIR/NAME); "" encodes
    # images on the fly. With data.flip, its flipped copy is used too.
    c.data.latent_cache = ""
    c.data.latent_stats_batches = 32  # batches used to measure the latent shift/scale
    # Frames per clip of a video dataset (stage 2 on a video autoencoder's latents): recorded
    # from the dataset when the run starts; 0 for images.
    c.data.frames = 0

    c.model = ml_collections.ConfigDict()
    xl2 = dit_kwargs("XL/2")  # the DiT paper's size table
    c.model.hidden_size = xl2["hidden_size"]  # transformer width
    c.model.depth = xl2["depth"]  # transformer blocks
    c.model.num_heads = xl2["num_heads"]  # attention heads
    c.model.patch_size = xl2["patch_size"]  # latent pixels per token side
    c.model.mlp_ratio = 4.0  # MLP width over the transformer width
    c.model.num_classes = 1000  # 0: unconditional; the label table has one more (null) row
    # The null row (the unconditional model of classifier-free guidance, learnt by label
    # dropout). False: a converted DiT trained without label dropout, which cannot be guided.
    c.model.null_class = True
    c.model.learn_sigma = True  # a second output half for the variance (DiT's)
    c.model.timestep_freq_shift = 0.0  # 1.0 for diffusers' DiT (its downscale_freq_shift)
    c.model.mlp_norm_eps = 1e-6  # LayerNorm epsilon (diffusers' DiT: its norm_eps)
    # On the latents of a video autoencoder (model.family "video" in ae_workdir) the network is
    # the video DiT (models/video_dit.py): tokens are temporal_patch_size x patch_size x
    # patch_size patches; attention "full" (over the whole clip) or "factorised" (blocks
    # alternate spatial and temporal attention). Image latents ignore both.
    c.model.temporal_patch_size = 1  # latent frames per token (video latents only)
    c.model.attention = "full"  # "full" | "factorised" (video latents only)

    c.diffusion = ml_collections.ConfigDict()
    # "linear" (rectified flow: x_t = (1 - t) x0 + t eps) | "cosine" | "ddpm_linear" |
    # "ddpm_scaled_linear" | "ddpm_cosine" (latentjax/diffusion/paths.py)
    c.diffusion.path = "ddpm_linear"  # betas linear in [1e-4, 0.02], T = 1000 (Ho et al. 2020)
    c.diffusion.prediction = "eps"  # "eps" | "x0" | "v" | "velocity"
    c.diffusion.t_sampling = "uniform"  # "uniform" | "logit_normal"
    # SD3's time shift s (latentjax/diffusion/paths.py): training times and the sampler's grid
    # become s t / (1 + (s - 1) t), more of both at high noise for s > 1; 1 = off. SD3 takes
    # s = sqrt(n / m) for a latent of n values over the m its schedule was tuned on.
    c.diffusion.time_shift = 1.0
    # none | min_snr | snr | snr_plus_one | truncated_snr (latentjax/losses/diffusion.py)
    c.diffusion.loss_weighting = "none"
    c.diffusion.min_snr_gamma = 5.0  # gamma of min_snr (Hang et al. 2023)
    c.diffusion.label_drop = 0.1  # classifier-free guidance training

    # REPA (Yu et al. 2025): an MLP projector on the hidden state after the first `depth`
    # blocks, pulled towards a frozen encoder's patch features of the clean image by
    # weight * (minus their cosine similarity). Needs images: not with data.latent_cache.
    c.repa = ml_collections.ConfigDict()
    c.repa.weight = 0.0  # lambda of the alignment loss; 0 = off (REPA's: 0.5)
    c.repa.depth = 8  # blocks before the aligned hidden state (REPA's SiT-XL/2: 8)
    c.repa.projector_dim = 2048  # the projector MLP's hidden width (REPA's)
    c.repa.encoder = "dinov2"  # the frozen encoder: "dinov2" | "vgg16" (LPIPS's VGG16)
    # Its weights: dinov2: a Hugging Face (transformers) or timm DINOv2 directory/safetensors
    # file; vgg16: a `latentjax convert lpips` directory.
    c.repa.encoder_weights = ""
    c.repa.encoder_heads = 0  # dinov2: attention heads when the weights do not say (timm files)
    c.repa.encoder_size = 224  # the encoder's input side in px (REPA resizes 256 -> 224)
    c.repa.vgg_tap = 3  # vgg16: which LPIPS ReLU tap, 0 (relu1_2) .. 4 (relu5_3)
    # The encoder's feature width: 0 reads it from the weights; recorded when training starts,
    # so sampling and export of the run never need the encoder.
    c.repa.feature_dim = 0

    c.sample = ml_collections.ConfigDict()
    # ddim | ddpm | dpmpp_2m | euler | heun | euler_maruyama (latentjax/diffusion/samplers.py)
    c.sample.sampler = "euler"
    c.sample.num_steps = 250  # sampler steps
    c.sample.eta = 0.0  # DDIM only
    c.sample.guidance_interval = (0.0, 1.0)  # guide for path times t in [lo, hi]
    # Guide only the first N channels of the output, the rest conditional; 0 = all (the
    # standard form). DiT's released sampler guides 3 of SD's 4 latent channels "for exact
    # reproducibility" (models.py forward_with_cfg); converted original DiT checkpoints set 3.
    c.sample.guidance_channels = 0
    c.sample.cfg_scale = 4.0  # the paper's sample figures; its FID-50K table uses 1.5
    c.sample.batch_size = 64  # images per jitted sampling call (global)

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 1e-4  # AdamW peak learning rate
    c.optim.weight_decay = 0.0  # AdamW
    c.optim.warmup_steps = 0  # linear learning-rate warm-up
    c.optim.schedule = "constant"  # after the warm-up: "constant" | "cosine" (to 0 at the end)
    c.optim.grad_clip = 0.0  # global-norm clipping; 0 = off
    c.optim.ema_decay = 0.9999  # EMA of the weights, used for sampling

    c.train = train_config(
        batch_size=256,
        num_steps=400_000,
        log_every=100,
        eval_every=50_000,
        checkpoint_every=50_000,
        keep_checkpoints=3,
    )
    c.mesh = mesh_config()
    return c
