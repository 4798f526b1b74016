"""latentjax against PyTorch on the same machine, in one run: autoencoder encode/decode and DiT
train steps, plus the achieved FLOP/s of the DiT train step over a measured matmul peak.

Both sides run the same network shapes on the same inputs in float32, on the same kind of device
(PyTorch on CUDA when JAX runs on a GPU and PyTorch sees one, else both on the CPU; the JSON
records which):
- the Stable Diffusion autoencoder (f8, 4 latent channels: ch 128, ch_mult (1, 2, 4, 4), two
  res blocks, attention in the mid block) — ``latentjax.models.autoencoder.AutoencoderKL`` vs
  diffusers ``AutoencoderKL`` (eager, and ``torch.compile`` when it works here);
- DiT-S/2 and DiT-B/2 on 32x32x4 latents, a flow-matching MSE + AdamW step (forward, backward,
  update) — ``latentjax.models.dit.DiT`` vs diffusers ``DiTTransformer2DModel`` built with the same
  widths, depths and heads.

Timings are medians over repeats after a warm-up (compilation excluded, and reported apart),
latentjax and its peers timed in turns (``benchmarks.timing.interleaved``), so that the
machine's drifting speed does not enter the ratios.
The "MFU" is XLA's cost-analysis FLOPs per step over the step time, divided by the FLOP/s of a
large float32 matmul timed in turns with the steps (the CPU has no published peak that means
much).

Run: ``python -m benchmarks.peers [--quick]`` (``python -m benchmarks`` runs every section).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from benchmarks.timing import interleaved
from latentjax.models.autoencoder import AutoencoderKL
from latentjax.models.dit import DiT, dit_kwargs

SD_AE = dict(ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=4, embed_dim=4)


# Each side of a comparison: (numbers known before timing, {what: fn to time}).
Side = tuple[dict, dict[str, Callable[[], object]]]


def timed_first(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# Peak: a large float32 matmul.


def matmul_peak(n: int = 2048) -> Side:
    """An n x n float32 matmul, timed in turns with the train steps it is the peak of."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    return {"n": n, "flops": 2 * n**3}, {"matmul": lambda: f(a, b)}


def jax_flops(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):  # older jax returns one dict per program
        cost = cost[0]
    return float(cost.get("flops", float("nan")))


# ---------------------------------------------------------------------------------------------
# Autoencoder encode / decode.


def jax_autoencoder(size: int, batch: int) -> Side:
    model = AutoencoderKL(in_channels=3, **SD_AE)
    x = jax.random.uniform(jax.random.key(0), (batch, size, size, 3), minval=-1, maxval=1)
    params = jax.jit(lambda: model.init(jax.random.key(1), x[:1], sample=False))()
    encode = jax.jit(lambda p, x: model.apply(p, x, method=model.encode).mode())
    decode = jax.jit(lambda p, z: model.apply(p, z, method=model.decode))
    z = encode(params, x)
    compile_s = timed_first(lambda: decode(params, z).block_until_ready())
    n_params = sum(p.size for p in jax.tree.leaves(params))
    return {"compile_s": compile_s, "params": int(n_params)}, {
        "encode": lambda: encode(params, x),
        "decode": lambda: decode(params, z),
    }


def torch_device():
    """Where PyTorch's side runs: on CUDA when JAX runs on a GPU and PyTorch sees one (a
    GPU-against-CPU ratio would mean nothing), else on the CPU."""
    import torch

    if jax.default_backend() == "gpu" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _synced(fn: Callable[[], object], device) -> Callable[[], None]:
    """``fn`` that returns once the device's queued work is done (CUDA runs asynchronously)."""
    import torch

    def run() -> None:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run


