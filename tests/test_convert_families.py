"""The autoencoders users bring beyond SD's AutoencoderKL: DC-AE, taming's VQModel, TAESD, and
AutoencoderKL without mid-block attention and with per-channel latent statistics. Each is a
random-weight diffusers model saved with save_pretrained and loaded with
latentjax.load_autoencoder: encode/decode match diffusers (relative L2 <= 1e-4, float32) and the
latent normalisation is the one diffusers' pipelines apply. Each converts into a stage-1
inference checkpoint that stage 2 trains on, and any other class is a one-line error naming it.
"""

import json

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from test_convert_ae import rel_l2

import latentjax
from latentjax.commands import main
from latentjax.errors import LatentjaxError


def _perturb(model) -> None:
    # Random init leaves norms at identity, biases at zero and BatchNorm statistics at (0, 1):
    # move every tensor so the converter's handling of each is checked.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn_like(b))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand_like(b))


def dc(channels: int = 3, **kw):
    # Three levels (f4). Level 1 (16 ch, 1 head) attends over 8 x 8 = 64 > head_dim positions:
    # diffusers' linear branch; level 2 (32 ch, 2 heads) over 4 x 4 = 16 <= 16: its quadratic
    # branch. BatchNorm in the decoder's ResNet block and attention, two attention kernels.
    args = dict(
        in_channels=channels,
        latent_channels=8,
        attention_head_dim=16,
        encoder_block_types=("ResBlock", "EfficientViTBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(8, 16, 32),
        decoder_block_out_channels=(8, 16, 32),
        encoder_layers_per_block=(1, 1, 1),
        decoder_layers_per_block=(1, 1, 1),
        encoder_qkv_multiscales=((), (3,), (3, 5)),
        decoder_qkv_multiscales=((), (), (5,)),
        decoder_norm_types=("batch_norm", "rms_norm", "batch_norm"),
        decoder_act_fns=("relu", "gelu", "silu"),
        scaling_factor=0.41407,
    )
    return diffusers.AutoencoderDC(**{**args, **kw})


FAMILIES = {
    "dc": dc,
    # Level 0 without blocks (its resampling is the input/output conv), stride-2 convs,
    # nearest-then-conv upsampling, no residual shortcuts around the latent.
    "dc_strided": lambda channels=3: dc(
        channels,
        encoder_block_types="ResBlock",
        decoder_block_types="ResBlock",
        encoder_layers_per_block=(0, 1, 1),
        decoder_layers_per_block=(0, 1, 2),
        encoder_qkv_multiscales=((), (), ()),
        decoder_qkv_multiscales=((), (), ()),
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        downsample_block_type="Conv",
        upsample_block_type="interpolate",
        encoder_out_shortcut=False,
        decoder_in_shortcut=False,
        decoder_conv_act_fn="silu",
    ),
    "vq": lambda channels=3: diffusers.VQModel(
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        latent_channels=3,
        vq_embed_dim=4,
        num_vq_embeddings=32,
    ),
    "tiny": lambda channels=3: diffusers.AutoencoderTiny(
        in_channels=channels,
        out_channels=channels,
        encoder_block_out_channels=(8, 8, 8),
        decoder_block_out_channels=(8, 8, 8),
        num_encoder_blocks=(1, 2, 1),
        num_decoder_blocks=(1, 2, 1),
        latent_channels=4,
        scaling_factor=1.5305,  # TAESD3's config: SD3's factors
        shift_factor=0.0609,
    ),
    # Playground-v2.5-style: per-channel latents_mean/std, no mid-block attention.
    "kl_per_channel": lambda channels=3: diffusers.AutoencoderKL(
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        mid_block_add_attention=False,
        latents_mean=[0.1, -0.2, 0.3, 0.05],
        latents_std=[0.9, 1.1, 0.7, 1.3],
        scaling_factor=0.5,
    ),
}


def save(tmp_path, family: str, channels: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    model = FAMILIES[family](channels).eval()
    _perturb(model)
    path = tmp_path / family
    model.save_pretrained(path)
    return model, path


def nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)


def nhwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(0, 2, 3, 1).numpy()


def diffusers_latent(model, x: np.ndarray) -> np.ndarray:
    """What each class's encode returns: the posterior mean, or the deterministic latent (for
    VQModel: before quantisation)."""
    with torch.no_grad():
        out = model.encode(nchw(x))
    if hasattr(out, "latent_dist"):
        return nhwc(out.latent_dist.mean)
    return nhwc(out.latent if hasattr(out, "latent") else out.latents)


def diffusers_normalize(model, z: np.ndarray) -> np.ndarray:
    """The latent a diffusion model sees, as diffusers' pipelines compute it."""
    c = model.config
    if getattr(c, "latents_mean", None) is not None:  # SDXL pipelines
        mean, std = np.asarray(c.latents_mean), np.asarray(c.latents_std)
        return (z - mean) * c.scaling_factor / std
    return (z - (getattr(c, "shift_factor", None) or 0.0)) * c.scaling_factor


@pytest.mark.parametrize("family", list(FAMILIES))
def test_parity_with_diffusers(tmp_path, family):
    model, path = save(tmp_path, family)
    ae = latentjax.load_autoencoder(path)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    want = diffusers_latent(model, x)

    if family == "vq":
        # diffusers returns the latent before quantisation (ours: posterior.pre_quant); our
        # posterior mode (ae.encode) is the quantised latent, which diffusers' decode computes
        # first.
        posterior = jax.jit(lambda p, x: ae.model.apply(p, x, method=ae.model.encode))(ae.params, x)
        assert rel_l2(posterior.pre_quant, want) <= 1e-4
        with torch.no_grad():
            quantised = nhwc(model.quantize(nchw(want))[0])
        z = posterior.mode()
        assert rel_l2(z, quantised) <= 1e-4
    else:
        z = ae.encode(x)
        assert rel_l2(z, want) <= 1e-4
    np.testing.assert_allclose(
        ae.normalize(z), diffusers_normalize(model, np.asarray(z)), 1e-5, 1e-5
    )

    noise = np.random.default_rng(1).normal(size=want.shape).astype(np.float32)
    with torch.no_grad():
        decoded = nhwc(model.decode(nchw(noise)).sample)
    assert rel_l2(ae.decode(noise), decoded) <= 1e-4


def test_per_channel_statistics_in_stage2_and_sampling(tmp_path, capsys):
    """An autoencoder with latents_mean/std converts with one shift and scale per channel;
    stage 2's latents (encoder and latent cache) and the sampler's decode apply them channel by
    channel. The DiT sampled through it is converted from a model trained without label
    dropout, so guidance is refused and cfg 1 samples. Its weights are zero: it predicts zero
    velocity, the rectified-flow sample is the noise itself, and the images are
    decode(noise / scale + shift) in closed form."""
    from test_convert_dit import RefDiT

    from latentjax.config import load_config
    from latentjax.models.dit import sincos_2d
    from latentjax.parallel import mesh as mesh_lib
    from latentjax.run import Run
    from latentjax.train import autoencoder, dit

    model, path = save(tmp_path, "kl_per_channel", channels=1)
    ae_dir = tmp_path / "ae"
    argv = ["convert", "ae", str(path), "--out", str(ae_dir), "--config", "ae/digits.py"]
    assert main([*argv, "--config.data.image_size=8"]) == 0
    stats = Run.open(ae_dir).latent_stats()
    c = model.config
    np.testing.assert_allclose(stats["shift"], c.latents_mean, rtol=1e-6)
    np.testing.assert_allclose(stats["scale"], 0.5 / np.asarray(c.latents_std), rtol=1e-6)
    shift, scale = np.asarray(stats["shift"]), np.asarray(stats["scale"])
    assert np.ptp(scale) > 0.1  # a scalar normalisation would not match below

    # Stage 2: the frozen encoder's posterior sample z = mean + std * eps, and a latent-cache
    # batch (std 0: its mean), each normalised per channel.
    mesh = mesh_lib.make_mesh({"data": -1})
    ae_stage, ae_params = autoencoder.load_autoencoder(Run.open(ae_dir), mesh)
    config = load_config("dit/digits.py", ["model.hidden_size=16", "model.num_heads=2"])
    stage = dit.DiTStage(config, ae_stage.ae, (4, 4, 4))
    frozen, _ = dit.frozen_inputs(ae_params, stats, mesh, 4)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 1)).astype(np.float32)
    with torch.no_grad():
        posterior = model.encode(nchw(x)).latent_dist
        mean, std = nhwc(posterior.mean), nhwc(posterior.std)
    z = mean + std * np.asarray(jax.random.normal(jax.random.key(0), mean.shape))
    got = jax.jit(stage.encode)(frozen, x, jax.random.key(0))
    assert rel_l2(got, (z - shift) * scale) <= 1e-4
    batch = {"mean": mean, "std": np.zeros_like(mean)}
    got = jax.jit(stage.latents)(frozen, batch, jax.random.key(0))
    np.testing.assert_allclose(got, (mean - shift) * scale, rtol=1e-6, atol=1e-6)

    ref = RefDiT(
        size=4, p=2, cin=4, d=32, depth=1, heads=2, classes=3, learn_sigma=False, null=False
    )
    with torch.no_grad():
        for p in ref.parameters():
            p.zero_()
        ref.pos_embed.copy_(torch.from_numpy(sincos_2d(32, 2))[None])
    torch.save(ref.state_dict(), tmp_path / "dit.pt")
    dit_dir = tmp_path / "dit"
    argv = ["convert", "dit", str(tmp_path / "dit.pt"), "--out", str(dit_dir), "--ae", str(ae_dir)]
    argv += ["--num-heads", "2", "--num-classes", "3", "--config", "dit/digits.py"]
    assert main(argv) == 0  # digits' run config: rectified flow, Euler
    assert "no null class" in capsys.readouterr().out
    npz = tmp_path / "x.npz"
    sample = ["sample", "--workdir", str(dit_dir), "--num", "2", "--steps", "2", "--out", str(npz)]
    assert main([*sample, "--cfg", "2"]) == 2
    assert "cannot use classifier-free guidance" in _error_line(capsys)
    assert main([*sample, "--labels", "2", "--batch-size", "2", "--no-progress"]) == 0
    with np.load(npz) as f:
        images, labels = f["images"], f["labels"]
    assert labels.tolist() == [2, 2]  # the last class is a class, not a null label
    keys = [jax.random.fold_in(jax.random.key(0), i) for i in range(2)]
    noise = jnp.stack([jax.random.normal(jax.random.fold_in(k, 0), (4, 4, 4)) for k in keys])
    decode = jax.jit(lambda p, z: ae_stage.ae.apply(p, z, method=ae_stage.ae.decode))
    want = np.asarray(decode(ae_params, noise / scale + shift))
    want = np.round((np.clip(want, -1, 1) + 1) * 127.5).astype(np.uint8)
    assert np.abs(images.astype(int) - want).max() <= 1  # rounding of two compiled programs


