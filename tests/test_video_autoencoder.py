"""The causal video autoencoder (Wan 2.1 architecture) and its converter.

Parity runs diffusers' ``AutoencoderKLWan`` and ours on the same random weights (saved with
``save_pretrained``, converted) and the same clips: relative L2 error <= 1e-4 in float32. The other
properties (chunked == whole, causality, fixed-shape caches, gradients) are checked on the same
tiny models.

Programs are compiled with XLA's backend optimisation level 0 and without XLA:CPU's newer fusion
emitters: together they cut the compile time of these small programs about fivefold, which
dominates this file's run time, and change no result checked here (they run as fast here).
"""

import functools
import inspect
import json
import shutil
from types import SimpleNamespace

import chex
import diffusers
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
from jax.sharding import PartitionSpec

import latentjax.models.video_autoencoder as video_ae
from latentjax.config import load_config
from latentjax.convert import ConvertError, load_wan_autoencoder
from latentjax.convert.wan import (
    DIFFUSERS_DEFAULTS,
    build,
    convert_state_dict,
    model_config,
    param_sources,
)
from latentjax.factory import build_autoencoder
from latentjax.models.causal3d import CausalConv3d
from latentjax.models.video_autoencoder import VideoAutoencoderKL
from latentjax.parallel.axes import LOGICAL_AXES

FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}
jit = functools.partial(jax.jit, compiler_options=FAST_COMPILE)

# The tiny Wan of /work/shared/ENVIRONMENT.md: x4 time, x8 space, a [1, 3, 9, 32, 32] clip -> a
# [1, 4, 3, 4, 4] latent (NCTHW), with latent statistics of its own width.
TINY = dict(
    base_dim=8,
    z_dim=4,
    dim_mult=[1, 2, 2, 2],
    num_res_blocks=1,
    temperal_downsample=[False, True, True],
    latents_mean=[0.1, -0.2, 0.3, -0.4],
    latents_std=[1.5, 2.0, 0.5, 1.0],
)


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def key(seed: int) -> jax.Array:
    return jax.random.key(seed, impl="rbg")  # compiles much faster than threefry on CPU


