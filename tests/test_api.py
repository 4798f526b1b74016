"""latentjax.load_autoencoder / load_dit and `latentjax convert`: a converted checkpoint gives
the same outputs as the weights it came from, which match the PyTorch models
(tests/test_convert_*.py hold the per-layout parity)."""

import numpy as np
import pytest
import torch
from test_convert_ae import make_diffusers_ae, rel_l2
from test_convert_dit import RefDiT, inputs

import latentjax
from latentjax.commands import main
from latentjax.errors import LatentjaxError
from latentjax.train.converted import convert


def test_autoencoder_from_diffusers_and_converted(tmp_path):
    vae, src = make_diffusers_ae(tmp_path, "sd3")
    ae = latentjax.load_autoencoder(src)
    assert (ae.latent_shift, ae.latent_scale) == (0.0609, 1.5305)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    z = ae.encode(x)
    with torch.no_grad():
        ref = vae.encode(torch.from_numpy(x).permute(0, 3, 1, 2)).latent_dist.mean
        dec = vae.decode(ref).sample.permute(0, 2, 3, 1).numpy()
    assert rel_l2(z, ref.permute(0, 2, 3, 1).numpy()) <= 1e-4
    assert rel_l2(ae.decode(z), dec) <= 1e-4
    np.testing.assert_allclose(ae.denormalize(ae.normalize(z)), z, rtol=1e-5, atol=1e-6)

    convert("ae", str(src), str(tmp_path / "converted"))
    again = latentjax.load_autoencoder(tmp_path / "converted")
    assert (again.latent_shift, again.latent_scale) == (ae.latent_shift, ae.latent_scale)
    np.testing.assert_array_equal(again.encode(x), z)


def test_dit_through_the_cli(tmp_path):
    torch.manual_seed(0)
    ref = RefDiT(size=4, p=2, cin=4, d=32, depth=1, heads=2, classes=3, learn_sigma=True)
    torch.save(ref.state_dict(), tmp_path / "dit.pt")
    args = [
        "convert",
        "dit",
        str(tmp_path / "dit.pt"),
        "--out",
        str(tmp_path / "c"),
        "--num-heads",
        "2",
        "--num-classes",
        "3",
    ]
    assert main(args) == 0
    x, t, y = inputs(4, 4, 3)
    direct = latentjax.load_dit(tmp_path / "dit.pt", num_heads=2, num_classes=3)
    converted = latentjax.load_dit(tmp_path / "c")
    assert converted.config.model.to_dict() == direct.config.model.to_dict()
    np.testing.assert_array_equal(converted(x, t, y), direct(x, t, y))
    with pytest.raises(LatentjaxError, match="holds a converted dit, not an autoencoder"):
        latentjax.load_autoencoder(tmp_path / "c")


def test_bad_paths(tmp_path, capsys):
    with pytest.raises(LatentjaxError, match="neither a diffusers autoencoder directory"):
        latentjax.load_autoencoder(tmp_path)
    assert main(["convert", "ae", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "latentjax: error:" in capsys.readouterr().err


def test_autoencoder_from_a_training_run(tiny_ae_run):
    """A stage-1 workdir loads through the trainer's own restore; encode/decode are its model's."""
    from latentjax.train.autoencoder import AutoencoderStage

    ae = latentjax.load_autoencoder(tiny_ae_run)
    assert (ae.latent_shift, ae.latent_scale) == (0.0, 1.0)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 8, 8, 1)).astype(np.float32)
    stage = AutoencoderStage(ae.config)
    want = stage.encode_latents(ae.params, x)  # eager: same values up to float rounding
    np.testing.assert_allclose(ae.encode(x), want, rtol=1e-5, atol=1e-5)
    assert ae.decode(ae.encode(x)).shape == x.shape
    # Inputs the network cannot take are one-line errors at the boundary, not garbage latents.
    bad = [
        (
            (x + 1) * 127.5,
            r"range over \[[0-9.]+, 25[0-9.]+\]; latentjax takes images in \[-1, 1\]",
        ),
        (x[0], r"must be \[B, H, W, C\], got shape \(8, 8, 1\) \(add a batch axis"),
        (
            np.transpose(np.repeat(x, 3, -1), (0, 3, 1, 2)),
            "have 8 channels last, the model takes 1",
        ),
        (np.repeat(x, 3, -1), "have 3 channels last, the model takes 1"),
        (x[:, :7, :7], r"sides \(7, 7\) must be divisible by 2"),
        (x.astype(bool), "must be numbers"),
    ]
    for images, message in bad:
        with pytest.raises(LatentjaxError, match=message):
            ae.encode(images)
    with pytest.raises(LatentjaxError, match="latents have 1 channels last, the model takes 4"):
        ae.decode(x[:, :4, :4])
