"""The stage-1 models: KL autoencoder, its Gaussian bottleneck, the PatchGAN discriminator.

Shapes are checked with ``jax.eval_shape`` (no compilation); numerics on tiny widths.
"""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from latentjax.models.autoencoder import AutoencoderKL, Decoder, Encoder
from latentjax.models.bottleneck import DiagonalGaussian
from latentjax.models.discriminator import PatchDiscriminator
from latentjax.parallel.axes import LOGICAL_AXES


def key(seed: int) -> jax.Array:
    # The "rbg" PRNG compiles in a fraction of the time of the default (partitionable threefry)
    # on CPU, which dominated this file's run time; the models work with any key type.
    return jax.random.key(seed, impl="rbg")


RNGS = {"params": key(0), "sample": key(1)}


def tiny_ae(ch_mult=(1, 2), in_channels=3, attn=(), embed_dim=None, ch=32, groups=8):
    return AutoencoderKL(
        ch=ch,
        ch_mult=ch_mult,
        num_res_blocks=1,
        z_channels=4,
        in_channels=in_channels,
        attn_resolutions=attn,
        num_groups=groups,
        embed_dim=embed_dim,
    )


def check_logical_specs(boxed_variables):
    """Every parameter leaf has one logical name (or None) per dimension, from LOGICAL_AXES."""
    specs = nn.get_partition_spec(boxed_variables)
    shapes = nn.unbox(boxed_variables)
    spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
    shape_leaves = jax.tree_util.tree_leaves_with_path(shapes)
    assert len(spec_leaves) == len(shape_leaves) > 0
    for spec, (path, leaf) in zip(spec_leaves, shape_leaves, strict=True):
        where = jax.tree_util.keystr(path)
        assert isinstance(spec, PartitionSpec), where
        assert len(spec) == leaf.ndim, f"{where}: spec {spec} for shape {leaf.shape}"
        assert all(name is None or name in LOGICAL_AXES for name in spec), f"{where}: {spec}"


CASES = [
    # ch_mult, in_channels, attn_resolutions, embed_dim, image size
    ((1, 2), 3, (), None, 16),
    ((1, 2), 1, (8,), 3, 16),
    ((1, 2, 2), 1, (), 4, 32),
    ((1, 2, 2), 3, (16, 8), None, 32),
]


