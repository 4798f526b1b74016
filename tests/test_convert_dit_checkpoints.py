"""DiT checkpoints as users have them: the Hub's diffusers DiT (a legacy Transformer2DModel
config, .bin weights, in a pipeline), original .pt files whose head count or class count the
tensors cannot tell, DiT's own train.py checkpoints, and models trained without label dropout.
Random-weight models (tests/test_convert_dit.py's reference DiT and diffusers' class)."""

import argparse
import json

import diffusers
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from test_convert_dit import RefDiT, inputs, make_diffusers_dit, perturb, rel_l2, run_ours

import latentjax
from latentjax.commands import main
from latentjax.convert import ConvertError, load_dit
from latentjax.models.dit import sincos_2d


def run_ref(ref, x, t, y) -> np.ndarray:
    with torch.no_grad():
        out = ref(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(t), torch.from_numpy(y))
    return out.permute(0, 2, 3, 1).numpy()


def run_diffusers(model, x, t, y) -> np.ndarray:
    with torch.no_grad():
        out = model(
            torch.from_numpy(x).permute(0, 3, 1, 2),
            timestep=torch.from_numpy(t),
            class_labels=torch.from_numpy(y).long(),
        ).sample
    return out.permute(0, 2, 3, 1).numpy()


def test_the_hubs_legacy_transformer2d_config(tmp_path):
    """facebook/DiT-XL-2-256's transformer/config.json (diffusers 0.12) names the legacy
    Transformer2DModel and lacks norm_eps; its weights are a .bin. diffusers loads it as a
    DiTTransformer2DModel, and so does latentjax, through the pipeline directory."""
    model, path = make_diffusers_dit(tmp_path)
    c = model.config
    hub = {
        "_class_name": "Transformer2DModel",
        "_diffusers_version": "0.12.0.dev0",
        "activation_fn": "gelu-approximate",
        "attention_bias": True,
        "attention_head_dim": c.attention_head_dim,
        "cross_attention_dim": None,
        "dropout": 0.0,
        "in_channels": c.in_channels,
        "norm_elementwise_affine": False,
        "norm_num_groups": 32,
        "norm_type": "ada_norm_zero",
        "num_attention_heads": c.num_attention_heads,
        "num_embeds_ada_norm": c.num_embeds_ada_norm,
        "num_layers": c.num_layers,
        "num_vector_embeds": None,
        "only_cross_attention": False,
        "out_channels": c.out_channels,
        "patch_size": c.patch_size,
        "sample_size": c.sample_size,
        "upcast_attention": False,
        "use_linear_projection": False,
    }
    pipe = tmp_path / "DiT-XL-2-256"
    model.save_pretrained(pipe / "transformer", safe_serialization=False)
    (pipe / "transformer" / "config.json").write_text(json.dumps(hub))
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline"}))
    reloaded = diffusers.Transformer2DModel.from_pretrained(pipe / "transformer").eval()
    assert type(reloaded) is diffusers.DiTTransformer2DModel  # diffusers' remapping

    dit = latentjax.load_dit(pipe)
    x, t, y = inputs(8, 4, 6)
    assert rel_l2(dit(x, t, y), run_diffusers(reloaded, x, t, y)) <= 1e-4
    # Another legacy Transformer2DModel is not a DiT: named.
    hub["norm_type"] = "layer_norm"
    (pipe / "transformer" / "config.json").write_text(json.dumps(hub))
    with pytest.raises(ConvertError, match="norm_type='layer_norm' is not a DiT"):
        load_dit(pipe)


def test_the_head_count_is_never_guessed(tmp_path):
    """hidden 384 is DiT-S's width (6 heads), but this model has 12: the file cannot tell, so
    loading without num_heads is refused and names the table's value; with it, parity."""
    torch.manual_seed(0)
    ref = RefDiT(size=4, p=2, cin=4, d=384, depth=1, heads=12, classes=3, learn_sigma=False)
    perturb(ref, 0.05)
    with torch.no_grad():  # pos_embed is a fixed table (perturb touched it): restore it
        ref.pos_embed.copy_(torch.from_numpy(sincos_2d(384, 2))[None])
    torch.save(ref.state_dict(), tmp_path / "dit.pt")
    with pytest.raises(ConvertError, match=r"pass --num-heads .*table has 6 heads at width 384"):
        load_dit(tmp_path / "dit.pt")
    config, params = load_dit(tmp_path / "dit.pt", num_heads=12, num_classes=3)
    x, t, y = inputs(4, 4, 3)
    assert rel_l2(run_ours(config, params, x, t, y), run_ref(ref, x, t, y)) <= 1e-4


def _train_args(**kw) -> argparse.Namespace:
    """The argparse.Namespace DiT's train.py stores in its checkpoints."""
    args = dict(
        data_path="/data/imagenet/train",
        results_dir="results",
        model="DiT-XL/2",
        image_size=256,
        num_classes=1000,
        epochs=1400,
        global_batch_size=256,
        global_seed=0,
        vae="ema",
        num_workers=4,
        log_every=100,
        ckpt_every=50_000,
    )
    return argparse.Namespace(**{**args, **kw})


def _train_checkpoint(ref: torch.nn.Module, args: argparse.Namespace, path) -> dict:
    """A train.py checkpoint whose EMA differs from the raw weights in one tensor."""
    model = ref.state_dict()
    ema = dict(model)
    ema["final_layer.linear.bias"] = model["final_layer.linear.bias"] + 1.0
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-4, weight_decay=0)
    torch.save({"model": model, "ema": ema, "opt": opt.state_dict(), "args": args}, path)
    return {"model": model, "ema": ema}


