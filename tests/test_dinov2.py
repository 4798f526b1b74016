"""Flax DINOv2 vs transformers' ``Dinov2Model`` / ``Dinov2WithRegistersModel`` on random weights
saved with ``save_pretrained``, at the pretraining grid and at resampled grids; the timm and
original-DINOv2 layouts, written here from the same torch models by the key correspondence in
timm's ``vision_transformer.py`` (``_convert_dinov2`` and the ``*_dinov2`` entries), convert to
the same parameters."""

import functools
import json
import shutil

import chex
import flax.linen as nn
import jax
import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
import transformers

from latentjax.convert import ConvertError
from latentjax.convert.dinov2 import HF_DEFAULTS, build, load_dinov2
from latentjax.models.dinov2 import (
    DINOv2,
    bicubic_weights,
    dinov2_kwargs,
    encode,
    make_encoder,
    preprocess,
)


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def perturb(model: torch.nn.Module) -> None:
    """Random values in every tensor: the init leaves LayerNorms at 1/0, registers and the mask
    token at zero and LayerScale constant, which would hide swapped or ignored tensors. The
    position table gets unit scale so that a wrong resampling shows in the outputs."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        model.embeddings.position_embeddings.normal_()


# Three tiny models: plain with a 4 x 4 position table; registers with DINOv2's real 37 x 37
# table (so a resampled grid goes through a wide antialiasing kernel); SwiGLU (ViT-g's FFN).
MODELS = {
    "plain": (
        transformers.Dinov2Config,
        dict(hidden_size=32, num_attention_heads=2, image_size=56),
    ),
    "registers": (
        transformers.Dinov2WithRegistersConfig,
        dict(hidden_size=48, num_attention_heads=4, image_size=518, num_register_tokens=4),
    ),
    "swiglu": (
        transformers.Dinov2Config,
        dict(hidden_size=32, num_attention_heads=2, image_size=42, use_swiglu_ffn=True),
    ),
}
HEADS = {"plain": 2, "registers": 4, "swiglu": 2}


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    """name -> (torch model, save_pretrained directory)."""
    out = {}
    for i, (name, (config_cls, kwargs)) in enumerate(MODELS.items()):
        torch.manual_seed(i)
        config = config_cls(num_hidden_layers=2, patch_size=14, **kwargs)
        model = transformers.AutoModel.from_config(config).eval()
        perturb(model)
        path = tmp_path_factory.mktemp(name)
        model.save_pretrained(path)
        out[name] = (model, path)
    return out


def reference(model, x: np.ndarray):
    """transformers' outputs for NHWC x: (last_hidden_state, hidden_states), both [B, L, D]."""
    with torch.no_grad():
        out = model(torch.from_numpy(x).permute(0, 3, 1, 2), output_hidden_states=True)
    return out.last_hidden_state.numpy(), [h.numpy() for h in out.hidden_states]


# Relative L2 error allowed against transformers. float32 agreement measures ~1e-7 here; the
# tanh approximation of GELU in place of erf would show as 3e-5 .. 2e-4, under a 1e-4 bound.
TOL = 1e-5


def assert_tokens_match(got: dict, want: np.ndarray, regs: int, tol: float = TOL) -> None:
    b, h, w, d = got["patch_tokens"].shape
    assert rel_l2(got["cls"], want[:, 0]) <= tol
    assert rel_l2(got["patch_tokens"], want[:, 1 + regs :].reshape(b, h, w, d)) <= tol
    if regs:
        assert rel_l2(got["registers"], want[:, 1 : 1 + regs]) <= tol
    else:
        assert got["registers"].shape == (b, 0, d)


