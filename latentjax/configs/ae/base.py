"""Stage 1, every key: Stable Diffusion's KL-f8 autoencoder recipe at 256 px.

This file is the one place where a stage-1 default lives. Experiment configs start from it
(``configs/ae/kl_f8c4_imagenet256.py`` for a pod, ``configs/ae/digits.py`` for a CPU) and
change what differs; a run directory saved before a key existed is completed from it
(``latentjax.config.complete``). ``latentjax config show ae/base.py`` prints every key with
its comment.

The network is latent-diffusion's ``models/first_stage_models/kl-f8/config.yaml`` (CompVis):
ch 128, ch_mult (1, 2, 4, 4), 2 res blocks, attention in the mid block only, z 4 (mean and
log-variance), embed_dim 4 -- 83,653,863 parameters, laid out so Stable Diffusion's weights map
one to one. The loss is its ``LPIPSWithDiscriminator`` (kl_weight 1e-6, disc_start 50001,
disc_weight 0.5, a 3-layer PatchGAN, hinge) except that the perceptual term defaults to the
weight-free Haar wavelet one: LPIPS needs VGG16 weights the user supplies
(``loss.perceptual="lpips"``, ``loss.lpips_weights``).
"""

import ml_collections

from latentjax.configs.common import mesh_config, train_config