@pytest.mark.parametrize("family", ["dc_strided", "vq", "tiny"])
def test_stage2_on_a_converted_family(tmp_path, family):
    """`latentjax convert ae` writes a stage-1 inference checkpoint of the family; restored as
    the frozen encoder of stage 2 (what `latentjax train --config.ae_workdir=OUT` does) it gives
    diffusers' pipeline latents, and the trainer's family-dependent pieces run on it: the
    latent statistics and the task. (The train step and loop around them do not depend on the
    family: tests/test_convert_workdir.py trains through the CLI on a converted autoencoder,
    and the suite's time budget does not allow a CLI run per family.)"""
    from latentjax.config import load_config
    from latentjax.factory import latent_shape
    from latentjax.parallel import mesh as mesh_lib
    from latentjax.run import Run
    from latentjax.train import autoencoder, dit

    model, path = save(tmp_path, family, channels=1)
    ae_dir = tmp_path / "ae"
    argv = ["convert", "ae", str(path), "--out", str(ae_dir), "--config", "ae/digits.py"]
    assert main([*argv, "--config.data.image_size=8"]) == 0

    mesh = mesh_lib.make_mesh({"data": -1})
    ae_run = Run.open(ae_dir, stage="ae")
    ae_stage, ae_params = autoencoder.load_autoencoder(ae_run, mesh)
    overrides = ["model.hidden_size=16", "model.depth=1", "model.num_heads=2"]
    config = load_config("dit/digits.py", [*overrides, "data.image_size=8"])
    stage = dit.DiTStage(config, ae_stage.ae, latent_shape(ae_run.config))
    frozen, _ = dit.frozen_inputs(ae_params, ae_run.latent_stats(), mesh)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 1)).astype(np.float32)
    got = jax.jit(stage.encode)(frozen, x, jax.random.key(0))
    want = diffusers_latent(model, x)
    if family == "vq":  # the pipeline's decode quantises: stage 2 models quantised latents
        with torch.no_grad():
            want = nhwc(model.quantize(nchw(want))[0])
    assert rel_l2(got, diffusers_normalize(model, want)) <= 1e-4

    stats = dit.measure_latent_stats(stage.ae, ae_params, [{"image": x}], mesh)
    assert np.isfinite(stats["shift"]) and stats["scale"] > 0
    assert np.asarray(dit.make_task(stage, ae_params, stats, mesh).frozen["latent_scale"]) > 0


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("latentjax: error: "), err
    return err[0]


