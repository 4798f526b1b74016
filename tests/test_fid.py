"""FID: the Fréchet distance against a float64 scipy implementation of Heusel et al.'s formula
(pytorch-fid itself imports torchvision, which does not import beside torch 2.13 here), and the
Flax FID InceptionV3 against a plain-torch FID Inception written here from pytorch-fid's published
architecture (torchvision's InceptionV3 names; avg pools without padding, max pool in Mixed_7c) on
random weights saved as a torchvision-layout state dict."""

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from latentjax.commands import main
from latentjax.convert import ConvertError
from latentjax.convert.inception import load_inception, uint8_features
from latentjax.errors import LatentjaxError
from latentjax.eval import fid


def scipy_frechet(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean.real))


def test_frechet_distance_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 16))
    b = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16)) * 0.5 + 0.3
    (m1, s1), (m2, s2) = fid.statistics(a), fid.statistics(b)
    got = fid.frechet_distance(m1, s1, m2, s2)
    assert got == pytest.approx(scipy_frechet(m1, s1, m2, s2), rel=1e-9)
    assert fid.frechet_distance(m1, s1, m1, s1) == pytest.approx(0.0, abs=1e-9)
    # Fewer samples than dimensions: the N x N route gives the same value (S1 is singular here:
    # the D x D routes then carry ~1e-8 relative error from the square roots of its zero
    # eigenvalues, computed as tiny non-zeros).
    few = b[:10]
    want = scipy_frechet(*fid.statistics(few), m1, s1)
    assert fid.frechet_distance_to_features(few, m1, s1) == pytest.approx(want, rel=1e-6)
    assert fid.frechet_distance_to_features(few, m1, s1) == pytest.approx(
        fid.frechet_distance(*fid.statistics(few), m1, s1), rel=1e-6
    )
    with pytest.raises(LatentjaxError, match="FID statistics do not match"):
        fid.frechet_distance(m1, s1, m2[:3], s2)


