"""Weights as users really have them: configs from older diffusers versions (keys missing), every
file layout save_pretrained writes (.bin, .fp16 variants, bf16, sharded), pipeline directories,
and directories that are not latentjax runs. Random-weight diffusers models, tiny configs."""

import copy
import inspect
import json

import diffusers
import numpy as np
import pytest
import torch
from test_convert_ae import make_diffusers_ae
from test_convert_dit import make_diffusers_dit

import latentjax
from latentjax.commands import main
from latentjax.convert import ConvertError, load_diffusers_autoencoder, load_dit
from latentjax.convert.common import flatten
from latentjax.convert.diffusers_defaults import DEFAULTS
from latentjax.errors import LatentjaxError

# The keys of sd-vae-ft-mse's config.json (diffusers 0.11 era): no scaling_factor, shift_factor,
# use_quant_conv, latents_mean/std, force_upcast or mid_block_add_attention.
OLD_VAE_KEYS = (
    "_class_name",
    "act_fn",
    "block_out_channels",
    "down_block_types",
    "in_channels",
    "latent_channels",
    "layers_per_block",
    "norm_num_groups",
    "out_channels",
    "sample_size",
    "up_block_types",
)


@pytest.mark.parametrize("cls", sorted(DEFAULTS))
def test_default_tables_are_the_installed_diffusers_defaults(cls):
    params = inspect.signature(getattr(diffusers, cls).__init__).parameters
    want = {k: p.default for k, p in params.items() if k != "self"}
    assert DEFAULTS[cls] == want


def test_an_old_config_takes_diffusers_defaults(tmp_path):
    """sd-vae-ft-mse's config.json has no scaling_factor: diffusers reads 0.18215 (its class
    default), and so must latentjax (a silent 1.0 scales the latents 5.5x)."""
    _, path = make_diffusers_ae(tmp_path, "sdxl")
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({k: cfg[k] for k in OLD_VAE_KEYS}))
    assert diffusers.AutoencoderKL.from_pretrained(path).config.scaling_factor == 0.18215
    ae = latentjax.load_autoencoder(path)
    assert (ae.latent_scale, ae.latent_shift) == (0.18215, 0.0)


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    """A tiny AutoencoderKL and the parameters latentjax converts from its safetensors file."""
    tmp = tmp_path_factory.mktemp("vae")
    model, path = make_diffusers_ae(tmp, "sdxl")
    return model, flatten(load_diffusers_autoencoder(path)[1])


LAYOUTS = {
    "bin": dict(safe_serialization=False),
    "fp16_variant": dict(variant="fp16"),
    "sharded": dict(max_shard_size="20KB"),
    "sharded_fp16_variant": dict(max_shard_size="20KB", variant="fp16"),
    "sharded_bin": dict(max_shard_size="20KB", safe_serialization=False),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_save_pretrained_layout_loads(tmp_path, vae, layout):
    model, want = vae
    model.save_pretrained(tmp_path / "vae", **LAYOUTS[layout])
    assert not (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").exists()
    got = flatten(load_diffusers_autoencoder(tmp_path / "vae")[1])
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def test_bf16_weights_load(tmp_path, vae):
    """Flux-era weights are often bfloat16, which numpy knows only through ml_dtypes (loaded
    with JAX): a guard that safetensors.numpy keeps reading them."""
    half = copy.deepcopy(vae[0]).to(torch.bfloat16)
    half.save_pretrained(tmp_path / "bf16")
    half.to(torch.float32).save_pretrained(tmp_path / "f32")  # the bf16 values, widened
    got = flatten(load_diffusers_autoencoder(tmp_path / "bf16")[1])
    want = flatten(load_diffusers_autoencoder(tmp_path / "f32")[1])
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def test_a_pipeline_directory_is_followed_into_vae(tmp_path, vae):
    model, want = vae
    pipe = tmp_path / "pipe"
    model.save_pretrained(pipe / "vae", safe_serialization=False)
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    got = flatten(latentjax.load_autoencoder(pipe).params)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    assert main(["convert", "ae", str(pipe), "--out", str(tmp_path / "out")]) == 0


def test_no_weights_names_what_is_there(tmp_path, vae, capsys):
    model, _ = vae
    model.save_pretrained(tmp_path / "vae")
    (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").rename(tmp_path / "vae" / "w.ckpt")
    with pytest.raises(ConvertError, match=r"no weights file .* holds: config\.json, w\.ckpt"):
        load_diffusers_autoencoder(tmp_path / "vae")


def test_dit_weights_in_other_layouts(tmp_path):
    model, path = make_diffusers_dit(tmp_path)
    want = flatten(load_dit(path)[1])
    for name, kw in (("bin", LAYOUTS["bin"]), ("sharded", dict(max_shard_size="10KB"))):
        model.save_pretrained(tmp_path / name, **kw)
        got = flatten(load_dit(tmp_path / name)[1])
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_wan_reads_weights_through_the_shared_reader(tmp_path):
    from latentjax.convert import load_wan_autoencoder

    torch.manual_seed(0)
    wan = diffusers.AutoencoderKLWan(
        base_dim=8,
        z_dim=4,
        dim_mult=[1, 2],
        num_res_blocks=1,
        temperal_downsample=[True],
        latents_mean=[0.0] * 4,
        latents_std=[1.0] * 4,
    )
    wan.save_pretrained(tmp_path / "wan", safe_serialization=False)
    wan.save_pretrained(tmp_path / "wan_st")
    got = flatten(load_wan_autoencoder(tmp_path / "wan")[1])
    want = flatten(load_wan_autoencoder(tmp_path / "wan_st")[1])
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])


def test_a_diffusers_directory_is_not_a_run(tmp_path, capsys):
    """config.json of another program is not a latentjax run config: a one-line error, not an
    AttributeError from the missing run keys."""
    from latentjax.run import Run

    path = tmp_path / "unet"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(LatentjaxError, match="'UNet2DConditionModel' is not supported"):
        latentjax.load_autoencoder(path)
    with pytest.raises(LatentjaxError, match="not a latentjax run: .* diffusers UNet2DCond"):
        Run.open(path)
    assert main(["eval", "--workdir", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a latentjax run" in err[0]