@pytest.mark.parametrize(
    "name, size",
    [
        ("plain", (56, 56)),  # the table's own 4 x 4 grid
        ("plain", (70, 42)),  # 5 x 3: resampled up in height, down in width
        ("registers", (518, 518)),  # the table's own 37 x 37 grid
        ("registers", (56, 70)),  # 4 x 5 from 37 x 37, antialiased
        ("swiglu", (47, 33)),  # 3 x 2 from 3 x 3; the last 5 rows / 5 columns are not seen
    ],
)
def test_parity_with_transformers(hf_models, name, size):
    ref, path = hf_models[name]
    kwargs, params = load_dinov2(path)
    regs = kwargs["num_register_tokens"]
    x = np.random.default_rng(0).normal(size=(2, *size, 3)).astype(np.float32)
    want, hidden = reference(ref, x)
    model = build(kwargs)
    got = jax.jit(functools.partial(model.apply, return_blocks=(0, -1)))(params, x)
    assert got["patch_tokens"].shape == (2, size[0] // 14, size[1] // 14, kwargs["hidden_size"])
    assert_tokens_match(got, want, regs)
    # Block outputs are transformers' hidden_states[i + 1] (hidden_states[0] is the embedding).
    assert sorted(got["blocks"]) == [0, 1]
    assert_tokens_match(got["blocks"][0], hidden[1], regs)
    assert_tokens_match(got["blocks"][1], hidden[2], regs)
    if name == "registers" and size != (518, 518):
        # The comparison can tell the two resampling kernels apart at this size.
        plain = build({**kwargs, "interpolate_antialias": False})
        assert rel_l2(jax.jit(plain.apply)(params, x)["patch_tokens"], got["patch_tokens"]) > 1e-2


def timm_state_dict(model, layout: str) -> dict[str, torch.Tensor]:
    """The timm (``layout="timm"``) or original facebookresearch/dinov2 (``"original"``) state
    dict of a transformers DINOv2, written from timm's vision_transformer.py: qkv is [q | k | v]
    along the output features, LayerScale is ``ls{1,2}.gamma``, the final norm ``norm``;
    ``_convert_dinov2`` maps original -> timm by dropping ``mask_token``, renaming
    ``register_tokens`` -> ``reg_token`` and ``mlp.w12/w3`` -> ``mlp.fc1/fc2``, and for register
    models adding ``pos_embed[:, 0]`` to ``cls_token`` and keeping ``pos_embed[:, 1:]``
    (``no_embed_class=True`` in ``vit_*_patch14_reg4_dinov2``)."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}  # transformers 5 names
    emb = "embeddings."
    out = {
        "cls_token": sd[emb + "cls_token"],
        "pos_embed": sd[emb + "position_embeddings"],
        "patch_embed.proj.weight": sd[emb + "patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd[emb + "patch_embeddings.projection.bias"],
        "norm.weight": sd["layernorm.weight"],
        "norm.bias": sd["layernorm.bias"],
    }
    swiglu = model.config.use_swiglu_ffn
    fc1, fc2 = ("w12", "w3") if swiglu and layout == "original" else ("fc1", "fc2")
    for i in range(model.config.num_hidden_layers):
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        for leaf in ("weight", "bias"):
            out[f"{dst}norm1.{leaf}"] = sd[f"{src}norm1.{leaf}"]
            out[f"{dst}norm2.{leaf}"] = sd[f"{src}norm2.{leaf}"]
            out[f"{dst}attn.qkv.{leaf}"] = torch.cat(
                [sd[f"{src}attention.{n}_proj.{leaf}"] for n in "qkv"], dim=0
            )
            out[f"{dst}attn.proj.{leaf}"] = sd[f"{src}attention.o_proj.{leaf}"]
            if swiglu:  # packed [gate | up], activation on the first half
                out[f"{dst}mlp.{fc1}.{leaf}"] = torch.cat(
                    [sd[f"{src}mlp.gate_proj.{leaf}"], sd[f"{src}mlp.up_proj.{leaf}"]], dim=0
                )
                out[f"{dst}mlp.{fc2}.{leaf}"] = sd[f"{src}mlp.down_proj.{leaf}"]
            else:
                out[f"{dst}mlp.fc1.{leaf}"] = sd[f"{src}mlp.fc1.{leaf}"]
                out[f"{dst}mlp.fc2.{leaf}"] = sd[f"{src}mlp.fc2.{leaf}"]
        out[f"{dst}ls1.gamma"] = sd[f"{src}layer_scale1.lambda1"]
        out[f"{dst}ls2.gamma"] = sd[f"{src}layer_scale2.lambda1"]
    registers = emb + "register_tokens" in sd
    if layout == "original":
        out["mask_token"] = sd[emb + "mask_token"][None]  # [1, D] in the original files
        if registers:
            out["register_tokens"] = sd[emb + "register_tokens"]
    elif registers:
        out["reg_token"] = sd[emb + "register_tokens"]
        out["cls_token"] = out["cls_token"] + out["pos_embed"][:, :1]
        out["pos_embed"] = out["pos_embed"][:, 1:]
    return {k: v.contiguous() for k, v in out.items()}


@pytest.mark.parametrize(
    "name, layout",
    [("plain", "timm"), ("registers", "timm"), ("registers", "original"), ("swiglu", "original")],
)
def test_timm_and_original_layouts_give_the_hf_params(hf_models, tmp_path, name, layout):
    ref, path = hf_models[name]
    hf_kwargs, hf_params = load_dinov2(path)
    sd = timm_state_dict(ref, layout)
    if layout == "timm":
        safetensors.torch.save_file(sd, tmp_path / "model.safetensors")
        file = tmp_path / "model.safetensors"
    else:
        torch.save(sd, tmp_path / "pretrain.pth")
        file = tmp_path / "pretrain.pth"
    kwargs, params = load_dinov2(file, num_heads=HEADS[name])
    # The same network; only the LayerScale init (unused once loaded) differs between configs.
    assert {**kwargs, "layerscale_init": None} == {**hf_kwargs, "layerscale_init": None}
    chex.assert_trees_all_close(params, hf_params, rtol=0, atol=1e-7)
    if (name, layout) == ("registers", "timm"):
        x = np.random.default_rng(1).normal(size=(1, 70, 56, 3)).astype(np.float32)
        got = jax.jit(build(kwargs).apply)(params, x)
        want, _ = reference(ref, x)
        assert_tokens_match(got, want, kwargs["num_register_tokens"])


def test_hf_file_variants(hf_models, tmp_path):
    """Sharded safetensors, transformers 5's in-memory key names, and pytorch_model.bin."""
    ref, path = hf_models["swiglu"]
    _, want = load_dinov2(path)
    ref.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    ref.save_pretrained(tmp_path / "new_names", save_original_format=False)
    (tmp_path / "bin").mkdir()
    shutil.copy(path / "config.json", tmp_path / "bin")
    torch.save(
        safetensors.torch.load_file(path / "model.safetensors"),
        tmp_path / "bin" / "pytorch_model.bin",
    )
    for variant in ("sharded", "new_names", "bin"):
        _, params = load_dinov2(tmp_path / variant)
        chex.assert_trees_all_equal(params, want)


def test_hf_defaults_are_transformers_defaults():
    for cls, defaults in HF_DEFAULTS.items():
        config = getattr(transformers, cls.replace("Model", "Config"))()
        assert {k: getattr(config, k) for k in defaults} == defaults, cls


def test_conversion_errors(hf_models, tmp_path):
    ref, path = hf_models["plain"]
    sd = timm_state_dict(ref, "timm")
    safetensors.torch.save_file(sd, tmp_path / "ok.safetensors")
    with pytest.raises(ConvertError, match=r"width 32 is not a DINOv2 size .*; pass num_heads"):
        load_dinov2(tmp_path / "ok.safetensors")

    missing = {k: v for k, v in sd.items() if k != "blocks.1.attn.proj.bias"}
    safetensors.torch.save_file(missing, tmp_path / "missing.safetensors")
    with pytest.raises(ConvertError, match=r"missing key 'blocks\.1\.attn\.proj\.bias'"):
        load_dinov2(tmp_path / "missing.safetensors", num_heads=2)

    safetensors.torch.save_file(
        {**sd, "head.weight": torch.zeros(3, 32)}, tmp_path / "x.safetensors"
    )
    with pytest.raises(ConvertError, match=r"unexpected key 'head\.weight'"):
        load_dinov2(tmp_path / "x.safetensors", num_heads=2)

    bad = {**sd, "blocks.0.ls2.gamma": torch.zeros(31)}
    safetensors.torch.save_file(bad, tmp_path / "bad.safetensors")
    with pytest.raises(ConvertError, match=r"key 'blocks\.0\.ls2\.gamma' has shape \(31,\)"):
        load_dinov2(tmp_path / "bad.safetensors", num_heads=2)

    hf = tmp_path / "hf"
    shutil.copytree(path, hf)
    weights = safetensors.torch.load_file(hf / "model.safetensors")
    del weights["encoder.layer.1.attention.attention.value.bias"]
    safetensors.torch.save_file(weights, hf / "model.safetensors")
    with pytest.raises(
        ConvertError,
        match=r"missing key 'encoder\.layer\.1\.attention\.attention"
        r"\.value\.bias'",
    ):
        load_dinov2(hf)

    config = json.loads((hf / "config.json").read_text())
    config["architectures"] = ["Dinov2ForImageClassification"]
    (hf / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConvertError, match=r"describes 'Dinov2ForImageClassification'"):
        load_dinov2(hf)


@pytest.mark.parametrize("antialias", [False, True])
def test_bicubic_weights_are_torch_interpolate(antialias):
    rng = np.random.default_rng(0)
    for src, dst in [
        ((37, 37), (4, 5)),
        ((4, 4), (5, 3)),
        ((3, 3), (3, 2)),
        ((256, 200), (224, 224)),
        ((5, 6), (5, 6)),
    ]:
        x = rng.normal(size=(1, 2, *src)).astype(np.float32)
        want = F.interpolate(
            torch.from_numpy(x), size=dst, mode="bicubic", align_corners=False, antialias=antialias
        ).numpy()
        rows = bicubic_weights(src[0], dst[0], antialias)
        cols = bicubic_weights(src[1], dst[1], antialias)
        got = rows @ x @ cols.T
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())