def test_a_train_py_checkpoint(tmp_path, capsys):
    """{"model", "ema", "opt", "args"}: read with an argparse.Namespace allowed and nothing
    else; the EMA weights by default (said), the raw ones on request; heads from args.model,
    classes from args.num_classes."""
    torch.manual_seed(0)
    ref = RefDiT(size=4, p=2, cin=4, d=384, depth=12, heads=6, classes=3, learn_sigma=True)
    weights = _train_checkpoint(ref, _train_args(model="DiT-S/2", num_classes=3), tmp_path / "a.pt")
    config, params = load_dit(tmp_path / "a.pt")
    m = config.model
    assert (m.num_heads, m.depth, m.num_classes, m.null_class) == (6, 12, 3, True)
    assert config.checkpoint_entry == "ema"
    bias = params["params"]["final_layer"]["linear"]["bias"]
    np.testing.assert_array_equal(bias, weights["ema"]["final_layer.linear.bias"].numpy())
    config, params = load_dit(tmp_path / "a.pt", entry="model")
    assert config.checkpoint_entry == "model"
    bias = params["params"]["final_layer"]["linear"]["bias"]
    np.testing.assert_array_equal(bias, weights["model"]["final_layer.linear.bias"].numpy())

    # A model name that does not fit the weights is named; a name outside DiT's table needs
    # --num-heads. The CLI says which entry it took.
    small = RefDiT(size=4, p=2, cin=4, d=32, depth=1, heads=2, classes=3, learn_sigma=True)
    _train_checkpoint(small, _train_args(num_classes=3), tmp_path / "b.pt")
    with pytest.raises(ConvertError, match=r"args.model='DiT-XL/2', but the weights are hidden 32"):
        load_dit(tmp_path / "b.pt")
    _train_checkpoint(small, _train_args(model="SiT-S/2", num_classes=3), tmp_path / "c.pt")
    with pytest.raises(ConvertError, match="pass --num-heads"):
        load_dit(tmp_path / "c.pt")
    capsys.readouterr()
    argv = ["convert", "dit", str(tmp_path / "c.pt"), "--out", str(tmp_path / "out")]
    assert main([*argv, "--num-heads", "2"]) == 0
    assert "took the 'ema' weights of the train.py checkpoint" in capsys.readouterr().out


def test_an_original_dit_without_label_dropout(tmp_path):
    """3 classes and no null row: the table's 3 rows cannot say so by themselves (2 classes +
    null is as likely), so num_classes is required; given, class 2 is a class, not the null."""
    torch.manual_seed(0)
    ref = RefDiT(
        size=4, p=2, cin=4, d=32, depth=1, heads=2, classes=3, learn_sigma=False, null=False
    )
    perturb(ref)
    with torch.no_grad():
        ref.pos_embed.copy_(torch.from_numpy(sincos_2d(32, 2))[None])
    torch.save(ref.state_dict(), tmp_path / "dit.pt")
    with pytest.raises(ConvertError, match=r"3 rows.*pass --num-classes.*: 2 for the official"):
        load_dit(tmp_path / "dit.pt", num_heads=2)
    config, params = load_dit(tmp_path / "dit.pt", num_heads=2, num_classes=3)
    assert (config.model.num_classes, config.model.null_class) == (3, False)
    x, t, _ = inputs(4, 4, 3)
    y = np.array([0, 1, 2], np.int32)
    assert rel_l2(run_ours(config, params, x, t, y), run_ref(ref, x, t, y)) <= 1e-4


def test_a_diffusers_dit_without_the_null_row(tmp_path):
    """A label table of num_embeds_ada_norm rows (no null row) is detected, not misread."""
    model, path = make_diffusers_dit(tmp_path)
    weights = path / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(weights))
    for key in [k for k in sd if k.endswith("class_embedder.embedding_table.weight")]:
        sd[key] = sd[key][:-1]  # 6 rows for num_embeds_ada_norm=6
    save_file(sd, str(weights))
    config, params = load_dit(path)
    assert (config.model.num_classes, config.model.null_class) == (6, False)
    x, t, _ = inputs(8, 4, 6)
    y = np.array([0, 3, 5], np.int32)  # the kept rows are the same classes
    assert rel_l2(run_ours(config, params, x, t, y), run_diffusers(model.eval(), x, t, y)) <= 1e-4


def test_dits_guidance_channels_in_the_sampler():
    """guidance_channels=k guides channels [0, k) and keeps the conditional output in the rest
    (DiT's forward_with_cfg with k=3): one Euler step of the rectified flow from t=1 to 0 is
    x0 = noise - v, checked against that closed form; k=0 guides every channel."""
    from latentjax.diffusion.samplers import sample

    cond = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    uncond = np.array([-1.0, 0.5, 2.0, 0.0], np.float32)
    null = 5

    def apply_fn(params, x, t, y):  # the velocity: cond/uncond constants by label
        del params, t
        v = jnp.where((y == null)[:, None], uncond, cond)  # [B, C]
        return jnp.broadcast_to(v[:, None, None, :], x.shape)

    noise = np.random.default_rng(0).normal(size=(2, 2, 2, 4)).astype(np.float32)
    labels = np.array([0, 1], np.int32)
    w = 3.0
    guided = uncond + w * (cond - uncond)
    for k, v in ((3, np.concatenate([guided[:3], cond[3:]])), (0, guided)):
        x0 = sample(
            apply_fn,
            None,
            noise,
            labels,
            path="linear",
            prediction="velocity",
            num_steps=1,
            sampler="euler",
            cfg_scale=w,
            null_label=null,
            guidance_channels=k,
        )
        np.testing.assert_allclose(x0, noise - v, rtol=1e-6, atol=1e-6)