BASE_LR = 4.5e-6  # latent-diffusion kl-f8: per example of the global batch


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.stage = "ae"  # which trainer runs: the autoencoder (stage 1)
    c.seed = 0  # parameters, data order and augmentation
    # A stage-1 run or `latentjax convert ae` directory whose autoencoder starts this run (a
    # fine-tune, e.g. with loss.eq_prob): its model section replaces this one's, and its
    # parameters the fresh ones when the run starts (not on resume). "" = from scratch.
    c.init_from = ""

    c.data = ml_collections.ConfigDict()
    c.data.name = "imagenet2012"  # a tfds dataset prepared as array_record in data_dir
    c.data.data_dir = ""  # "" -> $LATENTJAX_DATA_DIR or ~/.cache/latentjax/tfds
    c.data.image_size = 256  # square side after crop and resize
    c.data.train_split = "train"  # the split trained on
    c.data.eval_split = "validation"  # held-out split: eval steps and `latentjax eval`
    c.data.worker_count = 8  # Grain worker processes per host; 0 reads in the main process
    c.data.cache = False  # decode the split once and serve it from host memory (small data)
    c.data.crop = "none"  # "none" | "center" | "random": a square crop before the resize
    c.data.flip = False  # random horizontal flips

    c.model = ml_collections.ConfigDict()
    # The network: "kl" is this file's encoder/decoder (Stable Diffusion's, with any bottleneck;
    # diffusers' AutoencoderKL and VQModel convert to it); "dc" (DC-AE, diffusers'
    # AutoencoderDC) and "tiny" (TAESD, AutoencoderTiny) load converted weights as a frozen
    # stage 1 (`latentjax convert ae`) and are not trained here. Only "kl" reads the keys from
    # `ch` to `mid_attention`; "dc" and "tiny" read their own group below, with `in_channels`
    # and `z_channels` (the latent's channels). "video" is Wan 2.1's causal 3-D autoencoder
    # (models/video_autoencoder.py) on clips [T, H, W, C] of a video dataset: it reads `ch`,
    # `ch_mult`, `num_res_blocks`, `z_channels`, `in_channels` and `temporal_downsample`, with
    # the KL bottleneck, and trains with the recipe below applied per frame.
    c.model.family = "kl"
    c.model.ch = 128  # width of the first level
    c.model.ch_mult = (1, 2, 4, 4)  # width multiple per level; len - 1 downsamplings: f = 8
    c.model.num_res_blocks = 2  # per level
    c.model.z_channels = 4  # encoder output channels (before quant_conv)
    c.model.in_channels = 3  # image channels
    c.model.attn_resolutions = ()  # extra attention at these sides; the mid block always has it
    c.model.num_groups = 32  # GroupNorm groups
    c.model.embed_dim = 4  # 1x1 quant convs around the bottleneck (SD); 0 = none
    c.model.bottleneck = "kl"  # "kl" | "ae" | "vq" | "fsq"
    c.model.codebook_size = 256  # vq: number of codes
    c.model.vq_estimator = "ste"  # vq: "ste" (straight-through) | "rotation" (rotation trick)
    c.model.fsq_levels = ()  # fsq: one level count per latent channel
    c.model.mid_attention = True  # attention in the middle blocks (SD's; some VAEs drop it)
    # family "video": one entry per level but the last; True: that level halves time as well
    # as space (Wan 2.1: (False, True, True), x4), so T = 1 + 4k frames give 1 + k latent frames.
    c.model.temporal_downsample = ()
    # family "video": recompute each residual block in the backward pass (jax.checkpoint), keeping
    # only its input for the gradient: less activation memory for long, large clips, at about
    # one more forward pass of the blocks.
    c.model.remat = False
    # family "video": unroll the scan over a clip's chunks (one copy of the chunk step per chunk;
    # the same numbers). On XLA's CPU backend its gradient is then about 14x faster (the gradient
    # of convolutions in a loop body is slow there: benchmarks/video_scan.py), at a compile that
    # grows with the clip's chunks. Off keeps one program of one chunk's size for any length.
    c.model.unroll_chunks = False
    # family "dc": the deep compression autoencoder's levels (Chen et al. 2024). Defaults:
    # diffusers' AutoencoderDC defaults, an f32 network; one entry per level in each tuple.
    c.model.dc = ml_collections.ConfigDict()
    c.model.dc.head_dim = 32  # EfficientViT linear attention: channels per head
    c.model.dc.encoder_block_types = ("ResBlock",) * 6  # or "EfficientViTBlock"
    c.model.dc.decoder_block_types = ("ResBlock",) * 6  # per decoder level, as the encoder's
    c.model.dc.encoder_channels = (128, 256, 512, 512, 1024, 1024)  # width of each level
    c.model.dc.decoder_channels = (128, 256, 512, 512, 1024, 1024)  # listed from the output up
    c.model.dc.encoder_layers = (2, 2, 2, 3, 3, 3)  # blocks per level (level 0 may have 0)
    c.model.dc.decoder_layers = (3, 3, 3, 3, 3, 3)  # blocks per decoder level
    c.model.dc.encoder_qkv_multiscales = ((), (), (), (5,), (5,), (5,))  # attention kernels
    c.model.dc.decoder_qkv_multiscales = ((), (), (), (5,), (5,), (5,))  # decoder's kernels
    c.model.dc.decoder_norm_types = ("rms_norm",) * 6  # or "batch_norm" (inference statistics)
    c.model.dc.decoder_acts = ("silu",) * 6  # ResNet blocks' activation
    c.model.dc.pixel_unshuffle = True  # downsample by space-to-channel; False: stride-2 convs
    c.model.dc.interpolate = False  # upsample by nearest + conv; False: channel-to-space
    c.model.dc.encoder_out_shortcut = True  # residual autoencoding around the encoder's head
    c.model.dc.decoder_in_shortcut = True  # ... and the decoder's input conv
    c.model.dc.decoder_conv_act = "relu"  # before the decoder's output conv
    # family "tiny": TAESD (madebyollin/taesd); defaults: TAESD's own.
    c.model.tiny = ml_collections.ConfigDict()
    c.model.tiny.encoder_channels = (64, 64, 64, 64)  # per stage; each after the first halves
    c.model.tiny.decoder_channels = (64, 64, 64, 64)  # per stage, from the latent out
    c.model.tiny.encoder_blocks = (1, 3, 3, 3)  # residual blocks per stage
    c.model.tiny.decoder_blocks = (3, 3, 3, 1)  # residual blocks per decoder stage
    c.model.tiny.act = "relu"  # blocks' activation ("relu" in TAESD)

    c.loss = ml_collections.ConfigDict()
    c.loss.reconstruction = "l1"  # "l1" | "l2"
    c.loss.kl_weight = 1e-6  # kl: beta
    c.loss.kl_warmup_steps = 0  # kl: beta ramps linearly from 0 over these steps
    c.loss.kl_free_bits = 0.0  # kl: nats per latent element and channel; 0 = off
    c.loss.codebook_weight = 1.0  # vq: weight of codebook + beta * commitment
    c.loss.commitment_weight = 0.25  # vq: beta
    c.loss.vq_restart_threshold = 1.0  # vq: restart codes used < this often per step; 0 = off
    c.loss.vq_usage_decay = 0.99  # vq: decay of the per-code usage average
    c.loss.perceptual = "haar"  # "none" | "haar" | "fft" | "lpips"
    c.loss.perceptual_weight = 1.0  # times the perceptual term
    # lpips: a `latentjax convert lpips` directory, or "VGG16.pth,HEADS.pth" (torchvision's VGG16
    # state dict and the lpips package's weights/v0.1/vgg.pth); read when training starts.
    c.loss.lpips_weights = ""
    c.loss.gan_loss = "hinge"  # "hinge" | "non_saturating"
    c.loss.disc_start = 50001  # the PatchGAN switches on at this step
    c.loss.disc_weight = 0.5  # times latent-diffusion's adaptive weight
    c.loss.disc_ndf = 64  # PatchGAN width
    c.loss.disc_layers = 3  # PatchGAN depth
    c.loss.disc_norm = "batch"  # "group" | "batch" | "none"
    # Video autoencoders: 0 judges every frame with the 2-D PatchGAN; an odd k > 0 judges whole
    # clips with the 3-D PatchGAN, kernels of k frames (a patch's motion, not only its look).
    c.loss.disc_temporal_kernel = 0
    c.loss.r1_weight = 0.0  # gamma of R1 (Mescheder et al. 2018); 0 = off
    c.loss.lecam_weight = 0.0  # LeCam (Tseng et al. 2021); 0 = off
    c.loss.lecam_decay = 0.99  # decay of LeCam's logit averages
    # Equivariance regularisation (EQ-VAE, Kouzelis et al. 2025): on a batch drawn with this
    # probability the latent is down-scaled (bilinear) by a factor from eq_scales and rotated by
    # a number of quarter turns from eq_rotations, decoded, and judged by every loss above
    # against the image transformed alike. 0 = off (model.family "kl" only).
    c.loss.eq_prob = 0.0
    # eq: latent down-scale factors in (0, 1], one drawn per EQ batch; latent side x factor must
    # be whole. Each factor compiles its own step (the shapes differ).
    c.loss.eq_scales = (1.0, 0.75, 0.5)
    c.loss.eq_rotations = (0, 1, 2, 3)  # eq: quarter turns (x 90 degrees), one drawn per batch
    # VA-VAE's VF loss (Yao et al. 2025): a 1x1 projection of the latent aligned with a frozen
    # vision network's features of the image (margin cosine per position + margin distance
    # matrix), times vf_weight x an adaptive weight measured at the encoder's last layer.
    c.loss.vf_weight = 0.0  # 0 = off (VA-VAE's: 0.1)
    c.loss.vf_cos_margin = 0.5  # vf: m1 of the marginal cosine similarity loss
    c.loss.vf_distmat_margin = 0.25  # vf: m2 of the marginal distance-matrix loss
    c.loss.vf_encoder = "dinov2"  # vf: the frozen network, "dinov2" | "vgg16" (LPIPS's VGG16)
    # vf: its weights: dinov2: a transformers or timm DINOv2 checkpoint; vgg16: a
    # `latentjax convert lpips` directory.
    c.loss.vf_encoder_weights = ""
    c.loss.vf_encoder_heads = 0  # vf, dinov2: attention heads when the file does not say (timm)
    # vf: the network's input side in px; 0: one 14 px DINOv2 patch per latent position
    # (latent side x 14), or the image size for vgg16. Features are resampled to the latent grid.
    c.loss.vf_encoder_size = 0
    c.loss.vf_vgg_tap = 3  # vf, vgg16: which LPIPS ReLU tap, 0 (relu1_2) .. 4 (relu5_3)
    # vf: the network's feature width: 0 reads it from the weights; recorded when training
    # starts, so evaluating, encoding and exporting the run never need the network.
    c.loss.vf_feature_dim = 0

    c.optim = ml_collections.ConfigDict()
    # Adam's learning rate for the autoencoder (the recipe: 4.5e-6 per example, batch 12).
    c.optim.lr = BASE_LR * 12
    c.optim.disc_lr = BASE_LR * 12  # Adam's learning rate for the PatchGAN
    c.optim.b1 = 0.5  # Adam's beta1 for both optimisers (latent-diffusion's)
    c.optim.b2 = 0.9  # Adam's beta2 for both optimisers
    c.optim.warmup_steps = 0  # linear learning-rate warm-up
    c.optim.grad_clip = 0.0  # global-norm clipping; 0 = off

    c.train = train_config(
        batch_size=12,
        num_steps=100_000,
        log_every=100,
        eval_every=5_000,
        checkpoint_every=5_000,
        best_metric="test_psnr",
        best_mode="max",
    )
    c.mesh = mesh_config()
    return c