class Conv(nn.Module):  # torchvision's BasicConv2d
    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def avg3(x):
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class A(nn.Module):
    def __init__(self, cin, pool):
        super().__init__()
        self.branch1x1 = Conv(cin, 64, kernel_size=1)
        self.branch5x5_1 = Conv(cin, 48, kernel_size=1)
        self.branch5x5_2 = Conv(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = Conv(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = Conv(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = Conv(96, 96, kernel_size=3, padding=1)
        self.branch_pool = Conv(cin, pool, kernel_size=1)

    def forward(self, x):
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(avg3(x))], 1)


class B(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3 = Conv(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = Conv(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = Conv(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = Conv(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), bd, F.max_pool2d(x, 3, stride=2)], 1)


class C(nn.Module):
    def __init__(self, cin, c7):
        super().__init__()
        r, c = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
        self.branch1x1 = Conv(cin, 192, kernel_size=1)
        self.branch7x7_1 = Conv(cin, c7, kernel_size=1)
        self.branch7x7_2 = Conv(c7, c7, **r)
        self.branch7x7_3 = Conv(c7, 192, **c)
        self.branch7x7dbl_1 = Conv(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = Conv(c7, c7, **c)
        self.branch7x7dbl_3 = Conv(c7, c7, **r)
        self.branch7x7dbl_4 = Conv(c7, c7, **c)
        self.branch7x7dbl_5 = Conv(c7, 192, **r)
        self.branch_pool = Conv(cin, 192, kernel_size=1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = x
        for i in range(1, 6):
            bd = getattr(self, f"branch7x7dbl_{i}")(bd)
        return torch.cat([self.branch1x1(x), b7, bd, self.branch_pool(avg3(x))], 1)


class D(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.branch3x3_1 = Conv(cin, 192, kernel_size=1)
        self.branch3x3_2 = Conv(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = Conv(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = Conv(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = Conv(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = Conv(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class E(nn.Module):
    def __init__(self, cin, max_pool):
        super().__init__()
        self.max_pool = max_pool
        r, c = dict(kernel_size=(1, 3), padding=(0, 1)), dict(kernel_size=(3, 1), padding=(1, 0))
        self.branch1x1 = Conv(cin, 320, kernel_size=1)
        self.branch3x3_1 = Conv(cin, 384, kernel_size=1)
        self.branch3x3_2a, self.branch3x3_2b = Conv(384, 384, **r), Conv(384, 384, **c)
        self.branch3x3dbl_1 = Conv(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = Conv(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a, self.branch3x3dbl_3b = Conv(384, 384, **r), Conv(384, 384, **c)
        self.branch_pool = Conv(cin, 192, kernel_size=1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else avg3(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)


class RefFIDInception(nn.Module):
    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = Conv(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = Conv(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = Conv(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = Conv(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = Conv(80, 192, kernel_size=3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = A(192, 32), A(256, 64), A(288, 64)
        self.Mixed_6a = B(288)
        self.Mixed_6b, self.Mixed_6c = C(768, 128), C(768, 160)
        self.Mixed_6d, self.Mixed_6e = C(768, 160), C(768, 192)
        self.Mixed_7a = D(768)
        self.Mixed_7b, self.Mixed_7c = E(1280, False), E(2048, True)
        self.fc = nn.Linear(2048, 1008)  # in the weights file, unused by FID

    def forward(self, x, resize=True):  # x [B, 3, H, W] in [0, 1]
        if resize:
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean((2, 3))


def random_reference(seed=0):
    torch.manual_seed(seed)
    net = RefFIDInception().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return net


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """(reference net, weights file, our jitted pool features at 75x75, no resize, and the
    network with its sFID features too): every test uses batches of 2 images of 75x75 (the
    smallest InceptionV3 input) and the one program that returns both."""
    net = random_reference()
    path = tmp_path_factory.mktemp("fid") / "pt_inception.pth"
    torch.save(net.state_dict(), path)
    both = load_inception(path, resize=False, spatial=True)
    return net, path, lambda x: both(x)["pool"], both


def test_inception_matches_torch_reference(weights):
    net, _, _, both = weights
    x = np.random.default_rng(0).uniform(0, 1, (2, 75, 75, 3)).astype(np.float32)
    seen = {}
    hook = net.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, out: seen.update(out=out))
    with torch.no_grad():
        want = net(torch.from_numpy(x).permute(0, 3, 1, 2), resize=False).numpy()
    hook.remove()
    got = both(x)
    assert got["pool"].shape == (2, 2048)
    assert rel_l2(got["pool"], want) <= 1e-4
    # sFID's features: the first 7 channels of Mixed_6d's 1x1 branch (TF's mixed_6/conv), after
    # its ReLU; 3 x 3 positions at 75 px (17 x 17 at 299).
    spatial = seen["out"][:, :7].permute(0, 2, 3, 1).reshape(2, -1).numpy()
    assert got["spatial"].shape == (2, 3 * 3 * 7)
    assert (spatial >= 0).all() and (spatial > 0).any()
    assert rel_l2(got["spatial"], spatial) <= 1e-4


def test_the_report_cards_features_of_uint8_images_in_batches(weights):
    both = weights[3]
    images = np.random.default_rng(1).integers(0, 256, (4, 75, 75, 1), dtype=np.uint8)
    got = uint8_features(both, batch=2)(images)
    x = np.repeat(images, 3, axis=-1).astype(np.float32) / 255.0  # grey over RGB
    want = {k: np.concatenate([both(x[:2])[k], both(x[2:])[k]]) for k in ("pool", "spatial")}
    assert got["pool"].dtype == np.float64 and got["spatial"].shape == (4, 63)
    for key in ("pool", "spatial"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6)


def test_resize_matches_torch_bilinear():
    import jax

    x = np.random.default_rng(0).uniform(0, 1, (1, 37, 50, 3)).astype(np.float32)
    want = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(299, 299), mode="bilinear")
    got = jax.image.resize(x, (1, 299, 299, 3), "bilinear", antialias=False)
    assert rel_l2(got, want.permute(0, 2, 3, 1).numpy()) <= 1e-6


def test_fid_command(weights, tmp_path, capsys):
    _, path, features, _ = weights
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 75, 75, 1), dtype=np.uint8)  # grayscale -> 3 channels
    np.savez(tmp_path / "samples.npz", images=images, labels=np.zeros(4))
    feats = fid.features_of([images[:2], images[2:]], features)
    mu, sigma = fid.statistics(feats)
    fid.save_statistics(tmp_path / "ref.npz", mu + 1.0, sigma)
    # Same images, mean shifted by 1 in each of 2048 dims: FID = 2048 exactly (eq. 6).
    value = fid.fid(fid.read_images(tmp_path / "samples.npz", 2), tmp_path / "ref.npz", features)
    assert value == pytest.approx(2048.0, rel=1e-6)
    assert (
        main(
            [
                "fid",
                str(tmp_path / "samples.npz"),
                "--ref",
                str(tmp_path / "nope.npz"),
                "--weights",
                str(path),
            ]
        )
        == 2
    )
    assert "no FID statistics" in capsys.readouterr().err
    # An .npz of object arrays (pickles) is refused, in one line, without unpickling it.
    np.savez(tmp_path / "objects.npz", images=np.array([object()] * 2, dtype=object))
    argv = ["fid", str(tmp_path / "objects.npz"), "--ref", str(tmp_path / "ref.npz")]
    assert main([*argv, "--weights", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not an .npz of image arrays" in err[0], err


def test_bad_weights_file(tmp_path):
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3)}, tmp_path / "w.pth")
    with pytest.raises(
        ConvertError, match=r"missing key 'Conv2d_1a_3x3\.bn\.(running_mean|weight)'"
    ):
        load_inception(tmp_path / "w.pth")