def test_preprocess_matches_repa_style_torch_pipeline():
    """[-1, 1] -> [0, 1] -> ImageNet mean/std -> F.interpolate(bicubic), REPA's DINOv2 input."""
    images = np.random.default_rng(0).uniform(-1, 1, (2, 64, 48, 3)).astype(np.float32)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2) + 1) / 2
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    want = F.interpolate((x - mean) / std, size=(56, 42), mode="bicubic").permute(0, 2, 3, 1)
    got = preprocess(images, (56, 42))
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-5)
    assert preprocess(images).shape == (2, 56, 42, 3)  # sides rounded down to multiples of 14
    with pytest.raises(ValueError, match="multiple of the 14 px patch"):
        preprocess(images, 50)


def test_encoder_compiles_once_per_shape(hf_models):
    _, path = hf_models["plain"]
    kwargs, params = load_dinov2(path)
    model = build(kwargs)

    def fn(params, images):
        return encode(model, params, images, size=(42, 56), return_blocks=(0,))

    jitted = jax.jit(chex.assert_max_traces(fn, n=1))
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    first = jitted(params, images)
    other_params = jax.tree.map(lambda a: a * 1.5, params)
    jitted(other_params, rng.uniform(-1, 1, images.shape).astype(np.float32))  # no retrace
    with pytest.raises(AssertionError, match="traced > 1 times"):
        jitted(params, images[:1])  # a new shape traces again: the counter is live
    chex.clear_trace_counter()
    again = make_encoder(model, size=(42, 56), return_blocks=(0,))(params, images)
    chex.assert_trees_all_close(again, first, rtol=1e-6, atol=1e-6)
    assert first["patch_tokens"].shape == (2, 3, 4, 32)


def test_size_table_gives_the_published_parameter_counts():
    """DINOV2_VARIANTS at the 518 px table -> timm's param_count of vit_*_patch14_dinov2
    (pytorch-image-models results/benchmark-infer-*.csv: 22.06, 86.58, 304.37, 1136.48 M; the
    same for the reg4 models, whose 4 x D register weights do not show at this rounding)."""
    published = {"S": 22.06, "B": 86.58, "L": 304.37, "g": 1136.48}
    x = jax.ShapeDtypeStruct((1, 518, 518, 3), jax.numpy.float32)
    for variant, millions in published.items():
        model = DINOv2(**dinov2_kwargs(variant))
        shapes = jax.eval_shape(model.init, jax.random.key(0), x)
        boxes = jax.tree.leaves(shapes, is_leaf=lambda a: isinstance(a, nn.Partitioned))
        assert all(isinstance(a, nn.Partitioned) for a in boxes)  # every weight has axis names
        count = sum(int(np.prod(a.value.shape)) for a in boxes)
        assert round(count / 1e6, 2) == millions, variant
