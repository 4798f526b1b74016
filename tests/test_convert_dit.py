"""DiT weights -> latentjax: a random-weight diffusers DiTTransformer2DModel, and a plain-torch
DiT written here from the paper (Peebles & Xie 2023, sec. 3.2) with the original release's
parameter names, are saved, converted and run in both frameworks on the same inputs."""

import math
import pathlib

import diffusers
import jax
import numpy as np
import pytest
import torch
from torch import nn

from latentjax.convert import ConvertError, load_dit
from latentjax.convert.dit import build
from latentjax.models.dit import sincos_2d


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def perturb(module: nn.Module, scale: float = 0.1) -> None:
    # DiT zero-initialises its adaLN regressions and head: random values exercise every tensor.
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


class RefDiTBlock(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.attn = nn.Module()
        self.attn.qkv, self.attn.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def forward(self, x, c):
        b, n, d = x.shape
        norm = lambda h: nn.functional.layer_norm(h, (d,), eps=1e-6)  # noqa: E731
        sa, ca, ga, sm, cm, gm = self.adaLN_modulation(c).chunk(6, dim=1)
        h = norm(x) * (1 + ca[:, None]) + sa[:, None]
        q, k, v = self.attn.qkv(h).reshape(b, n, 3, self.heads, d // self.heads).unbind(2)
        a = nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
        x = x + ga[:, None] * self.attn.proj(a.transpose(1, 2).reshape(b, n, d))
        h = norm(x) * (1 + cm[:, None]) + sm[:, None]
        h = self.mlp.fc2(nn.functional.gelu(self.mlp.fc1(h), approximate="tanh"))
        return x + gm[:, None] * h


class RefDiT(nn.Module):
    """The original DiT's module tree and forward pass (fixed sin-cos positions, shared t/y
    embedders, adaLN-Zero blocks, modulated final layer)."""

    def __init__(self, size, p, cin, d, depth, heads, classes, learn_sigma, null=True):
        super().__init__()
        self.p, self.cout = p, cin * (2 if learn_sigma else 1)
        self.x_embedder = nn.Module()
        self.x_embedder.proj = nn.Conv2d(cin, d, p, stride=p)
        grid = size // p
        self.pos_embed = nn.Parameter(torch.from_numpy(sincos_2d(d, grid))[None], False)
        self.t_embedder = nn.Module()
        self.t_embedder.mlp = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.y_embedder = nn.Module()
        # + the null row, unless trained without label dropout (DiT's LabelEmbedder).
        self.y_embedder.embedding_table = nn.Embedding(classes + int(null), d)
        self.blocks = nn.ModuleList([RefDiTBlock(d, heads) for _ in range(depth)])
        self.final_layer = nn.Module()
        self.final_layer.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.final_layer.linear = nn.Linear(d, p * p * self.cout)

    def forward(self, x, t, y):  # x [B, C, H, W]
        b, _, hgt, _ = x.shape
        tokens = self.x_embedder.proj(x).flatten(2).transpose(1, 2) + self.pos_embed
        freqs = torch.exp(-math.log(10000) * torch.arange(128, dtype=torch.float32) / 128)
        args = t[:, None].float() * freqs[None]
        temb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        c = self.t_embedder.mlp(temb) + self.y_embedder.embedding_table(y)
        for block in self.blocks:
            tokens = block(tokens, c)
        shift, scale = self.final_layer.adaLN_modulation(c).chunk(2, dim=1)
        d = tokens.shape[-1]
        h = nn.functional.layer_norm(tokens, (d,), eps=1e-6) * (1 + scale[:, None]) + shift[:, None]
        out = self.final_layer.linear(h)  # [B, (h w), (p q c)]
        g, p = hgt // self.p, self.p
        out = out.reshape(b, g, g, p, p, self.cout)
        return torch.einsum("nhwpqc->nchpwq", out).reshape(b, self.cout, g * p, g * p)


def inputs(size, channels, classes):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, size, size, channels)).astype(np.float32)
    t = np.array([0.0, 17.0, 999.0], np.float32)
    y = np.array([0, classes - 1, classes], np.int32)  # the last is the null (CFG) class
    return x, t, y