def torch_autoencoder(size: int, batch: int, compile: bool) -> Side:
    import torch
    from diffusers import AutoencoderKL as TorchAE

    device = torch_device()
    torch.manual_seed(0)
    model = TorchAE(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=size,
    ).eval()
    model.to(device)
    x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    encode = lambda x: model.encode(x).latent_dist.mode()  # noqa: E731
    decode = lambda z: model.decode(z).sample  # noqa: E731
    if compile:
        encode, decode = torch.compile(encode), torch.compile(decode)

    def inference(f, arg):
        def run():
            with torch.inference_mode():
                f(arg)

        return _synced(run, device)

    with torch.inference_mode():
        z = encode(x)
    compile_s = timed_first(inference(decode, z))

    n_params = sum(p.numel() for p in model.parameters())
    return {"compile_s": compile_s, "params": int(n_params)}, {
        "encode": inference(encode, x),
        "decode": inference(decode, z),
    }


# ---------------------------------------------------------------------------------------------
# DiT train step: flow matching (x_t = (1 - t) x0 + t eps, target eps - x0), AdamW.


def jax_dit_step(variant: str, batch: int) -> Side:
    kw = dit_kwargs(variant)
    model = DiT(input_size=32, in_channels=4, num_classes=1000, **kw)
    x0 = jax.random.normal(jax.random.key(0), (batch, 32, 32, 4))
    eps = jax.random.normal(jax.random.key(1), x0.shape)
    t = jax.random.uniform(jax.random.key(2), (batch,))
    y = jnp.arange(batch) % 1000
    params = jax.jit(lambda: model.init(jax.random.key(3), x0, t, y))()
    tx = optax.adamw(1e-4, weight_decay=0.0)
    opt_state = jax.jit(tx.init)(params)

    def loss_fn(p):
        tb = t[:, None, None, None]
        xt = (1 - tb) * x0 + tb * eps
        return jnp.mean((model.apply(p, xt, t * 1000, y) - (eps - x0)) ** 2)

    @jax.jit
    def step(p, s):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    start = time.perf_counter()
    compiled = step.lower(params, opt_state).compile()
    compile_s = time.perf_counter() - start
    state = [params, opt_state]

    def run():
        p, s, loss = compiled(*state)
        loss.block_until_ready()
        state[:] = [p, s]

    n_params = sum(p.size for p in jax.tree.leaves(params))
    meta = {"compile_s": compile_s, "flops": jax_flops(compiled), "params": int(n_params)}
    return meta, {"step": run}