def test_unsupported_classes_are_one_line_errors(tmp_path, capsys):
    torch.manual_seed(0)
    asym = diffusers.AsymmetricAutoencoderKL(
        down_block_out_channels=(8,),
        up_block_out_channels=(8,),
        norm_num_groups=4,
        layers_per_down_block=1,
        layers_per_up_block=1,
    )
    asym.save_pretrained(tmp_path / "asym")
    wan = tmp_path / "wan"
    wan.mkdir()
    (wan / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLWan"}))
    for path, cls in ((tmp_path / "asym", "AsymmetricAutoencoderKL"), (wan, "AutoencoderKLWan")):
        with pytest.raises(LatentjaxError, match=f"diffusers class '{cls}' is not supported") as e:
            latentjax.load_autoencoder(path)
        assert "\n" not in str(e.value)
        capsys.readouterr()
        assert main(["convert", "ae", str(path), "--out", str(tmp_path / "out")]) == 2
        assert f"'{cls}' is not supported" in _error_line(capsys)
    assert "load_wan_autoencoder" in str(e.value)


def test_frozen_only_families_are_not_trained(tmp_path, capsys):
    argv = ["train", "--config", "ae/digits.py", "--workdir", str(tmp_path / "w")]
    assert main([*argv, "--config.model.family=dc"]) == 2
    assert "not trained by latentjax" in _error_line(capsys)
