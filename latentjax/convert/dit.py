"""DiT weights into latentjax's ``DiT``: the original release's ``.pt`` state dicts and the
checkpoints its ``train.py`` writes (facebookresearch/DiT, read with ``torch.load(
weights_only=True)``), and diffusers ``DiTTransformer2DModel`` directories (also the Hub's
``facebook/DiT-XL-2-256``, whose ``transformer/config.json`` still names the legacy
``Transformer2DModel``: diffusers loads a legacy config with ``norm_type="ada_norm_zero"`` as a
``DiTTransformer2DModel``, ``models/model_loading_utils.py:_CLASS_REMAPPING_DICT``, and so do
we), in any weights layout ``save_pretrained`` writes.

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

What an original ``.pt`` does not say is never guessed:

- **heads**: a state dict's shapes do not fix the number of attention heads. A ``train.py``
  checkpoint's ``args.model`` ("DiT-XL/2") names a row of DiT's table, which does; otherwise
  ``num_heads`` must be given (the error names the table's value for that width, right for the
  official checkpoints, not necessarily for one's own).
- **classes**: the label table has ``num_classes + 1`` rows when the model was trained with
  label dropout (the last row is the null class guidance uses; DiT's ``LabelEmbedder`` adds it
  only for ``dropout_prob > 0``) and ``num_classes`` rows without. ``args.num_classes`` or a
  given ``num_classes`` tells which; a model without the null row loads with
  ``null_class=False`` and samples without guidance. (A diffusers config's
  ``num_embeds_ada_norm`` is the class count, so its table tells the same.)

A ``train.py`` checkpoint (``{"model", "ema", "opt", "args"}``, ``args`` an
``argparse.Namespace``, the one class allowed besides tensors and plain containers) gives its
EMA weights by default, as DiT's own ``sample.py`` takes them, or ``entry="model"``.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from latentjax.config import base_config
from latentjax.convert.common import (
    ConvertError,
    complete_config,
    conv_kernel,
    fill_params,
    flatten,
    identity,
    linear_kernel,
    model_dir,
    read_json,
    read_pretrained_weights,
    read_torch_checkpoint,
    tensors_of,
)
from latentjax.convert.diffusers_defaults import DEFAULTS
from latentjax.factory import build_dit
from latentjax.models.dit import DIT_VARIANTS, dit_kwargs, sincos_2d
from latentjax.paths import Path

HEADS_BY_WIDTH = {hidden: heads for hidden, _, heads in DIT_VARIANTS.values()}
DIFFUSERS_CLASS = "DiTTransformer2DModel"
LEGACY_CLASS = "Transformer2DModel"
ENTRIES = ("ema", "model")  # the weights a train.py checkpoint holds, the default first
LABEL_TABLE = "y_embedder.embedding_table.weight"


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
    sd: dict[str, np.ndarray],
    source: str,
    num_heads: int | None = None,
    num_classes: int | None = None,
    args: Any = None,
) -> ml_collections.ConfigDict:
    """The architecture of an original-layout state dict: sizes from its tensor shapes, the
    head count and the class count from ``args`` (a train.py checkpoint's) or the caller (module
    docstring); what neither says raises :class:`ConvertError` naming the option to pass."""
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
    m = model_section()
    m.input_size = grid * p
    m.patch_size = p
    m.in_channels = in_ch
    m.hidden_size = hidden
    m.depth = depth
    m.num_heads = _heads(hidden, depth, p, source, num_heads, args)
    m.mlp_ratio = _need(sd, "blocks.0.mlp.fc1.weight", source).shape[0] / hidden
    table = sd.get(LABEL_TABLE)
    if table is None:
        m.num_classes, m.null_class = 0, True
    else:
        given = num_classes if num_classes is not None else getattr(args, "num_classes", None)
        m.num_classes, m.null_class = _classes(table.shape[0], given, source)
    m.learn_sigma = out == 2 * in_ch
    m.timestep_freq_shift = 0.0
    m.mlp_norm_eps = 1e-6
    return m


def _heads(hidden: int, depth: int, patch: int, source: str, given: int | None, args) -> int:
    """The head count: given, or from a train.py checkpoint's model name (checked against the
    tensors), never from the width alone (module docstring)."""
    named = None
    name = getattr(args, "model", None)
    if isinstance(name, str) and (m := re.fullmatch(r"DiT-(S|B|L|XL)/(\d+)", name)):
        row = dit_kwargs(f"{m[1]}/{m[2]}")
        if (row["hidden_size"], row["depth"], row["patch_size"]) != (hidden, depth, patch):
            raise ConvertError(
                f"{source}: args.model={name!r}, but the weights are hidden {hidden}, depth "
                f"{depth}, patch {patch}"
            )
        named = row["num_heads"]
    if given is not None:
        if named is not None and given != named:
            raise ConvertError(f"{source}: num_heads={given}, but args.model={name!r} has {named}")
        if hidden % given:
            raise ConvertError(f"{source}: hidden size {hidden} is not divisible by {given} heads")
        return int(given)
    if named is not None:
        return named
    hint = (
        f"; the DiT paper's table has {HEADS_BY_WIDTH[hidden]} heads at width {hidden}, right "
        "for the official checkpoints"
        if hidden in HEADS_BY_WIDTH
        else ""
    )
    raise ConvertError(
        f"{source}: the file does not say how many attention heads the model has; pass "
        f"--num-heads (num_heads= in Python){hint}"
    )


def _classes(rows: int, given: int | None, source: str) -> tuple[int, bool]:
    """(num_classes, null_class) of a label table of ``rows`` rows, given the class count (the
    table alone cannot tell a null row from a class)."""
    if given is None:
        raise ConvertError(
            f"{source}: the label table has {rows} rows: {rows - 1} classes and the null "
            f"(guidance) row of a model trained with label dropout, or {rows} classes without "
            f"it; pass --num-classes (num_classes= in Python): {rows - 1} for the official DiT "
            "checkpoints"
        )
    if rows == given + 1:
        return int(given), True
    if rows == given:
        return int(given), False  # trained without label dropout: no null row
    raise ConvertError(
        f"{source}: the label table has {rows} rows, which does not fit {given} classes"
    )


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
    """A diffusers DiT config (or a legacy ``Transformer2DModel`` one that diffusers loads as a
    DiT) -> the ``DiT`` fields; keys it leaves out take ``DiTTransformer2DModel``'s defaults.
    ``null_class`` is set later, from the label table."""
    cls = dcfg.get("_class_name")
    if cls == LEGACY_CLASS and dcfg.get("norm_type") != "ada_norm_zero":
        raise ConvertError(
            f"{source}: a {LEGACY_CLASS} with norm_type={dcfg.get('norm_type')!r} is not a DiT "
            "(diffusers loads only norm_type='ada_norm_zero' as DiTTransformer2DModel)"
        )
    if cls not in (DIFFUSERS_CLASS, LEGACY_CLASS):
        raise ConvertError(f"{source}: _class_name is {cls!r}, not {DIFFUSERS_CLASS!r}")
    c = complete_config(dcfg, DEFAULTS[DIFFUSERS_CLASS])
    if c["norm_type"] != "ada_norm_zero":
        raise ConvertError(f"{source}: norm_type={c['norm_type']!r} is not DiT's adaLN-Zero")
    if c["activation_fn"] != "gelu-approximate":
        raise ConvertError(f"{source}: activation_fn={c['activation_fn']!r} is not supported")
    if c["norm_elementwise_affine"] or not c["attention_bias"]:
        raise ConvertError(
            f"{source}: norm_elementwise_affine={c['norm_elementwise_affine']} / attention_bias="
            f"{c['attention_bias']} differ from DiT's (False / True)"
        )
    for key in ("num_embeds_ada_norm", "patch_size", "sample_size"):
        if not c[key]:  # a legacy config may hold null: not a class-conditional patch DiT
            raise ConvertError(f"{source}: {key}={c[key]!r}; a DiT needs it set")
    heads, head_dim = int(c["num_attention_heads"]), int(c["attention_head_dim"])
    in_ch = int(c["in_channels"])
    out = c["out_channels"] or in_ch
    if out not in (in_ch, 2 * in_ch):
        raise ConvertError(f"{source}: out_channels {out} for in_channels {in_ch}")
    m = model_section()
    m.input_size = int(c["sample_size"])
    m.patch_size = int(c["patch_size"])
    m.in_channels = in_ch
    m.hidden_size = heads * head_dim
    m.depth = int(c["num_layers"])
    m.num_heads = heads
    m.mlp_ratio = 4.0  # diffusers' FeedForward default (mult=4)
    m.num_classes = int(c["num_embeds_ada_norm"])
    m.learn_sigma = out == 2 * in_ch
    m.timestep_freq_shift = 1.0
    m.mlp_norm_eps = float(c["norm_eps"])
    return m


def is_diffusers_dit(path: str | Path) -> bool:
    cfg = model_dir(path, "transformer") / "config.json"
    try:
        return cfg.is_file() and read_json(cfg, "").get("_class_name") in (
            DIFFUSERS_CLASS,
            LEGACY_CLASS,
        )
    except (ConvertError, AttributeError):
        return False


def read_original(path: Path, entry: str | None = None) -> tuple[dict[str, np.ndarray], Any, str]:
    """An original DiT file -> (state dict, train.py's ``args`` or None, the entry taken: ""
    for a plain state dict). ``entry`` picks a train.py checkpoint's weights (default "ema")."""
    ckpt = read_torch_checkpoint(path, allow=("argparse.Namespace",))
    source = str(path)
    if isinstance(ckpt, Mapping) and any(k in ckpt for k in ENTRIES):
        entry = entry or ENTRIES[0]
        if entry not in ENTRIES:
            raise ConvertError(f"entry={entry!r}; a train.py checkpoint holds {ENTRIES}")
        if entry not in ckpt:
            raise ConvertError(f"{source}: no {entry!r} entry (it holds {sorted(map(str, ckpt))})")
        args = ckpt.get("args")
        if args is not None and not isinstance(args, argparse.Namespace):
            args = None  # only train.py's Namespace is read for sizes
        return tensors_of(ckpt[entry], f"{source}[{entry!r}]"), args, entry
    if entry is not None:
        raise ConvertError(f"{source} is a plain state dict: there is no {entry!r} entry to take")
    return tensors_of(ckpt, source), None, ""