@pytest.mark.parametrize("ch_mult, in_ch, attn, embed_dim, size", CASES)
def test_autoencoder_shapes_names_and_logical_axes(ch_mult, in_ch, attn, embed_dim, size):
    model = tiny_ae(ch_mult, in_ch, attn, embed_dim)
    f = model.downsample_factor
    assert f == 2 ** (len(ch_mult) - 1)
    x = jax.ShapeDtypeStruct((2, size, size, in_ch), jnp.float32)
    variables = jax.eval_shape(model.init, RNGS, x)
    check_logical_specs(variables)
    params = nn.unbox(variables)["params"]

    # Names mirror latent-diffusion's layout (see the module docstring).
    enc, dec = params["encoder"], params["decoder"]
    assert set(enc["down_0"]["block_0"]) == {"norm1", "conv1", "norm2", "conv2"}
    assert "nin_shortcut" in enc["down_1"]["block_0"]  # ch -> 2 ch
    assert "downsample" in enc["down_0"] and "downsample" not in enc[f"down_{len(ch_mult) - 1}"]
    assert set(enc["mid"]) == {"block_1", "attn_1", "block_2"}
    assert set(dec["mid"]) == {"block_1", "attn_1", "block_2"}
    assert set(dec["up_0"]) == {"block_0", "block_1"}  # num_res_blocks + 1, no upsample
    assert "upsample" in dec["up_1"]
    assert set(enc["mid"]["attn_1"]) == {"norm", "q", "k", "v", "proj_out"}
    assert dec["conv_out"]["kernel"].shape == (3, 3, 32, in_ch)
    assert ("quant_conv" in params) == (embed_dim is not None)
    assert ("post_quant_conv" in params) == (embed_dim is not None)
    # Attention sits at the levels whose feature map has a listed size.
    for i in range(len(ch_mult)):
        res = size // 2**i
        assert ("attn_0" in enc[f"down_{i}"]) == (res in attn)
        assert ("attn_0" in dec[f"up_{i}"]) == (res in attn)

    z_ch = model.latent_channels
    x_hat, post = jax.eval_shape(
        lambda p, x: model.apply(p, x, rngs={"sample": RNGS["sample"]}), variables, x
    )
    assert x_hat.shape == x.shape and x_hat.dtype == jnp.float32
    assert post.mean.shape == post.logvar.shape == (2, size // f, size // f, z_ch)
    post = jax.eval_shape(lambda p, x: model.apply(p, x, method=model.encode), variables, x)
    assert post.mean.shape == (2, size // f, size // f, z_ch)
    z = jax.ShapeDtypeStruct((3, size // f, size // f, z_ch), jnp.float32)
    out = jax.eval_shape(lambda p, z: model.apply(p, z, method=model.decode), variables, z)
    assert out.shape == (3, size, size, in_ch)


@pytest.mark.parametrize("double_z", [True, False])
def test_encoder_decoder_alone(double_z):
    enc = Encoder(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=4, double_z=double_z)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(enc.init, RNGS, x)
    check_logical_specs(variables)
    out = jax.eval_shape(enc.apply, variables, x)
    assert out.shape == (1, 8, 8, 8 if double_z else 4)

    dec = Decoder(ch=32, ch_mult=(1, 2, 2), out_channels=1, num_res_blocks=1, num_groups=16)
    z = jax.ShapeDtypeStruct((1, 8, 8, 4), jnp.float32)
    variables = jax.eval_shape(dec.init, RNGS, z)
    check_logical_specs(variables)
    assert jax.eval_shape(dec.apply, variables, z).shape == (1, 32, 32, 1)


def test_group_count_is_capped_and_must_divide():
    # 32 groups on 16 channels: capped to 16 groups, builds.
    x = jax.ShapeDtypeStruct((1, 8, 8, 1), jnp.float32)
    jax.eval_shape(tiny_ae((1,), in_channels=1, ch=16, groups=32).init, RNGS, x)
    # 32 groups do not divide 48 channels: a clear error, not a silent change of the model.
    with pytest.raises(ValueError, match="divide"):
        jax.eval_shape(tiny_ae((1,), in_channels=1, ch=48, groups=32).init, RNGS, x)


def test_sample_flag_and_rngs():
    model = tiny_ae((1, 2), in_channels=1, attn=(8,), embed_dim=4)
    x = jax.random.normal(key(2), (2, 16, 16, 1))
    params = jax.jit(model.init)(RNGS, x)

    @jax.jit
    def run(params, x, key):  # one compilation for every variant below
        det, post = model.apply(params, x, sample=False)  # no "sample" rng needed
        mode = model.apply(params, post.mean, method=model.decode)
        sampled, _ = model.apply(params, x, rngs={"sample": key})
        return det, mode, sampled

    det, mode, s1 = run(params, x, key(5))
    np.testing.assert_allclose(det, mode, rtol=1e-5, atol=1e-5)
    det_again, _, s1_again = run(params, x, key(5))
    s2 = run(params, x, key(6))[2]
    np.testing.assert_array_equal(det, det_again)
    np.testing.assert_array_equal(s1, s1_again)
    assert not np.allclose(s1, s2)
    assert not np.allclose(s1, det)
    assert np.isfinite(np.asarray(s1)).all()
    with pytest.raises(flax.errors.InvalidRngError):  # sampling needs a "sample" rng
        jax.eval_shape(lambda p, x: model.apply(p, x, sample=True), params, x)


def test_kl_matches_monte_carlo():
    # KL(q || N(0, I)) = E_q[log q(z) - log p(z)]; the log 2pi terms cancel in the difference.
    k_mean, k_logvar, k_eps = jax.random.split(key(3), 3)
    mean = 0.8 * jax.random.normal(k_mean, (2, 2, 2, 3))
    logvar = jax.random.uniform(k_logvar, (2, 2, 2, 3), minval=-1.5, maxval=1.0)
    q = DiagonalGaussian(mean=mean, logvar=logvar)

    n = 200_000

    @jax.jit
    def estimate(q, key):
        # n independent draws of the whole batch through DiagonalGaussian.sample itself.
        many = DiagonalGaussian(*(jnp.broadcast_to(a, (n, *a.shape)) for a in (mean, logvar)))
        z = many.sample(key)  # [n, B, h, w, c]
        log_q = -0.5 * (jnp.square(z - q.mean) / q.var + q.logvar)
        log_p = -0.5 * jnp.square(z)
        per_sample = (log_q - log_p).sum(axis=(2, 3, 4))  # [n, B]
        return per_sample.mean(0), per_sample.std(0) / np.sqrt(n), q.kl()

    mc, stderr, kl = estimate(q, k_eps)
    assert kl.shape == (2,)
    assert np.all(np.abs(kl - mc) < 4 * stderr), (kl, mc, stderr)


def test_kl_zero_per_channel_and_clipping():
    zeros = jnp.zeros((3, 4, 4, 2))
    np.testing.assert_allclose(DiagonalGaussian(zeros, zeros).kl(), np.zeros(3), atol=1e-7)

    moments = jax.random.normal(key(4), (3, 4, 4, 4))
    q = DiagonalGaussian.from_moments(moments)
    np.testing.assert_array_equal(q.mean, moments[..., :2])
    per_channel = q.kl_per_channel()
    assert per_channel.shape == (2,)
    # Summed over channels and positions, the per-channel KL is the batch mean of kl().
    np.testing.assert_allclose(per_channel.sum() * 16, q.kl().mean(), rtol=1e-5)

    extreme = jnp.concatenate([zeros, jnp.full_like(zeros, 100.0)], -1)
    assert float(DiagonalGaussian.from_moments(extreme).logvar.max()) == 20.0
    extreme = jnp.concatenate([zeros, jnp.full_like(zeros, -100.0)], -1)
    assert float(DiagonalGaussian.from_moments(extreme).logvar.min()) == -30.0


def test_sample_is_reparameterised():
    mean, logvar = jnp.ones((2, 3, 3, 4)), jnp.full((2, 3, 3, 4), -0.5)
    rng = key(7)

    def total(m, lv):
        return DiagonalGaussian(m, lv).sample(rng).sum()

    g_mean, g_logvar = jax.jit(jax.grad(total, argnums=(0, 1)))(mean, logvar)
    np.testing.assert_allclose(g_mean, np.ones(mean.shape))
    # d/dlogvar (mean + exp(logvar / 2) eps) = 0.5 std eps = 0.5 (z - mean)
    z = DiagonalGaussian(mean, logvar).sample(rng)
    np.testing.assert_allclose(g_logvar, 0.5 * (z - mean), rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(g_logvar)).sum() > 0


@pytest.mark.parametrize("n_layers, side", [(2, 6), (3, 2)])
@pytest.mark.parametrize("norm", ["group", "batch", "none"])
def test_discriminator_shapes(n_layers, side, norm):
    disc = PatchDiscriminator(ndf=16, n_layers=n_layers, norm=norm)
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(disc.init, RNGS, x)
    check_logical_specs(variables)
    params = nn.unbox(variables)["params"]
    assert ("norm_1" in params) == (norm != "none")
    assert jax.eval_shape(disc.apply, variables, x).shape == (2, side, side, 1)


def test_discriminator_runs_and_rejects_unknown_norm():
    disc = PatchDiscriminator(ndf=8, n_layers=2)
    x = jax.random.normal(key(8), (2, 32, 32, 1))
    logits = jax.jit(disc.apply)(jax.jit(disc.init)(RNGS, x), x)
    assert logits.shape == (2, 6, 6, 1) and np.isfinite(np.asarray(logits)).all()
    with pytest.raises(ValueError, match="norm"):
        jax.eval_shape(PatchDiscriminator(norm="instance").init, RNGS, x)


# --- architecture options, the SD layout, bottlenecks in the trainer ---------------------------


def test_stable_diffusion_autoencoder_parameter_count():
    """ae/base.py (the stage-1 defaults) is SD 1.x's AutoencoderKL: 83,653,863 parameters (the count
    diffusers reports for it, quant convs included), without materialising them."""
    from latentjax.config import load_config
    from latentjax.train.autoencoder import build_autoencoder

    config = load_config("ae/base.py")
    model = build_autoencoder(config.model)
    assert model.downsample_factor == 8 and model.latent_channels == 4
    x = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
    params = nn.unbox(jax.eval_shape(model.init, RNGS, x))["params"]
    count = {k: sum(int(np.prod(a.shape)) for a in jax.tree.leaves(v)) for k, v in params.items()}
    # quant_conv: 1x1, 8 -> 8 (+ bias); post_quant_conv: 1x1, 4 -> 4 (+ bias).
    assert count["quant_conv"] == 8 * 8 + 8 and count["post_quant_conv"] == 4 * 4 + 4
    assert count == {
        "encoder": 34_163_592,
        "decoder": 49_490_179,
        "quant_conv": 72,
        "post_quant_conv": 20,
    }
    assert sum(count.values()) == 83_653_863
    # SD's encoder ends with 2 * z_channels = 8 moments; mid-block attention only.
    assert params["encoder"]["conv_out"]["kernel"].shape == (3, 3, 512, 8)
    assert not any("attn_0" in params["encoder"][f"down_{i}"] for i in range(4))


@pytest.mark.parametrize("ch_mult, z", [((1, 2), 4), ((1, 2, 2), 16), ((1, 1, 2, 2, 2), 32)])
def test_downsampling_factors_and_latent_widths(ch_mult, z):
    """f in {2, 4, 16} from ch_mult, z_channels in {4, 16, 32}, attention at a chosen size."""
    model = AutoencoderKL(
        ch=8,
        ch_mult=ch_mult,
        num_res_blocks=1,
        z_channels=z,
        in_channels=3,
        num_groups=4,
        attn_resolutions=(8,),
    )
    f = 2 ** (len(ch_mult) - 1)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    variables = jax.eval_shape(model.init, RNGS, x)
    params = nn.unbox(variables)["params"]
    post = jax.eval_shape(lambda v, x: model.apply(v, x, method=model.encode), variables, x)
    assert post.mean.shape == (1, 32 // f, 32 // f, z)
    for i in range(len(ch_mult)):
        assert ("attn_0" in params["encoder"][f"down_{i}"]) == (32 // 2**i == 8)


def test_batch_norm_discriminator_normalises_by_the_batch():
    from latentjax.models.discriminator import BatchStatNorm

    disc = PatchDiscriminator(ndf=8, n_layers=2, norm="batch")
    x = jax.ShapeDtypeStruct((4, 16, 16, 1), jnp.float32)
    variables = jax.eval_shape(disc.init, RNGS, x)
    check_logical_specs(variables)
    params = nn.unbox(variables)["params"]
    assert set(params["norm_1"]) == {"scale", "bias"} and "batch_stats" not in variables
    assert jax.eval_shape(disc.apply, variables, x).shape == (4, 2, 2, 1)

    # Training-mode BatchNorm by hand in float64: statistics over batch and positions.
    h = 3.0 + 2.0 * np.asarray(jax.random.normal(key(9), (4, 5, 5, 3)), np.float64)
    norm = BatchStatNorm()
    v = {"params": {"scale": jnp.array([1.0, 2.0, 0.5]), "bias": jnp.array([0.0, 1.0, -1.0])}}
    out = norm.apply(v, jnp.asarray(h, jnp.float32))
    mean, var = h.mean(axis=(0, 1, 2)), h.var(axis=(0, 1, 2))
    expected = (h - mean) / np.sqrt(var + 1e-5) * [1.0, 2.0, 0.5] + [0.0, 1.0, -1.0]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def _torch_patchgan(params, norm: str, temporal_kernel: int, x: np.ndarray) -> np.ndarray:
    """The PatchGAN written out in PyTorch (pix2pix's NLayerDiscriminator; Conv3d when
    ``temporal_kernel``), run in float64 on ``params`` (our Flax tree): channels-first layout,
    conv_0 .. conv_{n-1} of stride 2, conv_n and conv_out of stride 1, every one padded 1 (and
    k // 2 frames in time), GroupNorm(eps 1e-6) or training-mode BatchNorm after conv_1 ..
    conv_n, LeakyReLU 0.2 after all but conv_out."""
    import torch
    import torch.nn.functional as F

    k = temporal_kernel
    conv = F.conv3d if k else F.conv2d
    n = sum(name.startswith("conv_") for name in params) - 2  # conv_0 .. conv_n, conv_out
    as_t = lambda a: torch.from_numpy(np.asarray(a, np.float64))  # noqa: E731
    t = as_t(np.moveaxis(x, -1, 1))
    for i, name in [*enumerate(f"conv_{j}" for j in range(n + 1)), (None, "conv_out")]:
        p = params[name]
        kernel = as_t(p["kernel"])  # [(kt,) kh, kw, in, out] -> [out, in, (kt,) kh, kw]
        kernel = kernel.permute(kernel.ndim - 1, kernel.ndim - 2, *range(kernel.ndim - 2))
        bias = as_t(p["bias"]) if "bias" in p else None
        stride = 2 if i is not None and i < n else 1
        t = conv(
            t,
            kernel,
            bias,
            stride=(1, stride, stride) if k else stride,
            padding=(k // 2, 1, 1) if k else 1,
        )
        if i is None:
            return np.moveaxis(t.numpy(), 1, -1)
        if i > 0:
            scale, shift = as_t(params[f"norm_{i}"]["scale"]), as_t(params[f"norm_{i}"]["bias"])
            if norm == "group":
                t = F.group_norm(t, min(32, t.shape[1]), scale, shift, eps=1e-6)
            else:
                t = F.batch_norm(t, None, None, scale, shift, training=True, eps=1e-5)
        t = F.leaky_relu(t, 0.2)


@pytest.mark.parametrize("temporal_kernel", [0, 3])
@pytest.mark.parametrize("norm", ["group", "batch"])
def test_patchgan_equals_pytorch(temporal_kernel, norm):
    # The 2-D PatchGAN of images and the 3-D one of clips against the same network written in
    # PyTorch (F.conv2d / F.conv3d, F.group_norm / training-mode F.batch_norm) on the same
    # random weights, in float64. Clips keep their 5 frames; sides 16 -> 8 -> 4 -> 3 -> 2.
    disc = PatchDiscriminator(ndf=8, n_layers=2, norm=norm, temporal_kernel=temporal_kernel)
    shape = (2, 5, 16, 16, 3) if temporal_kernel else (2, 16, 16, 3)
    x = jax.random.normal(key(4), shape)
    params = nn.unbox(disc.init(RNGS, x))["params"]
    # Norm parameters away from 1 and 0, so a scale or shift the wiring dropped shows.
    params = jax.tree_util.tree_map_with_path(
        lambda path, a: a + 0.3 * jax.random.normal(key(len(str(path))), a.shape)
        if "norm" in str(path) else a,
        params,
    )  # fmt: skip
    got = np.asarray(disc.apply({"params": params}, x), np.float64)
    want = _torch_patchgan(params, norm, temporal_kernel, np.asarray(x))
    assert got.shape == want.shape == (*shape[:-3], 2, 2, 1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_3d_patchgan_judges_motion_the_2d_one_frames():
    # Reversing a clip's frames: the per-frame PatchGAN's logits are the same frames' logits in
    # reverse order (it judges each frame alone); the 3-D one's are not (its patches span 3
    # frames, so a motion played backwards is another input).
    x = jax.random.normal(key(5), (2, 5, 16, 16, 1))
    flat = PatchDiscriminator(ndf=8, n_layers=1, norm="none")
    frames = lambda v: v.reshape(-1, *v.shape[2:])  # noqa: E731
    v2 = flat.init(RNGS, frames(x))
    forward = flat.apply(v2, frames(x)).reshape(2, 5, -1)
    backward = flat.apply(v2, frames(x[:, ::-1])).reshape(2, 5, -1)
    np.testing.assert_allclose(backward, forward[:, ::-1], rtol=1e-6)
    deep = PatchDiscriminator(ndf=8, n_layers=1, norm="none", temporal_kernel=3)
    v3 = deep.init(RNGS, x)
    forward, backward = deep.apply(v3, x), deep.apply(v3, x[:, ::-1])
    assert forward.shape == (2, 5, 6, 6, 1)
    assert np.abs(np.asarray(backward - forward[:, ::-1])).max() > 1e-3
    with pytest.raises(ValueError, match="odd"):
        jax.eval_shape(PatchDiscriminator(temporal_kernel=2).init, RNGS, x)
    with pytest.raises(ValueError, match="takes clips"):
        jax.eval_shape(deep.init, RNGS, frames(x))


def test_3d_patchgan_config_is_checked():
    from latentjax.config import load_config
    from latentjax.errors import ConfigError
    from latentjax.factory import check_autoencoder_config

    with pytest.raises(ConfigError, match="loss.disc_temporal_kernel=2; use 0"):
        check_autoencoder_config(load_config("ae/digits_video.py", ["loss.disc_temporal_kernel=2"]))
    with pytest.raises(ConfigError, match="trains on images"):
        check_autoencoder_config(load_config("ae/digits.py", ["loss.disc_temporal_kernel=3"]))
    check_autoencoder_config(load_config("ae/digits_video.py", ["loss.disc_temporal_kernel=3"]))


# The smallest model that has every part (f = 1: no resampling), so the five compiled steps
# below stay cheap; f > 1 is covered by the shape tests above.
TINY_STAGE = [
    "data.image_size=8",
    "model.ch=4",
    "model.ch_mult=(1,)",
    "model.num_groups=2",
    "model.codebook_size=16",
    "loss.disc_ndf=8",
    "loss.disc_layers=1",
    "optim.warmup_steps=1",
    "optim.lr=0.003",
    "train.batch_size=4",
]


def tiny_stage(*overrides):
    from latentjax.config import load_config
    from latentjax.train.autoencoder import AutoencoderStage

    return AutoencoderStage(load_config("ae/digits.py", [*TINY_STAGE, *overrides]))


@pytest.mark.parametrize(
    "bottleneck, extra",
    [
        ("kl", ["loss.kl_free_bits=0.01", "loss.perceptual=haar"]),
        ("ae", ["loss.perceptual=fft"]),
        ("vq", ["model.vq_estimator=rotation"]),
        ("fsq", ["model.fsq_levels=(5, 5, 5, 5)"]),
    ],
)
def test_reconstruction_steps_lower_the_loss(bottleneck, extra):
    stage = tiny_stage(f"model.bottleneck={bottleneck}", *extra)
    state = nn.unbox(stage.init_state(key(0)))
    x = jnp.tanh(jax.random.normal(key(1), (4, 8, 8, 1)))
    step = jax.jit(stage.reconstruction_step)
    losses = []
    for _ in range(12):
        state, metrics = step(state, {}, {"image": x}, key(2))
        losses.append(float(metrics["nll"]))
    # KL reconstructs through posterior samples, so its loss is noisy: compare averages.
    assert np.isfinite(losses).all(), losses
    assert np.mean(losses[-3:]) < 0.85 * np.mean(losses[:3]), losses
    assert int(state["step"]) == 12
    if bottleneck == "vq":
        # Dead-code restart: with usage starting at 0, the first step filled the codebook with
        # encoder outputs, so codes now have the encoder's scale rather than +-1/16.
        assert "vq_usage" in state and float(metrics["perplexity"]) > 1.0
        codebook = np.asarray(state["params"]["ae"]["params"]["quantize"]["embedding"])
        assert np.abs(codebook).max() > 1.0 / 16
    if bottleneck in ("vq", "fsq"):
        assert 0 < float(metrics["codebook_usage"]) <= 1


def test_adversarial_step_with_regularisers():
    """Non-saturating GAN, BatchNorm discriminator, R1 and LeCam in the one jitted step: the
    discriminator moves, the LeCam averages move toward the logits, all finite; the step's
    adaptive weight is disc_weight * ||grad nll|| / (||grad adv|| + 1e-4) at the last layer."""
    stage = tiny_stage(
        "loss.gan_loss=non_saturating",
        "loss.disc_norm=batch",
        "loss.r1_weight=1.0",
        "loss.lecam_weight=0.1",
        "loss.lecam_decay=0.5",
        "loss.disc_start=0",
    )
    assert stage.phase(0) == "adversarial"
    state = nn.unbox(stage.init_state(key(0)))
    x = jnp.tanh(jax.random.normal(key(1), (4, 8, 8, 1)))
    step = jax.jit(stage.adversarial_step)
    new, metrics = step(state, {}, {"image": x}, key(2))
    # (The first update has learning rate 0: the optimisers warm up from 0.)
    new, _ = step(new, {}, {"image": x}, key(2))
    for k in ("d_loss", "g_adv", "r1", "lecam", "adaptive_weight", "nll"):
        assert np.isfinite(float(metrics[k])), k
    assert float(metrics["r1"]) > 0
    assert float(new["lecam"]["real"]) != 0.0 and float(new["lecam"]["fake"]) != 0.0
    moved = jax.tree.map(
        lambda a, b: float(jnp.abs(a - b).max()), new["params"]["disc"], state["params"]["disc"]
    )
    assert max(jax.tree.leaves(moved)) > 0

    # The adaptive weight by hand, from the same closures the step uses.
    rng = jax.random.fold_in(key(2), 0)
    _, generator_losses = stage._losses(state, {"image": x}, rng)
    last = lambda g: g["params"]["decoder"]["conv_out"]["kernel"]  # noqa: E731

    @jax.jit
    def last_layer_grads(params):
        g_nll = jax.grad(lambda p: generator_losses(p)[0][0])(params)
        g_adv = jax.grad(lambda p: generator_losses(p)[0][1])(params)
        return g_nll, g_adv

    g_nll, g_adv = last_layer_grads(state["params"]["ae"])
    expected = 0.1 * np.linalg.norm(last(g_nll)) / (np.linalg.norm(last(g_adv)) + 1e-4)
    np.testing.assert_allclose(float(metrics["adaptive_weight"]), expected, rtol=1e-3)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.bottleneck=vae", "model.bottleneck"),
        ("model.bottleneck=fsq", "fsq_levels"),
        ("loss.gan_loss=wgan", "gan_loss"),
        ("loss.perceptual=lpips data.image_size=16", "lpips_weights"),
        ("loss.perceptual=lpips", "needs images of at least 16 x 16"),  # the stage's 8 px
        ("loss.perceptual=vgg", "perceptual"),
        ("loss.disc_norm=instance", "disc_norm"),
        ("loss.r1_weight=-1.0", "r1_weight"),
    ],
)
def test_bad_stage_options_raise_config_error(override, message):
    from latentjax.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        tiny_stage(*override.split())
