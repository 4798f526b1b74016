"""diffusers AutoencoderKL -> latentjax: random-weight diffusers models of each layout are saved,
converted and run in both frameworks on the same inputs (relative L2 error <= 1e-4, float32)."""

import json

import diffusers
import jax
import numpy as np
import pytest
import torch

from latentjax.convert import ConvertError, load_diffusers_autoencoder
from latentjax.factory import build_autoencoder as build

# Tiny versions of the published layouts (scaling/shift factors are the real ones).
LAYOUTS = {
    "sd": dict(block_out_channels=(8, 16, 16), latent_channels=4, scaling_factor=0.18215),
    "sdxl": dict(block_out_channels=(8, 16), latent_channels=4, scaling_factor=0.13025),
    "sd3": dict(
        block_out_channels=(8, 16),
        latent_channels=16,
        scaling_factor=1.5305,
        shift_factor=0.0609,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ),
    "flux": dict(
        block_out_channels=(8, 16),
        latent_channels=16,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
        layers_per_block=2,
    ),
}


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def make_diffusers_ae(tmp_path, layout: str, seed: int = 0):
    torch.manual_seed(seed)
    kw = dict(LAYOUTS[layout])
    n = len(kw["block_out_channels"])
    vae = diffusers.AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        norm_num_groups=4,
        sample_size=16,
        **kw,
    ).eval()
    # Random init leaves GroupNorm at identity and biases at zero: perturb them so the
    # converter's handling of every tensor is checked.
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    path = tmp_path / layout
    vae.save_pretrained(path)
    return vae, path


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_diffusers_autoencoder_parity(tmp_path, layout):
    vae, path = make_diffusers_ae(tmp_path, layout)
    config, params = load_diffusers_autoencoder(path)
    kw = LAYOUTS[layout]
    stats = config.latent_stats.to_dict()
    assert stats == {"shift": kw.get("shift_factor", 0.0), "scale": kw["scaling_factor"]}
    assert bool(config.model.embed_dim) == kw.get("use_quant_conv", True)
    model = build(config.model)

    x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    with torch.no_grad():
        ref_mean = vae.encode(torch.from_numpy(x).permute(0, 3, 1, 2)).latent_dist.mean
        ref_mean = ref_mean.permute(0, 2, 3, 1).numpy()
    mean = jax.jit(lambda p, x: model.apply(p, x, method=model.encode).mean)(params, x)
    assert mean.shape == ref_mean.shape
    assert rel_l2(mean, ref_mean) <= 1e-4

    z = np.random.default_rng(1).normal(size=ref_mean.shape).astype(np.float32)
    with torch.no_grad():
        ref = vae.decode(torch.from_numpy(z).permute(0, 3, 1, 2)).sample.permute(0, 2, 3, 1)
    out = jax.jit(lambda p, z: model.apply(p, z, method=model.decode))(params, z)
    assert rel_l2(out, ref.numpy()) <= 1e-4


def test_missing_key_is_named(tmp_path):
    from safetensors.numpy import load_file, save_file

    _, path = make_diffusers_ae(tmp_path, "sdxl")
    weights = path / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(weights))
    del sd["decoder.mid_block.attentions.0.to_k.weight"]
    save_file(sd, str(weights))
    with pytest.raises(ConvertError, match=r"missing key 'decoder\.mid_block\.attentions\.0\.to_k"):
        load_diffusers_autoencoder(path)


def test_wrong_layout_is_rejected(tmp_path):
    _, path = make_diffusers_ae(tmp_path, "sdxl")
    cfg = json.loads((path / "config.json").read_text())
    # A config claiming 16 latent channels over 4-channel weights: a shape error naming the key.
    cfg["latent_channels"] = 16
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConvertError, match=r"key 'decoder\.conv_in\.weight' has shape"):
        load_diffusers_autoencoder(path)
    cfg["_class_name"] = "UNet2DConditionModel"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConvertError, match="diffusers class 'UNet2DConditionModel' is not supp"):
        load_diffusers_autoencoder(path)