def _check_given(name: str, given: int | None, value: int, source: str) -> None:
    if given is not None and given != value:
        raise ConvertError(f"{source}: {name}={given}, but config.json says {value}")


def load_dit(
    path: str | Path,
    num_heads: int | None = None,
    num_classes: int | None = None,
    entry: str | None = None,
) -> tuple[ml_collections.ConfigDict, dict]:
    """A DiT checkpoint -> (config, params): ``path`` is a diffusers DiT directory (or a pipeline
    directory with a ``transformer/`` folder), an original DiT ``.pt`` state dict, or a DiT
    ``train.py`` checkpoint (``entry``: "ema", the default, or "model"). ``num_heads`` and
    ``num_classes`` are needed where the file does not say them (module docstring).
    ``config.model`` holds the ``DiT`` fields (see :func:`build`); ``config.checkpoint_entry``
    the train.py entry taken ("" otherwise)."""
    path = model_dir(path, "transformer")
    config = ml_collections.ConfigDict()
    config.stage = "dit"
    config.checkpoint_entry = ""
    if path.is_dir():
        if entry is not None:
            raise ConvertError(f"{path}: a diffusers directory has no train.py entries")
        dcfg = read_json(path / "config.json", "diffusers DiTTransformer2DModel")
        m = diffusers_model_config(dcfg, str(path))
        _check_given("num_heads", num_heads, m.num_heads, str(path))
        _check_given("num_classes", num_classes, m.num_classes, str(path))
        weights, source = read_pretrained_weights(path)
        table = "transformer_blocks.0.norm1.emb.class_embedder.embedding_table.weight"
        if table in weights:
            m.num_classes, m.null_class = _classes(weights[table].shape[0], m.num_classes, source)
        sd = diffusers_to_original(weights, m.depth, source)
        sd["pos_embed"] = sincos_2d(m.hidden_size, m.input_size // m.patch_size)
        config.source = f"diffusers:{path}"
    else:
        sd, args, config.checkpoint_entry = read_original(path, entry)
        source = str(path)
        m = original_model_config(sd, source, num_heads, num_classes, args)
        config.source = f"dit:{path}"
    if m.num_classes > 0 and LABEL_TABLE not in sd:
        raise ConvertError(f"{source}: missing key {LABEL_TABLE!r}")
    config.model = m
    return config, convert_original(m, sd, source)