def torch_dit_step(variant: str, batch: int, compile: bool) -> Side:
    import torch
    from diffusers import DiTTransformer2DModel

    kw = dit_kwargs(variant)
    device = torch_device()
    torch.manual_seed(0)
    model = DiTTransformer2DModel(
        num_attention_heads=kw["num_heads"],
        attention_head_dim=kw["hidden_size"] // kw["num_heads"],
        in_channels=4,
        out_channels=4,
        num_layers=kw["depth"],
        sample_size=32,
        patch_size=kw["patch_size"],
        num_embeds_ada_norm=1000,
    ).train()
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    x0 = torch.randn(batch, 4, 32, 32, device=device)
    eps = torch.randn_like(x0)
    t = torch.rand(batch, device=device)
    y = torch.arange(batch, device=device) % 1000
    forward = model
    if compile:
        forward = torch.compile(model)

    def run():
        tb = t[:, None, None, None]
        xt = (1 - tb) * x0 + tb * eps
        out = forward(xt, timestep=t * 1000, class_labels=y).sample
        loss = torch.mean((out - (eps - x0)) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    run = _synced(run, device)
    compile_s = timed_first(run)
    n_params = sum(p.numel() for p in model.parameters())
    return {"compile_s": compile_s, "params": int(n_params)}, {"step": run}


def torch_compile_works() -> bool:
    """``torch.compile`` needs a C++ toolchain for its CPU backend (Triton on CUDA); try it once
    on a tiny fn."""
    try:
        import torch

        f = torch.compile(lambda a: torch.sin(a) + 1)
        f(torch.ones(4, device=torch_device()))
        return True
    except Exception:  # noqa: BLE001 — any failure means "not usable here"; reported as such
        return False


# ---------------------------------------------------------------------------------------------


def run(quick: bool = False) -> dict:
    """Every measurement of this module as one JSON-able dict."""
    import torch

    repeats = 2 if quick else 5
    ae_size, ae_batch = (64, 1) if quick else (128, 2)
    dit_batch = 2 if quick else 8
    compile_ok = torch_compile_works()
    results: dict = {
        "torch_version": torch.__version__,
        "torch_compile": compile_ok,
        "jax_device": str(jax.devices()[0].device_kind),
        "torch_device": str(torch_device()),
    }
    with_compile = compile_ok and not quick

    sides = {"latentjax": jax_autoencoder(ae_size, ae_batch)}
    sides["torch_eager"] = torch_autoencoder(ae_size, ae_batch, compile=False)
    if with_compile:
        sides["torch_compile"] = torch_autoencoder(ae_size, ae_batch, compile=True)
    results["autoencoder"] = {"size": ae_size, "batch": ae_batch, **_timed(sides, repeats)}
    del sides

    for variant in ("S/2",) if quick else ("S/2", "B/2"):
        sides = {"latentjax": jax_dit_step(variant, dit_batch)}
        sides["torch_eager"] = torch_dit_step(variant, dit_batch, compile=False)
        if with_compile:
            sides["torch_compile"] = torch_dit_step(variant, dit_batch, compile=True)
        sides["matmul"] = matmul_peak(1024 if quick else 2048)
        d = {"batch": dit_batch, **_timed(sides, repeats)}
        del sides
        jx, mm = d["latentjax"], d["matmul"]
        jx["flops_per_s"] = jx["flops"] / jx["step_s"]
        mm["flops_per_s"] = mm["flops"] / mm["matmul_s"]
        jx["fraction_of_matmul"] = jx["flops_per_s"] / mm["flops_per_s"]
        results[f"dit_{variant}"] = d
    return results


def _timed(sides: dict[str, Side], repeats: int) -> dict[str, dict]:
    """Each side's numbers plus ``<what>_s``: the median time of each of its callables, all
    sides' callables timed in turns."""
    fns = {(side, what): fn for side, (_, named) in sides.items() for what, fn in named.items()}
    times = interleaved(fns, repeats)
    out = {side: dict(meta) for side, (meta, _) in sides.items()}
    for (side, what), t in times.items():
        out[side][f"{what}_s"] = t
    return out


def rows(results: dict) -> list[tuple[str, str, str, str]]:
    """(measurement, latentjax, peer, ratio) rows for the summary table."""
    out = []
    ae = results["autoencoder"]
    for half in ("encode", "decode"):
        jx = ae["batch"] / ae["latentjax"][f"{half}_s"]
        for peer in ("torch_eager", "torch_compile"):
            if peer in ae:
                pt = ae["batch"] / ae[peer][f"{half}_s"]
                name = f"AE f8c4 {ae['size']}px {half} img/s vs {peer}"
                out.append((name, f"{jx:.2f}", f"{pt:.2f}", f"{jx / pt:.2f}x"))
    for key in sorted(k for k in results if k.startswith("dit_")):
        d = results[key]
        jx = 1 / d["latentjax"]["step_s"]
        for peer in ("torch_eager", "torch_compile"):
            if peer in d:
                pt = 1 / d[peer]["step_s"]
                name = f"DiT-{key[4:]} train steps/s (batch {d['batch']}) vs {peer}"
                out.append((name, f"{jx:.3f}", f"{pt:.3f}", f"{jx / pt:.2f}x"))
        frac = d["latentjax"]["fraction_of_matmul"]
        gf = d["latentjax"]["flops_per_s"] / 1e9
        mm = d["matmul"]["flops_per_s"] / 1e9
        out.append(
            (f"DiT-{key[4:]} train GFLOP/s vs f32 matmul", f"{gf:.1f}", f"{mm:.1f}", f"{frac:.0%}")
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, S/2 only")
    parser.add_argument("--out", default=None, help="write the results here (JSON)")
    args = parser.parse_args()
    results = run(args.quick)
    print("measure | latentjax | reference (PyTorch; matmul rate for GFLOP/s rows) | ratio")
    for r in rows(results):
        print(" | ".join(r))
    print(f"latentjax on {results['jax_device']}, PyTorch on {results['torch_device']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
