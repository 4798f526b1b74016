"""Where the time of section "peers" goes: the operations of the autoencoder decoder and of a
DiT-B/2 train step, each timed alone, XLA (as latentjax calls it) beside PyTorch, in one run.

    python -m benchmarks.ops [--quick] [--out benchmarks/results/ops.json]

Rows, all float32, at the shapes of the peers section (decoder at 128 px, batch 2; DiT-B/2 on
32x32x4 latents, batch 8: 256 tokens of width 768, 12 heads):

- 3x3 convolutions at each decoder resolution: ``lax.conv_general_dilated`` (NHWC) vs
  ``torch.nn.Conv2d`` (NCHW), and the same convolution as im2col patches times a matmul;
- GroupNorm(32) + SiLU at the same shapes (flax ``nn.GroupNorm`` vs torch);
- the DiT's matmuls (qkv, MLP in and out, adaLN) at its token count;
- attention forward, and forward + backward: latentjax's heads-first form
  (``latentjax.models.dit.attention``), ``jax.nn.dot_product_attention``, and torch's
  ``scaled_dot_product_attention``;
- an AdamW update of 130 M floats (DiT-B/2 with its EMA is about that size): optax with donated
  buffers vs ``torch.optim.AdamW`` (its default, foreach implementation).

The ratio column is PyTorch's time over XLA's (above 1: XLA is faster); the two sides of a row
are timed in turns (``benchmarks.timing.interleaved``). No targets here: the section explains
the peers' ratios.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.timing import interleaved

DIMS = ("NHWC", "HWIO", "NHWC")


def _row(rows: list, name: str, jax_s: float, torch_s: float, flops: float | None = None) -> None:
    row = {"op": name, "xla_ms": jax_s * 1e3, "torch_ms": torch_s * 1e3, "ratio": torch_s / jax_s}
    if flops:
        row["xla_gflops"] = flops / jax_s / 1e9
        row["torch_gflops"] = flops / torch_s / 1e9
    rows.append(row)
    print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}))


def _conv(x: jax.Array, w: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", None, None, DIMS)


def _im2col_conv(x: jax.Array, w: jax.Array) -> jax.Array:
    """The same convolution as 3x3 patches (channel-major) times a [9 c, c] matrix."""
    c = x.shape[-1]
    patches = jax.lax.conv_general_dilated_patches(x, (3, 3), (1, 1), "SAME", None, None, DIMS)
    return patches @ jnp.transpose(w, (2, 0, 1, 3)).reshape(9 * c, w.shape[-1])


def _norm_silu(norm: nn.Module, params: dict, x: jax.Array) -> jax.Array:
    return nn.silu(norm.apply(params, x))


def _squared_sum(f: Callable, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    return jnp.sum(f(q, k, v) ** 2)


def decoder_ops(rows: list, quick: bool, repeats: int) -> None:
    import torch

    batch = 1 if quick else 2
    shapes = ((64, 16), (64, 32)) if quick else ((512, 16), (512, 32), (512, 64), (256, 128))
    shapes += ((128, 32),) if quick else ((128, 128),)
    for c, hw in shapes:
        x = jax.random.normal(jax.random.key(0), (batch, hw, hw, c))
        w = jax.random.normal(jax.random.key(1), (3, 3, c, c)) * 0.02
        conv, im2col = jax.jit(_conv), jax.jit(_im2col_conv)
        np.testing.assert_allclose(im2col(x, w), conv(x, w), rtol=1e-3, atol=1e-3)
        xt = torch.randn(batch, c, hw, hw)
        conv_t = torch.nn.Conv2d(c, c, 3, padding=1)
        flops = 2 * batch * hw * hw * 9 * c * c
        norm = nn.GroupNorm(32)
        params = norm.init(jax.random.key(0), x)
        gn = jax.jit(functools.partial(_norm_silu, norm))
        gn_t = torch.nn.Sequential(torch.nn.GroupNorm(32, c), torch.nn.SiLU())
        with torch.inference_mode():
            fns = dict(
                conv=functools.partial(conv, x, w),
                im2col=functools.partial(im2col, x, w),
                torch=functools.partial(conv_t, xt),
                gn=functools.partial(gn, params, x),
                gn_torch=functools.partial(gn_t, xt),
            )
            t = interleaved(fns, repeats)
        _row(rows, f"conv3x3 {c}ch {hw}px", t["conv"], t["torch"], flops)
        _row(rows, f"conv3x3 {c}ch {hw}px as im2col+matmul", t["im2col"], t["torch"], flops)
        _row(rows, f"GroupNorm+SiLU {c}ch {hw}px", t["gn"], t["gn_torch"])


def dit_ops(rows: list, quick: bool, repeats: int) -> None:
    import torch

    from latentjax.models.dit import attention

    batch, tokens, width, heads = (2, 64, 192, 3) if quick else (8, 256, 768, 12)
    n = batch * tokens
    for k, m, what in (
        (width, 3 * width, "qkv"),
        (width, 4 * width, "MLP in"),
        (4 * width, width, "MLP out"),
        (width, 6 * width, "adaLN"),
    ):
        a = jax.random.normal(jax.random.key(0), (n, k))
        b = jax.random.normal(jax.random.key(1), (k, m))
        mm = jax.jit(jnp.matmul)
        at, bt = torch.randn(n, k), torch.randn(k, m)
        with torch.inference_mode():
            xla, ref = functools.partial(mm, a, b), functools.partial(torch.mm, at, bt)
            t = interleaved({"xla": xla, "torch": ref}, repeats)
        _row(rows, f"matmul {what} {n}x{k} @ {k}x{m}", t["xla"], t["torch"], 2 * n * k * m)

    head_dim = width // heads
    shape = (batch, tokens, heads, head_dim)
    q, k, v = (jax.random.normal(jax.random.key(i), shape) for i in range(3))
    qt, kt, vt = (torch.randn(batch, heads, tokens, head_dim, requires_grad=True) for _ in range(3))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    flops = 4 * batch * heads * tokens * tokens * head_dim

    def torch_fwd():
        with torch.inference_mode():
            sdpa(qt, kt, vt)

    def torch_both():
        out = sdpa(qt, kt, vt)
        (out**2).sum().backward()

    forms = {"latentjax heads-first": attention, "jax.nn": jax.nn.dot_product_attention}
    fns = {"torch fwd": torch_fwd, "torch both": torch_both}
    for name, f in forms.items():
        fwd = jax.jit(f)
        both = jax.jit(jax.grad(functools.partial(_squared_sum, f), argnums=(0, 1, 2)))
        fns[f"{name} fwd"] = functools.partial(fwd, q, k, v)
        fns[f"{name} both"] = functools.partial(both, q, k, v)
    t = interleaved(fns, repeats)
    for name in forms:
        _row(rows, f"attention fwd, {name}", t[f"{name} fwd"], t["torch fwd"], flops)
        _row(rows, f"attention fwd+bwd, {name}", t[f"{name} both"], t["torch both"], 3 * flops)

    floats = 2_000_000 if quick else 130_000_000
    shapes = [floats // 8] * 8
    params = [jnp.ones((s,)) for s in shapes]
    grads = [jnp.full((s,), 1e-2) for s in shapes]
    tx = optax.adamw(1e-4, weight_decay=0.0)

    def update(p, s, g):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    update = jax.jit(update, donate_argnums=(0, 1))
    state = [params, tx.init(params)]

    def jax_adamw():
        state[:] = update(state[0], state[1], grads)
        return state

    pt = [torch.nn.Parameter(torch.ones(s)) for s in shapes]
    for p in pt:
        p.grad = torch.full_like(p, 1e-2)
    opt = torch.optim.AdamW(pt, lr=1e-4, weight_decay=0.0)
    t = interleaved({"xla": jax_adamw, "torch": opt.step}, repeats)
    _row(rows, f"AdamW update, {floats / 1e6:.0f} M floats", t["xla"], t["torch"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small shapes: checks the script runs")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default="benchmarks/results/ops.json")
    args = p.parse_args()
    rows: list[dict] = []
    repeats = 1 if args.quick else args.repeats
    decoder_ops(rows, args.quick, repeats)
    dit_ops(rows, args.quick, repeats)
    print(
        "\n| operation | XLA (latentjax) | PyTorch | PyTorch / XLA time | GFLOP/s XLA / PyTorch |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        rate = f"{r['xla_gflops']:.0f} / {r['torch_gflops']:.0f}" if "xla_gflops" in r else ""
        print(
            f"| {r['op']} | {r['xla_ms']:.1f} ms | {r['torch_ms']:.1f} ms | "
            f"{r['ratio']:.2f}x | {rate} |"
        )
    with open(args.out, "w") as f:
        json.dump({"rows": rows, "quick": args.quick}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