def run_ours(config, params, x, t, y):
    model = build(config.model)
    return np.asarray(jax.jit(model.apply)(params, x, t, y))


def test_original_dit_parity(tmp_path):
    torch.manual_seed(0)
    ref = RefDiT(size=8, p=2, cin=4, d=32, depth=2, heads=4, classes=5, learn_sigma=False)
    perturb(ref)
    with torch.no_grad():  # pos_embed is a fixed table (perturb touched it): restore it
        ref.pos_embed.copy_(torch.from_numpy(sincos_2d(32, 4))[None])
    torch.save(ref.state_dict(), tmp_path / "dit.pt")
    config, params = load_dit(tmp_path / "dit.pt", num_heads=4, num_classes=5)
    assert (config.model.num_classes, config.model.learn_sigma) == (5, False)
    x, t, y = inputs(8, 4, 5)
    with torch.no_grad():
        want = ref(
            torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(t), torch.from_numpy(y)
        )
    got = run_ours(config, params, x, t, y)
    assert rel_l2(got, want.permute(0, 2, 3, 1).numpy()) <= 1e-4


def make_diffusers_dit(tmp_path, tie: bool = True):
    torch.manual_seed(0)
    model = diffusers.DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,  # learned sigma
        num_layers=2,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=6,
    ).eval()
    perturb(model)
    if tie:  # as converted DiT checkpoints: every block holds the same t/y embedder
        first = model.transformer_blocks[0].norm1.emb
        for block in model.transformer_blocks[1:]:
            block.norm1.emb.load_state_dict(first.state_dict())
    model.save_pretrained(tmp_path / "dit")
    return model, tmp_path / "dit"


def test_diffusers_dit_parity(tmp_path):
    ref, path = make_diffusers_dit(tmp_path)
    config, params = load_dit(path)
    assert (config.model.num_classes, config.model.learn_sigma) == (6, True)
    x, t, y = inputs(8, 4, 6)
    with torch.no_grad():
        want = ref(
            torch.from_numpy(x).permute(0, 3, 1, 2),
            timestep=torch.from_numpy(t),
            class_labels=torch.from_numpy(y).long(),
        ).sample
    got = run_ours(config, params, x, t, y)
    assert got.shape == (3, 8, 8, 8)
    assert rel_l2(got, want.permute(0, 2, 3, 1).numpy()) <= 1e-4


def test_diffusers_dit_with_untied_embedders_is_rejected(tmp_path):
    _, path = make_diffusers_dit(tmp_path, tie=False)
    with pytest.raises(ConvertError, match=r"transformer_blocks\.1\.norm1\.emb.* differs"):
        load_dit(path)


def test_bad_pt_files(tmp_path):
    torch.manual_seed(0)
    ref = RefDiT(size=4, p=2, cin=4, d=384, depth=1, heads=6, classes=3, learn_sigma=True)
    sd = ref.state_dict()
    # A pickled object of a class other than argparse.Namespace is refused, named, and without
    # torch's advice to unpickle it anyway.
    torch.save({"model": sd, "args": pathlib.PurePosixPath("x")}, tmp_path / "train.pt")
    with pytest.raises(ConvertError, match="holds a pickled pathlib.PurePosixPath") as e:
        load_dit(tmp_path / "train.pt")
    assert "weights_only=False" not in str(e.value) and "\n" not in str(e.value)
    # Weights-only but nested under an unknown name: named.
    torch.save({"weights": sd}, tmp_path / "nested.pt")
    with pytest.raises(ConvertError, match="does not hold a flat tensor state dict"):
        load_dit(tmp_path / "nested.pt")
    # A missing tensor is named.
    del sd["blocks.0.attn.proj.bias"]
    torch.save(sd, tmp_path / "missing.pt")
    with pytest.raises(ConvertError, match=r"missing key 'blocks\.0\.attn\.proj\.bias'"):
        load_dit(tmp_path / "missing.pt", num_heads=6, num_classes=3)
    # Not a DiT at all.
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(ConvertError, match="missing key 'x_embedder.proj.weight'"):
        load_dit(tmp_path / "other.pt")