def clip(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def to_torch(x: np.ndarray) -> torch.Tensor:  # [B, T, H, W, C] -> [B, C, T, H, W]
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def from_torch(x: torch.Tensor) -> np.ndarray:  # [B, C, T, H, W] -> [B, T, H, W, C]
    return np.moveaxis(x.detach().numpy(), 1, -1)


def make_wan(path, kw: dict, seed: int = 0):
    torch.manual_seed(seed)
    vae = diffusers.AutoencoderKLWan(**kw).eval()
    # Random init leaves the norms at 1: perturb every tensor so each one's conversion counts.
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    vae.save_pretrained(path)
    return vae


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("wan") / "tiny"
    vae = make_wan(path, TINY)
    config, params = load_wan_autoencoder(path)
    model = build(config.model)

    @functools.partial(jit, static_argnums=2)
    def encode(params, x, chunk=1):
        return model.apply(params, x, method=model.encode, chunk_latent_frames=chunk)

    @functools.partial(jit, static_argnums=2)
    def decode(params, z, chunk=1):
        return model.apply(params, z, method=model.decode, chunk_latent_frames=chunk)

    return SimpleNamespace(
        vae=vae, path=path, config=config, params=params, model=model, encode=encode, decode=decode
    )


def reference_encode(vae, x: np.ndarray):
    with torch.no_grad():
        dist = vae.encode(to_torch(x)).latent_dist
    return from_torch(dist.mean), from_torch(dist.logvar)


def reference_decode(vae, z: np.ndarray):
    """-> (diffusers' decode, clamped to [-1, 1] as it returns it; the decoder's raw output,
    recorded from each of diffusers' frame-by-frame decoder calls)."""
    raw = []
    hook = vae.decoder.register_forward_hook(lambda mod, args, out: raw.append(out.clone()))
    try:
        with torch.no_grad():
            out = vae.decode(torch.from_numpy(np.ascontiguousarray(np.moveaxis(z, -1, 1)))).sample
    finally:
        hook.remove()
    return from_torch(out), from_torch(torch.cat(raw, dim=2))


def test_defaults_are_diffusers_signature():
    sig = inspect.signature(diffusers.AutoencoderKLWan.__init__).parameters
    assert {k: p.default for k, p in sig.items() if k != "self"} == DIFFUSERS_DEFAULTS


@pytest.mark.parametrize("frames", [9, 1])  # (batches of 2: the x1 test)
def test_parity_with_diffusers(tiny, frames):
    batch = 1
    x = clip((batch, frames, 32, 32, 3))
    ref_mean, ref_logvar = reference_encode(tiny.vae, x)
    posterior = tiny.encode(tiny.params, x)
    latent = 1 + (frames - 1) // 4
    assert posterior.mean.shape == ref_mean.shape == (batch, latent, 4, 4, 4)
    assert rel_l2(posterior.mean, ref_mean) <= 1e-4
    assert rel_l2(posterior.logvar, ref_logvar) <= 1e-4

    z = np.random.default_rng(1).normal(size=ref_mean.shape).astype(np.float32)
    ref, ref_raw = reference_decode(tiny.vae, z)
    out = np.asarray(tiny.decode(tiny.params, z))
    assert out.shape == ref.shape == (batch, frames, 32, 32, 3)
    assert rel_l2(out, ref_raw) <= 1e-4  # unclipped: the values a loss sees
    assert np.mean(np.abs(ref_raw) < 1) > 0.5  # most values lie inside the clamp: a real check
    assert rel_l2(np.clip(out, -1, 1), ref) <= 1e-4


def test_converter_returns_latent_normalisation(tiny):
    stats = tiny.config.latent_stats.to_dict()
    assert stats == {"mean": TINY["latents_mean"], "std": TINY["latents_std"]}
    assert (tiny.model.time_factor, tiny.model.space_factor) == (4, 8)


def test_chunked_equals_whole(tiny):
    x = clip((1, 13, 32, 32, 3), seed=2)
    chunked, whole = tiny.encode(tiny.params, x, 1), tiny.encode(tiny.params, x, None)
    assert chunked.mean.shape == (1, 4, 4, 4, 4)
    chex.assert_trees_all_close(chunked, whole, atol=1e-5, rtol=0)

    z = np.asarray(chunked.mean)
    out_chunked, out_whole = tiny.decode(tiny.params, z, 1), tiny.decode(tiny.params, z, None)
    assert out_chunked.shape == (1, 13, 32, 32, 3)
    chex.assert_trees_all_close(out_chunked, out_whole, atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk", [1, None])
def test_causality(tiny, chunk):
    x = clip((1, 13, 32, 32, 3), seed=2)
    x2 = x.copy()
    x2[:, 5] += 0.5  # frame 5 opens latent frame 2's chunk (frames 5..8)
    a, b = tiny.encode(tiny.params, x, chunk).mean, tiny.encode(tiny.params, x2, chunk).mean
    np.testing.assert_array_equal(a[:, :2], b[:, :2])
    assert np.all(np.abs(a[:, 2:] - b[:, 2:]).max(axis=(0, 2, 3, 4)) > 1e-4)

    z = np.asarray(a)
    z2 = z.copy()
    z2[:, 2] += 0.5  # latent frame 2 decodes to frames 5..8
    y, y2 = tiny.decode(tiny.params, z, chunk), tiny.decode(tiny.params, z2, chunk)
    np.testing.assert_array_equal(y[:, :5], y2[:, :5])
    assert np.all(np.abs(y[:, 5:] - y2[:, 5:]).max(axis=(0, 2, 3, 4)) > 1e-4)


def test_streaming_step_compiles_once(tiny, monkeypatch):
    """The chunk step sees caches of one shape after the first chunk: streaming a clip through a
    jitted step traces it twice (first chunk, then every other one) and gives the scan's result;
    the scan traces its body as often for 1 chunk as for 4 (a loop, not unrolled)."""
    model, params = tiny.model, tiny.params
    chex.clear_trace_counter()

    @jit
    @chex.assert_max_traces(n=2)
    def step(params, x, cache):
        return model.apply(params, x, cache, method=model.encode_chunk)

    x = clip((1, 13, 32, 32, 3), seed=2)
    posterior, cache = step(params, x[:, :1], None)
    means = [posterior.mean]
    for i in range(1, 13, 4):
        posterior, cache = step(params, x[:, i : i + 4], cache)
        means.append(posterior.mean)
    chex.assert_trees_all_close(
        jnp.concatenate(means, axis=1), tiny.encode(params, x, 1).mean, atol=1e-6, rtol=0
    )

    # The scan traces its step a fixed number of times (flax's nn.scan: twice) however many
    # chunks the clip has: one compiled loop body, not a Python loop unrolled per chunk.
    shapes = {
        "encode": lambda n: (1, 1 + 4 * n, 32, 32, 3),
        "decode": lambda n: (1, 1 + n, 4, 4, 4),
    }
    for name, shape in shapes.items():
        traces = []
        step_name = f"_{name}_step"
        monkeypatch.setattr(video_ae, step_name, counted(getattr(video_ae, step_name), traces))
        per_length = []
        for chunks in (1, 4):
            traces.clear()
            fn = jax.jit(lambda p, x, name=name: model.apply(p, x, method=name))
            fn.trace(params, jax.ShapeDtypeStruct(shape(chunks), jnp.float32))
            per_length.append(len(traces))
        assert per_length[0] == per_length[1] <= 2, (name, per_length)


def counted(fn, calls: list):
    def wrapped(*args):
        calls.append(1)
        return fn(*args)

    return wrapped


def test_causal_conv_chunks():
    """The causal convolution alone: chunk by chunk with its cache == the whole clip at once
    (stride 1 and Wan's temporal-downsampling stride 2), and the past padded with zeros only."""
    x = jnp.asarray(clip((2, 12, 6, 6, 3), seed=3))
    for conv in (CausalConv3d(5), CausalConv3d(4, (3, 1, 1), time_stride=2)):
        params = conv.init(key(0), x)
        whole, _ = conv.apply(params, x)
        assert whole.shape == (2, 12 // conv.time_stride, 6, 6, conv.features)
        out, cache = [], None
        for i in range(0, 12, 4):
            y, cache = conv.apply(params, x[:, i : i + 4], cache)
            assert cache.shape == (2, conv.past_frames, 6, 6, 3)
            out.append(y)
        chex.assert_trees_all_close(jnp.concatenate(out, axis=1), whole, atol=1e-6, rtol=0)
    # Stride 1, kernel 3: output frame 0 sees two zero frames and frame 0 (its last tap), so it
    # is a 2-D conv of frame 0 alone; no frame after it enters.
    conv = CausalConv3d(5)
    p = nn.unbox(conv.init(key(0), x))["params"]
    y, _ = conv.apply({"params": p}, x)
    frame0 = jax.lax.conv_general_dilated(
        x[:, 0], p["kernel"][-1], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    chex.assert_trees_all_close(y[:, 0], frame0 + p["bias"], atol=1e-5, rtol=0)


def test_latent_shapes_and_errors(tiny):
    model, params = tiny.model, tiny.params
    for frames in (1, 5, 17):
        x = jax.ShapeDtypeStruct((2, frames, 16, 24, 3), jnp.float32)
        posterior = jax.eval_shape(lambda p, x: model.apply(p, x, method=model.encode), params, x)
        latent = (2, 1 + (frames - 1) // 4, 2, 3, 4)
        assert posterior.mean.shape == posterior.logvar.shape == latent
        z = jax.ShapeDtypeStruct(latent, jnp.float32)
        out = jax.eval_shape(lambda p, z: model.apply(p, z, method=model.decode), params, z)
        assert out.shape == (2, frames, 16, 24, 3)
    x = jax.ShapeDtypeStruct((1, 8, 16, 16, 3), jnp.float32)
    with pytest.raises(ValueError, match=r"8 frames .* 1 \+ 4k \(1, 5, 9"):
        jax.eval_shape(lambda p, x: model.apply(p, x, method=model.encode), params, x)
    x = jax.ShapeDtypeStruct((1, 5, 20, 16, 3), jnp.float32)
    with pytest.raises(ValueError, match="20x16 .* multiples of 8"):
        jax.eval_shape(lambda p, x: model.apply(p, x, method=model.encode), params, x)
    x = jax.ShapeDtypeStruct((1, 13, 16, 16, 3), jnp.float32)
    with pytest.raises(ValueError, match="chunk_latent_frames=2 does not divide the 3"):
        jax.eval_shape(
            lambda p, x: model.apply(p, x, method=model.encode, chunk_latent_frames=2), params, x
        )


def test_parameters_carry_logical_axes():
    model = VideoAutoencoderKL(8, (1, 2, 2), 1, 4, (True, True))
    x = jnp.zeros((1, 1, 8, 8, 3))
    boxed = jax.eval_shape(lambda: model.init(key(0), x, sample=False))["params"]
    specs = nn.get_partition_spec(boxed)
    leaves = jax.tree_util.tree_leaves_with_path(nn.unbox(boxed))
    spec_leaves = jax.tree.leaves(specs, is_leaf=lambda s: isinstance(s, PartitionSpec))
    assert len(leaves) == len(spec_leaves) > 0
    for spec, (path, leaf) in zip(spec_leaves, leaves, strict=True):
        assert len(spec) == leaf.ndim, jax.tree_util.keystr(path)
        assert all(name is None or name in LOGICAL_AXES for name in spec)


def test_image_autoencoder_x1_time(tmp_path):
    """No temporal downsampling: an image autoencoder (one latent frame per frame, applied
    causally to a video), checked against diffusers on an image."""
    kw = dict(TINY, dim_mult=[1, 2], temperal_downsample=[False])
    vae = make_wan(tmp_path / "x1", kw, seed=2)
    config, params = load_wan_autoencoder(tmp_path / "x1")
    model = build(config.model)
    assert (model.time_factor, model.space_factor) == (1, 2)
    image = clip((2, 1, 16, 16, 3), seed=4)
    posterior = jit(lambda p, x: model.apply(p, x, method=model.encode))(params, image)
    ref_mean, ref_logvar = reference_encode(vae, image)
    assert posterior.mean.shape == ref_mean.shape == (2, 1, 8, 8, 4)
    assert rel_l2(posterior.mean, ref_mean) <= 1e-4
    assert rel_l2(posterior.logvar, ref_logvar) <= 1e-4
    z = np.asarray(posterior.mean)
    out = jit(lambda p, z: model.apply(p, z, method=model.decode))(params, z)
    assert out.shape == image.shape
    assert rel_l2(out, reference_decode(vae, z)[1]) <= 1e-4
    video = jax.ShapeDtypeStruct((2, 6, 16, 16, 3), jnp.float32)  # any length
    x_hat, posterior = jax.eval_shape(lambda p, x: model.apply(p, x, sample=False), params, video)
    assert x_hat.shape == video.shape and posterior.mean.shape == (2, 6, 8, 8, 4)


def random_params(model, x, seed=0) -> dict:
    """Gaussian weights of LeCun scale in the shapes ``init`` makes, without compiling ``init``
    (its random initialisers cost more compile time here than the whole gradient)."""
    shapes = nn.unbox(jax.eval_shape(lambda: model.init(key(0), x[:, :1], sample=False)))
    rng = np.random.default_rng(seed)

    def draw(leaf):
        fan_in = int(np.prod(leaf.shape[:-1])) or 1
        return jnp.asarray(rng.normal(0, fan_in**-0.5, leaf.shape), leaf.dtype)

    return jax.tree.map(draw, shapes)


@pytest.mark.slow  # a video model's backward pass: half a minute cold (make test-all)
def test_gradients_reach_every_parameter():
    model = VideoAutoencoderKL(4, (1, 2), 1, 4, (True,))  # x2 time, x2 space
    x = jnp.asarray(clip((1, 5, 8, 8, 3), seed=5))  # frame 0, then two chunks
    params = random_params(model, x)

    @jit
    def grads(params, x, rng):
        def loss(params):
            x_hat, posterior = model.apply(params, x, rngs={"sample": rng})
            return jnp.mean(jnp.square(x_hat - x)) + 1e-6 * jnp.mean(posterior.kl())

        return jax.grad(loss)(params)

    g = grads(params, x, key(1))
    assert jax.tree.structure(g) == jax.tree.structure(params)
    for path, leaf in jax.tree_util.tree_leaves_with_path(g):
        where = jax.tree_util.keystr(path)
        assert np.all(np.isfinite(leaf)), where
        assert np.any(leaf != 0), where  # time convs included: the clip has chunks after frame 0


def copy_model(tiny, tmp_path):
    path = tmp_path / "wan"
    shutil.copytree(tiny.path, path)
    return path


def test_missing_key_is_named(tiny, tmp_path):
    from safetensors.numpy import load_file, save_file

    path = copy_model(tiny, tmp_path)
    weights = path / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(weights))
    del sd["decoder.up_blocks.1.upsamplers.0.time_conv.weight"]
    save_file(sd, str(weights))
    with pytest.raises(ConvertError, match=r"missing key 'decoder\.up_blocks\.1\.upsamplers\.0\."):
        load_wan_autoencoder(path)
    sd = load_file(str(tiny.path / "diffusion_pytorch_model.safetensors"))
    sd["encoder.down_blocks.0.extra.weight"] = np.zeros(3, np.float32)
    save_file(sd, str(weights))
    with pytest.raises(
        ConvertError, match=r"unexpected key 'encoder\.down_blocks\.0\.extra\.weight'"
    ):
        load_wan_autoencoder(path)


@pytest.mark.parametrize(
    "cls", ["AutoencoderKLCogVideoX", "AutoencoderKLLTXVideo", "AutoencoderKLHunyuanVideo"]
)
def test_other_video_autoencoders_are_not_supported(tiny, tmp_path, cls):
    path = copy_model(tiny, tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "_class_name": cls}))
    with pytest.raises(ConvertError, match=f"{cls} is not supported yet") as err:
        load_wan_autoencoder(path)
    assert "\n" not in str(err.value)


def test_config_defaults_and_wan22(tiny, tmp_path):
    path = copy_model(tiny, tmp_path)
    cfg = json.loads((path / "config.json").read_text())
    for k in ("attn_scales", "dropout", "decoder_base_dim", "is_residual", "patch_size"):
        del cfg[k]  # diffusers' defaults: the same model
    (path / "config.json").write_text(json.dumps(cfg))
    config, params = load_wan_autoencoder(path)
    assert config.model == tiny.config.model
    chex.assert_trees_all_equal(params, tiny.params)
    (path / "config.json").write_text(json.dumps({**cfg, "is_residual": True}))
    with pytest.raises(ConvertError, match="Wan 2.2 VAE layout .* not supported yet"):
        load_wan_autoencoder(path)
    (path / "config.json").write_text(json.dumps({**cfg, "attn_scales": [0.5]}))
    with pytest.raises(ConvertError, match=r"attn_scales \[0\.5\] is not supported"):
        load_wan_autoencoder(path)
    (path / "config.json").write_text(json.dumps({**cfg, "z_dim": 16}))
    with pytest.raises(ConvertError, match="latents_mean has 4 entries for z_dim=16"):
        load_wan_autoencoder(path)


def test_wan21_release_converts():
    """The released Wan 2.1 VAE's layout at full size (diffusers' defaults, built on the meta
    device; weights stood in for by zero-memory broadcast arrays): every key is consumed, every
    shape fits, and the parameter count is diffusers'."""
    with torch.device("meta"):
        vae = diffusers.AutoencoderKLWan()
    state = vae.state_dict()
    sd = {k: np.broadcast_to(np.float32(0), tuple(v.shape)) for k, v in state.items()}
    params = convert_state_dict(model_config({}, "defaults"), sd, "Wan 2.1", "diffusers")
    count = sum(leaf.size for leaf in jax.tree.leaves(params))
    assert count == sum(v.numel() for v in state.values()) > 100_000_000


def test_wan_original_layout(tmp_path):
    """Wan's own names (``Wan2.1_VAE.pth``): the state dict we read as Wan's must be the one
    diffusers' single-file converter (written for the release checkpoint, so it needs Wan 2.1's
    block structure: four levels, two residual blocks) maps onto diffusers' names, and loads to
    the same parameters as the diffusers directory."""
    kw = dict(TINY, base_dim=4, dim_mult=[1, 2, 4, 4], num_res_blocks=2)
    vae = make_wan(tmp_path / "diffusers", kw, seed=1)
    config, params = load_wan_autoencoder(tmp_path / "diffusers")
    diffusers_sd = vae.state_dict()
    ours = param_sources(config.model, "diffusers")
    wan_names = param_sources(config.model, "wan")
    wan_sd = {wan_names[p][0]: diffusers_sd[ours[p][0]] for p in ours if ours[p][0] in diffusers_sd}
    assert len(wan_sd) == len(diffusers_sd)
    back = convert_wan_vae_to_diffusers(wan_sd)
    assert sorted(back) == sorted(diffusers_sd)
    assert all(torch.equal(back[k], diffusers_sd[k]) for k in back)

    torch.save(wan_sd, tmp_path / "Wan2.1_VAE.pth")
    overrides = {k: kw[k] for k in ("base_dim", "z_dim", "dim_mult", "latents_mean", "latents_std")}
    wan_config, wan_params = load_wan_autoencoder(tmp_path / "Wan2.1_VAE.pth", overrides)
    assert wan_config.model == config.model and wan_config.latent_stats == config.latent_stats
    chex.assert_trees_all_equal(wan_params, params)
    with pytest.raises(ConvertError, match=r"Wan2\.1_VAE\.pth: key '.*' has shape .* does not fit"):
        load_wan_autoencoder(tmp_path / "Wan2.1_VAE.pth")  # Wan 2.1's full widths


def test_remat_recomputes_blocks_for_the_same_gradients_in_less_memory():
    # model.remat: each residual block recomputed in the backward pass. The same parameters,
    # loss and gradients as without (float32 sums in another order: 1e-5), a `checkpoint` in the
    # program for every block, and fewer temporaries in the compiled gradient.
    plain, remat = (VideoAutoencoderKL(4, (1, 2), 1, 4, (True,), remat=r) for r in (False, True))
    x = jnp.asarray(clip((1, 5, 8, 8, 3), seed=6))
    params = random_params(plain, x)
    assert jax.tree.structure(random_params(remat, x)) == jax.tree.structure(params)

    def grads(model):
        def loss(params):
            z = model.apply(params, x, method=model.encode).mean
            return jnp.mean(jnp.square(model.apply(params, z, method=model.decode) - x))

        return jax.jit(jax.value_and_grad(loss))

    traced = [grads(m).trace(params) for m in (plain, remat)]
    compiled = [t.lower().compile() for t in traced]  # each model compiled once
    (value, g), (value_r, g_r) = (c(params) for c in compiled)
    np.testing.assert_allclose(value_r, value, rtol=1e-6)
    chex.assert_trees_all_close(g_r, g, rtol=1e-5, atol=1e-7)
    # jax.checkpoint's primitive: one per residual block (3 encoder, 4 decoder here), in the
    # first step and in the scan's body.
    text = [str(t.jaxpr) for t in traced]
    assert text[1].count("remat2[") >= 7 and "remat2[" not in text[0]
    temps = [c.memory_analysis().temp_size_in_bytes for c in compiled]
    assert temps[1] < temps[0]


@pytest.mark.parametrize("chunk", [1, None])
def test_unrolled_chunks_give_the_same_numbers_without_a_loop(chunk):
    # model.unroll_chunks: the chunks as one copy of the chunk step each. The same latents and
    # frames as the scan, and no loop left in the gradient's program (XLA:CPU runs a loop body's
    # convolution gradients slowly: benchmarks/video_scan.py), where the scan leaves one.
    rolled, unrolled = (
        VideoAutoencoderKL(4, (1, 2), 1, 4, (True,), unroll_chunks=u) for u in (False, True)
    )
    x = jnp.asarray(clip((2, 9, 8, 8, 3), seed=7))  # frame 0, then 2 chunks of 4 frames
    params = random_params(rolled, x)

    def encode(model):
        return jax.jit(lambda p, x: model.apply(p, x, chunk, method=model.encode).mean)

    def decode(model):
        return jax.jit(lambda p, z: model.apply(p, z, chunk, method=model.decode))

    z = encode(rolled)(params, x)
    chex.assert_trees_all_close(encode(unrolled)(params, x), z, atol=1e-6, rtol=0)
    frames = decode(rolled)(params, z)
    chex.assert_trees_all_close(decode(unrolled)(params, z), frames, atol=1e-6, rtol=0)

    def gradient_program(model) -> str:
        def loss(p):
            x_hat, _ = model.apply(p, x, sample=False, chunk_latent_frames=chunk)
            return jnp.mean(jnp.abs(x_hat - x))

        return jax.jit(jax.grad(loss)).lower(params).as_text()  # what XLA is given

    assert "stablehlo.while" in gradient_program(rolled)
    assert "stablehlo.while" not in gradient_program(unrolled)


def test_factory_reads_unroll_chunks():
    config = load_config("ae/digits_video.py")
    assert build_autoencoder(config.model).unroll_chunks  # the CPU-sized demo unrolls
    config.model.unroll_chunks = False
    assert not build_autoencoder(config.model).unroll_chunks
    assert not load_config("ae/wan21_480p.py").model.unroll_chunks  # 20 chunks: one loop
