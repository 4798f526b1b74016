"""DINOv2 weights into latentjax's ``DINOv2`` (``latentjax/models/dinov2.py``).

Two layouts are read, both returning ``(kwargs of DINOv2, {"params": ...})``:

- Hugging Face transformers: a directory written by ``Dinov2Model.save_pretrained`` or
  ``Dinov2WithRegistersModel.save_pretrained`` (``config.json`` and ``model.safetensors``, a
  sharded ``model.safetensors.index.json``, or ``pytorch_model.bin``). The architecture comes from
  ``config.json``, with transformers' own defaults for absent keys. Both key spellings are read:
  the one on the Hub and written by ``save_pretrained`` (``attention.attention.query``,
  ``mlp.weights_in``, ...) and transformers 5's in-memory one (``attention.q_proj``,
  ``mlp.gate_proj``, ..., written with ``save_original_format=False``).
- timm state dicts of ``vit_{small,base,large,giant}_patch14{,_reg4}_dinov2`` (safetensors or a
  weights-only ``.pth``), and the original facebookresearch/dinov2 ``*_pretrain.pth`` files, which
  timm's ``_convert_dinov2`` turns into timm's layout by dropping ``mask_token``, renaming
  ``register_tokens`` -> ``reg_token`` and ``mlp.w12/w3`` -> ``mlp.fc1/fc2``. timm's register
  models are ``no_embed_class``: their ``pos_embed`` has no CLS position, which timm has added
  into ``cls_token``; the others keep the CLS position as row 0 of ``pos_embed``. Both are read
  by the table's length (g^2 or g^2 + 1). Width, depth, patch, grid, registers, MLP width and
  FFN kind are read from the shapes; the head count is not in them: it comes from
  ``DINOV2_VARIANTS`` by width, or from ``num_heads``.

Everything goes through timm's key layout, then one table to the linen paths (``fill_params``),
so a missing, unused or misshapen tensor is one ``ConvertError`` naming its key.

The CLS position is folded into ``cls_token`` on the way (see the model's docstring). The
position table is resampled as transformers does for the same family: plain bicubic for
``Dinov2Model`` and the register-free timm models, antialiased for ``Dinov2WithRegistersModel``
and the register models (timm's own ``dynamic_img_size`` path antialiases for both; set
``interpolate_antialias`` in the returned kwargs to change it).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

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
from latentjax.models.dinov2 import DINOV2_VARIANTS, DINOv2, swiglu_hidden
from latentjax.paths import Path, as_path

HEADS_BY_WIDTH = {hidden: heads for hidden, _, heads, _ in DINOV2_VARIANTS.values()}

# transformers 5.24's defaults for keys a config.json may omit (configuration_dinov2.py,
# configuration_dinov2_with_registers.py; tests/test_dinov2.py checks them against the classes).
# Note the registers config's patch size default of 16, not DINOv2's 14.
_HF_COMMON = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "mlp_ratio": 4,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-6,
    "image_size": 224,
    "qkv_bias": True,
    "layerscale_value": 1.0,
    "use_swiglu_ffn": False,
}
HF_DEFAULTS = {
    "Dinov2Model": {**_HF_COMMON, "patch_size": 14},
    "Dinov2WithRegistersModel": {**_HF_COMMON, "patch_size": 16, "num_register_tokens": 4},
}
_REGISTERS = ("Dinov2WithRegistersModel",)
_HF_MODEL_TYPES = {"dinov2": "Dinov2Model", "dinov2_with_registers": "Dinov2WithRegistersModel"}
HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def build(kwargs: dict[str, Any]) -> DINOv2:
    return DINOv2(**kwargs)


def _square(value: Any, what: str, source: str) -> int:
    """An int, or a [n, n] list (transformers accepts both for image and patch sizes)."""
    if isinstance(value, list | tuple):
        if len(value) != 2 or value[0] != value[1]:
            raise ConvertError(f"{source}: {what} {value} is not square; DINOv2 tables are square")
        value = value[0]
    return int(value)


# ---------------------------------------------------------------------------------------------
# Hugging Face transformers


def hf_model_config(cfg: dict, source: str) -> dict[str, Any]:
    """config.json -> DINOv2 kwargs."""
    archs = cfg.get("architectures") or [_HF_MODEL_TYPES.get(cfg.get("model_type"), None)]
    cls = archs[0]
    if cls not in HF_DEFAULTS:
        raise ConvertError(
            f"{source}: config.json describes {cls!r}; latentjax reads "
            "Dinov2Model and Dinov2WithRegistersModel directories"
        )
    defaults = HF_DEFAULTS[cls]

    def get(key: str) -> Any:
        return cfg.get(key, defaults[key])

    if get("hidden_act") != "gelu":
        raise ConvertError(f"{source}: hidden_act={get('hidden_act')!r} is not supported (gelu)")
    kwargs = {
        "hidden_size": int(get("hidden_size")),
        "depth": int(get("num_hidden_layers")),
        "num_heads": int(get("num_attention_heads")),
        "mlp_ratio": float(get("mlp_ratio")),
        "ffn_layer": "swiglu" if get("use_swiglu_ffn") else "mlp",
        "num_register_tokens": int(get("num_register_tokens")) if cls in _REGISTERS else 0,
        "patch_size": _square(get("patch_size"), "patch_size", source),
        "image_size": _square(get("image_size"), "image_size", source),
        "layerscale_init": float(get("layerscale_value")),
        "layer_norm_eps": float(get("layer_norm_eps")),
        "qkv_bias": bool(get("qkv_bias")),
        "interpolate_antialias": cls in _REGISTERS,
    }
    return kwargs


def read_hf_weights(path: Path) -> tuple[dict[str, np.ndarray], str]:
    """The tensors of a save_pretrained directory -> (state dict, file name for messages)."""
    if (path / "model.safetensors").is_file():
        return read_safetensors(path / "model.safetensors"), str(path / "model.safetensors")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError) as e:
            raise ConvertError(f"{index} is not a safetensors index ({e})") from e
        sd = {}
        for shard in shards:
            sd.update(read_safetensors(path / shard))
        return sd, str(index)
    if (path / "pytorch_model.bin").is_file():
        return read_torch_state_dict(path / "pytorch_model.bin"), str(path / "pytorch_model.bin")
    raise ConvertError(f"{path}: no weights file (looked for {', '.join(HF_WEIGHTS)})")


def hf_to_timm(
    sd: dict[str, np.ndarray], kwargs: dict[str, Any], source: str
) -> dict[str, np.ndarray]:
    """transformers' Dinov2(WithRegisters)Model tensors -> timm's key layout."""
    sd = dict(sd)
    # transformers 5 renames the Hub's keys on load (conversion_mapping.py) and back on save; a
    # file saved with save_original_format=False holds the new names.
    new_names = any(".attention.q_proj." in k for k in sd)

    def take(key: str) -> np.ndarray:
        if key not in sd:
            raise ConvertError(f"{source}: missing key {key!r}; not a DINOv2 state dict?")
        return sd.pop(key)

    # The mask token replaces masked patches in iBOT's pretraining objective; unused here.
    sd.pop("embeddings.mask_token", None)
    out = {
        "cls_token": take("embeddings.cls_token"),
        "pos_embed": take("embeddings.position_embeddings"),
        "norm.weight": take("layernorm.weight"),
        "norm.bias": take("layernorm.bias"),
    }
    for leaf in ("weight", "bias"):
        out[f"patch_embed.proj.{leaf}"] = take(f"embeddings.patch_embeddings.projection.{leaf}")
    if kwargs["num_register_tokens"]:
        out["reg_token"] = take("embeddings.register_tokens")
    if new_names:
        qkv_names = [f"attention.{n}_proj" for n in "qkv"]
        proj_name = "attention.o_proj"
    else:
        qkv_names = [f"attention.attention.{n}" for n in ("query", "key", "value")]
        proj_name = "attention.output.dense"
    leaves = ("weight", "bias") if kwargs["qkv_bias"] else ("weight",)
    for i in range(kwargs["depth"]):
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        for name in ("norm1", "norm2"):
            for leaf in ("weight", "bias"):
                out[f"{dst}{name}.{leaf}"] = take(f"{src}{name}.{leaf}")
        out[f"{dst}ls1.gamma"] = take(f"{src}layer_scale1.lambda1")
        out[f"{dst}ls2.gamma"] = take(f"{src}layer_scale2.lambda1")
        for leaf in leaves:
            # [q | k | v] along the output features, as the fused qkv of timm and DINOv2.
            out[f"{dst}attn.qkv.{leaf}"] = np.concatenate(
                [take(f"{src}{n}.{leaf}") for n in qkv_names], axis=0
            )
        for leaf in ("weight", "bias"):
            out[f"{dst}attn.proj.{leaf}"] = take(f"{src}{proj_name}.{leaf}")
            if kwargs["ffn_layer"] == "mlp":
                out[f"{dst}mlp.fc1.{leaf}"] = take(f"{src}mlp.fc1.{leaf}")
                out[f"{dst}mlp.fc2.{leaf}"] = take(f"{src}mlp.fc2.{leaf}")
            elif new_names:
                gate, up = take(f"{src}mlp.gate_proj.{leaf}"), take(f"{src}mlp.up_proj.{leaf}")
                out[f"{dst}mlp.fc1.{leaf}"] = np.concatenate([gate, up], axis=0)
                out[f"{dst}mlp.fc2.{leaf}"] = take(f"{src}mlp.down_proj.{leaf}")
            else:  # [gate | up] packed, as timm's SwiGLUPacked and DINOv2's w12
                out[f"{dst}mlp.fc1.{leaf}"] = take(f"{src}mlp.weights_in.{leaf}")
                out[f"{dst}mlp.fc2.{leaf}"] = take(f"{src}mlp.weights_out.{leaf}")
    if sd:
        raise ConvertError(
            f"{source}: unexpected key {sorted(sd)[0]!r} ({len(sd)} unused); wrong model layout?"
        )
    return out


def load_dinov2_hf(path: str | Path) -> tuple[dict[str, Any], dict]:
    """A transformers ``Dinov2Model``/``Dinov2WithRegistersModel`` directory -> (kwargs, params)."""
    path = as_path(path)
    kwargs = hf_model_config(read_json(path / "config.json", "transformers DINOv2"), str(path))
    sd, source = read_hf_weights(path)
    return kwargs, timm_to_params(kwargs, hf_to_timm(sd, kwargs, source), source)


# ---------------------------------------------------------------------------------------------
# timm (and the original facebookresearch/dinov2 files)


def _need(sd: dict, key: str, source: str) -> np.ndarray:
    if key not in sd:
        raise ConvertError(f"{source}: missing key {key!r}; not a DINOv2 state dict?")
    return sd[key]


def original_to_timm(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """facebookresearch/dinov2 keys -> timm's (the renames of timm's ``_convert_dinov2``; the
    CLS position is folded later for every layout). timm files pass through unchanged."""
    out = {}
    for key, value in sd.items():
        if key == "mask_token":
            continue
        key = "reg_token" if key == "register_tokens" else key
        key = re.sub(r"^(blocks\.\d+\.mlp)\.w12\.", r"\1.fc1.", key)
        key = re.sub(r"^(blocks\.\d+\.mlp)\.w3\.", r"\1.fc2.", key)
        out[key] = value
    return out


def _pos_grid(n: int, source: str) -> tuple[int, bool]:
    """Rows of pos_embed -> (grid side, whether row 0 is the CLS position)."""
    for with_cls in (False, True):
        g = math.isqrt(n - with_cls)
        if g > 0 and g * g == n - with_cls:
            return g, with_cls
    raise ConvertError(
        f"{source}: pos_embed has {n} positions, neither a square grid nor one plus a CLS position"
    )


def timm_model_config(
    sd: dict[str, np.ndarray], source: str, num_heads: int | None = None
) -> dict[str, Any]:
    """Reads the architecture off the tensor shapes of a timm-layout DINOv2 state dict."""
    hidden, _, patch, _ = _need(sd, "patch_embed.proj.weight", source).shape
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    grid, _ = _pos_grid(_need(sd, "pos_embed", source).shape[1], source)
    regs = sd["reg_token"].shape[1] if "reg_token" in sd else 0
    fc1 = _need(sd, "blocks.0.mlp.fc1.weight", source).shape[0]
    fc2 = _need(sd, "blocks.0.mlp.fc2.weight", source).shape[1]
    if fc2 == fc1:
        ffn, mlp_ratio = "mlp", fc1 / hidden
        if int(hidden * mlp_ratio) != fc1:
            raise ConvertError(f"{source}: MLP width {fc1} is not a ratio of width {hidden}")
    elif fc1 == 2 * fc2:  # [gate | up] packed into fc1 (SwiGLU, DINOv2's ViT-g)
        ffn, mlp_ratio = "swiglu", 4.0
        if swiglu_hidden(hidden, mlp_ratio) != fc2:
            raise ConvertError(
                f"{source}: SwiGLU width {fc2} is not DINOv2's {swiglu_hidden(hidden, mlp_ratio)} "
                f"for width {hidden}"
            )
    else:
        raise ConvertError(f"{source}: mlp.fc1 {fc1} / mlp.fc2 {fc2} widths fit no DINOv2 FFN")
    if num_heads is None:
        if hidden not in HEADS_BY_WIDTH:
            raise ConvertError(
                f"{source}: width {hidden} is not a DINOv2 size ({sorted(HEADS_BY_WIDTH)}); "
                "pass num_heads"
            )
        num_heads = HEADS_BY_WIDTH[hidden]
    return {
        "hidden_size": int(hidden),
        "depth": depth,
        "num_heads": int(num_heads),
        "mlp_ratio": float(mlp_ratio),
        "ffn_layer": ffn,
        "num_register_tokens": int(regs),
        "patch_size": int(patch),
        "image_size": int(grid * patch),
        "layerscale_init": 1e-5,  # timm's init_values for DINOv2; only matters for a fresh init
        "layer_norm_eps": 1e-6,  # timm's LayerNorm default, DINOv2's eps
        "qkv_bias": "blocks.0.attn.qkv.bias" in sd,
        "interpolate_antialias": regs > 0,
    }


def _source_key(path: str) -> tuple[str, Any]:
    """A linen path of our DINOv2 -> (timm key, transform)."""
    *mods, leaf = path.split("/")
    if not mods:  # the token and position tables
        return {"reg_tokens": "reg_token"}.get(leaf, leaf), identity
    if mods == ["patch_embed"]:
        return f"patch_embed.proj.{'weight' if leaf == 'kernel' else 'bias'}", (
            conv_kernel if leaf == "kernel" else identity
        )
    names = []
    for mod in mods:
        if mod.startswith("block_"):
            names += ["blocks", mod.split("_")[1]]
        elif mod in ("fc1", "fc2"):
            names += ["mlp", mod]
        elif mod in ("gate_proj", "up_proj"):
            names += ["mlp", "fc1"]
        elif mod == "down_proj":
            names += ["mlp", "fc2"]
        else:
            names.append(mod)
    if leaf in ("ls1", "ls2"):
        return ".".join([*names, leaf, "gamma"]), identity
    key = ".".join([*names, {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)])
    fn = linear_kernel if leaf == "kernel" else identity
    if mods[-1] in ("gate_proj", "up_proj"):  # one half of the packed [gate | up]
        half = 0 if mods[-1] == "gate_proj" else 1
        return key, lambda w, fn=fn, half=half: fn(np.split(w, 2, axis=0)[half])
    return key, fn


def timm_to_params(kwargs: dict[str, Any], sd: dict[str, np.ndarray], source: str) -> dict:
    """timm-layout tensors -> ``{"params": ...}`` for ``DINOv2(**kwargs)``."""
    sd = dict(sd)
    grid, with_cls = _pos_grid(_need(sd, "pos_embed", source).shape[1], source)
    if with_cls:  # fold the CLS position into the CLS token (the model's docstring)
        pos = sd["pos_embed"]
        sd["cls_token"] = _need(sd, "cls_token", source) + pos[:, :1]
        sd["pos_embed"] = pos[:, 1:]
    channels = _need(sd, "patch_embed.proj.weight", source).shape[1]
    model = build(kwargs)
    x = jnp.zeros((1, kwargs["image_size"], kwargs["image_size"], channels))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    expected = flatten(nn.meta.unbox(shapes)["params"])
    return {"params": fill_params(expected, sd, {p: _source_key(p) for p in expected}, source)}


def load_dinov2_timm(path: str | Path, num_heads: int | None = None) -> tuple[dict[str, Any], dict]:
    """A timm (or original DINOv2) state dict file, ``.safetensors`` or weights-only ``.pth``,
    -> (kwargs, params). ``num_heads`` is needed when the width is not in ``DINOV2_VARIANTS``."""
    path = as_path(path)
    sd = read_safetensors(path) if path.suffix == ".safetensors" else read_torch_state_dict(path)
    sd = original_to_timm(sd)
    kwargs = timm_model_config(sd, str(path), num_heads)
    return kwargs, timm_to_params(kwargs, sd, str(path))


def load_dinov2(path: str | Path, num_heads: int | None = None) -> tuple[dict[str, Any], dict]:
    """A DINOv2 checkpoint -> (kwargs of ``DINOv2``, ``{"params": ...}``): a transformers
    directory (:func:`load_dinov2_hf`) or a timm/original state dict file
    (:func:`load_dinov2_timm`)."""
    path = as_path(path)
    if path.is_dir():
        if num_heads is not None:
            raise ConvertError(f"{path}: num_heads is read from config.json; do not pass it")
        return load_dinov2_hf(path)
    return load_dinov2_timm(path, num_heads)
