"""DiT weights into latentjax's ``DiT``: the original release's ``.pt`` state dicts
(facebookresearch/DiT, read with ``torch.load(weights_only=True)``) and diffusers
``DiTTransformer2DModel`` directories.

The original layout maps one to one (``blocks.{i}`` -> ``block_{i}``, ``mlp.fc1`` -> ``fc1``,
``adaLN_modulation.1`` -> ``adaLN_modulation``, ``t_embedder.mlp.{0,2}`` -> ``t_embedder/fc{1,2}``,
``y_embedder.embedding_table`` -> ``y_embedder/embedding_table/embedding``; Linear weights are
transposed, the patch conv goes [D, C, p, p] -> [p, p, C, D]). diffusers' layout is first brought
back to the original one by the inverse of diffusers' ``scripts/convert_dit_to_diffusers.py``:
``to_q/to_k/to_v`` are concatenated into ``qkv``, ``proj_out_{1,2}`` are the final layer, and the
timestep/label embedders that diffusers copies into every block are taken from block 0 (they must
be equal in all blocks, since DiT shares one). Two numerical details of diffusers' DiT become
model options: its sinusoidal frequencies use ``dim/2 - 1`` (``downscale_freq_shift=1``) and its
MLP LayerNorm uses the config's ``norm_eps``.

The number of heads is not stored in an original checkpoint; it comes from the DiT paper's table
(by hidden size) unless given.
"""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from latentjax.config import base_config
from latentjax.convert.common import (
    ConvertError,
    conv_kernel,
    fill_params,
    flatten,
    identity,
    linear_kernel,
    read_json,
    read_safetensors,
    read_torch_state_dict,
)
from latentjax.factory import build_dit
from latentjax.models.dit import DIT_VARIANTS, sincos_2d

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
HEADS_BY_WIDTH = {hidden: heads for hidden, _, heads in DIT_VARIANTS.values()}


def model_section() -> ml_collections.ConfigDict:
    """A stage-2 ``model`` section with every field, plus the two that a converted DiT's
    description carries because no stage-1 run gives them: ``input_size``, ``in_channels``."""
    m = base_config("dit").model
    with m.unlocked():
        m.input_size = 0
        m.in_channels = 0
    return m


def build(m: ml_collections.ConfigDict):
    """The DiT a converted description's ``model`` section describes."""
    return build_dit(m, (m.input_size, m.input_size, m.in_channels))


def _need(sd: dict, key: str, source: str) -> np.ndarray:
    if key not in sd:
        raise ConvertError(f"{source}: missing key {key!r}; not a DiT state dict?")
    return sd[key]


def original_model_config(
    sd: dict[str, np.ndarray], source: str, num_heads: int | None = None
) -> ml_collections.ConfigDict:
    """Reads the architecture off the tensor shapes of an original-layout state dict."""
    patch = _need(sd, "x_embedder.proj.weight", source)
    hidden, in_ch, p, _ = patch.shape
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    tokens = _need(sd, "pos_embed", source).shape[-2]
    grid = math.isqrt(tokens)
    if grid * grid != tokens:
        raise ConvertError(f"{source}: pos_embed has {tokens} positions, not a square grid")
    out = _need(sd, "final_layer.linear.weight", source).shape[0] // (p * p)
    if out not in (in_ch, 2 * in_ch):
        raise ConvertError(f"{source}: {out} output channels for {in_ch} input channels")
    if num_heads is None:
        if hidden not in HEADS_BY_WIDTH:
            raise ConvertError(
                f"{source}: hidden size {hidden} is not in the DiT table; pass num_heads"
            )
        num_heads = HEADS_BY_WIDTH[hidden]
    m = model_section()
    m.input_size = grid * p
    m.patch_size = p
    m.in_channels = in_ch
    m.hidden_size = hidden
    m.depth = depth
    m.num_heads = num_heads
    m.mlp_ratio = _need(sd, "blocks.0.mlp.fc1.weight", source).shape[0] / hidden
    table = sd.get("y_embedder.embedding_table.weight")
    m.num_classes = 0 if table is None else table.shape[0] - 1  # the last row is the null class
    m.learn_sigma = out == 2 * in_ch
    m.timestep_freq_shift = 0.0
    m.mlp_norm_eps = 1e-6
    return m


def _source_key(path: str) -> tuple[str, object]:
    """A linen path of our DiT -> (original DiT key, transform)."""
    *mods, leaf = path.split("/")
    if leaf == "embedding":
        return "y_embedder.embedding_table.weight", identity
    names = []
    for mod in mods:
        if mod.startswith("block_"):
            names += ["blocks", mod.split("_")[1]]
        elif mod == "adaLN_modulation":
            names += ["adaLN_modulation", "1"]
        elif mod in ("fc1", "fc2") and names[:1] == ["t_embedder"]:
            names += ["mlp", "0" if mod == "fc1" else "2"]
        elif mod in ("fc1", "fc2"):
            names += ["mlp", mod]
        elif mod == "x_embedder":
            names += ["x_embedder", "proj"]
        else:
            names.append(mod)
    if leaf == "bias":
        return ".".join([*names, "bias"]), identity
    return ".".join([*names, "weight"]), conv_kernel if mods == ["x_embedder"] else linear_kernel


def convert_original(m: ml_collections.ConfigDict, sd: dict[str, np.ndarray], source: str) -> dict:
    """Original-layout tensors -> ``{"params": ...}`` for the DiT ``m`` describes."""
    model = build(m)
    x = jnp.zeros((1, m.input_size, m.input_size, m.in_channels))
    t, y = jnp.zeros((1,)), jnp.zeros((1,), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, t, y))
    expected = flatten(nn.meta.unbox(shapes)["params"])
    # The position embedding is a fixed sin-cos table, recomputed by the model: check it instead
    # of loading it (a mismatch means a different embedding scheme).
    pos = np.asarray(sd["pos_embed"]).reshape(-1, m.hidden_size)
    ours = sincos_2d(m.hidden_size, m.input_size // m.patch_size)
    if pos.shape != ours.shape or not np.allclose(pos, ours, atol=1e-4):
        raise ConvertError(f"{source}: pos_embed is not DiT's fixed 2-D sin-cos table")
    rest = {k: v for k, v in sd.items() if k != "pos_embed"}
    return {"params": fill_params(expected, rest, {p: _source_key(p) for p in expected}, source)}


def diffusers_to_original(
    sd: dict[str, np.ndarray], depth: int, source: str
) -> dict[str, np.ndarray]:
    """diffusers ``DiTTransformer2DModel`` tensors -> the original DiT key layout."""
    sd = dict(sd)

    def take(key: str) -> np.ndarray:
        _need(sd, key, source)
        return sd.pop(key)

    out = {
        "x_embedder.proj.weight": take("pos_embed.proj.weight"),
        "x_embedder.proj.bias": take("pos_embed.proj.bias"),
        "final_layer.adaLN_modulation.1.weight": take("proj_out_1.weight"),
        "final_layer.adaLN_modulation.1.bias": take("proj_out_1.bias"),
        "final_layer.linear.weight": take("proj_out_2.weight"),
        "final_layer.linear.bias": take("proj_out_2.bias"),
    }
    sd.pop("pos_embed.pos_embed", None)  # a buffer some versions save; recomputed
    emb = {
        "norm1.emb.timestep_embedder.linear_1": "t_embedder.mlp.0",
        "norm1.emb.timestep_embedder.linear_2": "t_embedder.mlp.2",
        "norm1.emb.class_embedder.embedding_table": "y_embedder.embedding_table",
    }
    per_block = {
        "norm1.linear": "adaLN_modulation.1",
        "attn1.to_out.0": "attn.proj",
        "ff.net.0.proj": "mlp.fc1",
        "ff.net.2": "mlp.fc2",
    }
    for i in range(depth):
        b = f"transformer_blocks.{i}"
        for src, dst in emb.items():
            for leaf in ("weight", "bias"):
                key = f"{b}.{src}.{leaf}"
                if leaf == "bias" and "embedding_table" in src:
                    continue
                value = take(key)
                if i == 0:
                    out[f"{dst}.{leaf}"] = value
                elif not np.array_equal(value, out[f"{dst}.{leaf}"]):
                    raise ConvertError(
                        f"{source}: {key} differs from block 0's; latentjax's DiT shares one "
                        "timestep/label embedder across blocks (as the original DiT)"
                    )
        for src, dst in per_block.items():
            for leaf in ("weight", "bias"):
                out[f"blocks.{i}.{dst}.{leaf}"] = take(f"{b}.{src}.{leaf}")
        for leaf in ("weight", "bias"):
            # [q | k | v] along the output features, as timm's fused qkv (Attention.qkv).
            out[f"blocks.{i}.attn.qkv.{leaf}"] = np.concatenate(
                [take(f"{b}.attn1.to_{n}.{leaf}") for n in "qkv"], axis=0
            )
    if sd:
        raise ConvertError(f"{source}: unexpected key {sorted(sd)[0]!r}; wrong model layout?")
    return out


def diffusers_model_config(dcfg: dict, source: str) -> ml_collections.ConfigDict:
    if dcfg.get("_class_name") != "DiTTransformer2DModel":
        raise ConvertError(
            f"{source}: _class_name is {dcfg.get('_class_name')!r}, not 'DiTTransformer2DModel'"
        )
    if dcfg.get("norm_type", "ada_norm_zero") != "ada_norm_zero":
        raise ConvertError(f"{source}: norm_type={dcfg['norm_type']!r} is not DiT's adaLN-Zero")
    if dcfg.get("activation_fn", "gelu-approximate") != "gelu-approximate":
        raise ConvertError(f"{source}: activation_fn={dcfg['activation_fn']!r} is not supported")
    heads, head_dim = dcfg.get("num_attention_heads", 16), dcfg.get("attention_head_dim", 72)
    in_ch = dcfg.get("in_channels", 4)
    out = dcfg.get("out_channels") or in_ch
    if out not in (in_ch, 2 * in_ch):
        raise ConvertError(f"{source}: out_channels {out} for in_channels {in_ch}")
    m = model_section()
    m.input_size = dcfg.get("sample_size", 32)
    m.patch_size = dcfg.get("patch_size", 2)
    m.in_channels = in_ch
    m.hidden_size = heads * head_dim
    m.depth = dcfg.get("num_layers", 28)
    m.num_heads = heads
    m.mlp_ratio = 4.0  # diffusers' FeedForward default (mult=4)
    m.num_classes = dcfg.get("num_embeds_ada_norm", 1000)
    m.learn_sigma = out == 2 * in_ch
    m.timestep_freq_shift = 1.0
    m.mlp_norm_eps = float(dcfg.get("norm_eps", 1e-5))
    return m


def is_diffusers_dit(path: str | Path) -> bool:
    cfg = Path(path) / "config.json"
    try:
        return cfg.is_file() and read_json(cfg, "").get("_class_name") == "DiTTransformer2DModel"
    except ConvertError:
        return False


def load_dit(
    path: str | Path, num_heads: int | None = None
) -> tuple[ml_collections.ConfigDict, dict]:
    """A DiT checkpoint -> (config, params): ``path`` is a diffusers ``DiTTransformer2DModel``
    directory (or a pipeline directory with a ``transformer/`` folder) or an original DiT ``.pt``
    state dict. ``config.model`` holds the ``DiT`` fields (see :func:`build`)."""
    path = Path(path)
    if path.is_dir() and not (path / "config.json").exists() and (path / "transformer").is_dir():
        path = path / "transformer"
    config = ml_collections.ConfigDict()
    config.stage = "dit"
    if path.is_dir():
        dcfg = read_json(path / "config.json", "diffusers DiTTransformer2DModel")
        m = diffusers_model_config(dcfg, str(path))
        source = str(path / WEIGHTS_FILE)
        sd = diffusers_to_original(read_safetensors(path / WEIGHTS_FILE), m.depth, source)
        sd["pos_embed"] = sincos_2d(m.hidden_size, m.input_size // m.patch_size)
        config.source = f"diffusers:{path}"
    else:
        sd = read_torch_state_dict(path)
        source = str(path)
        m = original_model_config(sd, source, num_heads)
        config.source = f"dit:{path}"
    if m.num_classes > 0 and "y_embedder.embedding_table.weight" not in sd:
        raise ConvertError(f"{source}: missing key 'y_embedder.embedding_table.weight'")
    config.model = m
    return config, convert_original(m, sd, source)
