"""`latentjax plan`: the real train step compiled over fake devices on abstract inputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
import xla

from latentjax import commands as cli
from latentjax.parallel import topologies

ROOT = Path(__file__).parents[1]
# A DiT small enough to compile four times quickly; widths divisible by 8 so that every
# parameter can be split over fsdp=8.
TINY_DIT = [
    "--config.model.hidden_size=32",
    "--config.model.depth=1",
    "--config.model.num_heads=2",
    "--config.train.batch_size=8",
]


def _plan(tmp_path, *args: str) -> tuple[str, list[dict]]:
    """Runs the command in a fresh process (fake devices are fixed when JAX starts)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = xla.flags()  # no device count: the command must set (or re-exec with) it
    out_json = tmp_path / "plan.json"
    out = subprocess.run(
        [sys.executable, "-m", "latentjax", "plan", *args, "--json", str(out_json)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout, json.loads(out_json.read_text())


@pytest.mark.multidevice
def test_fsdp_sweep_shards_params_and_optimizer_as_one_over_n(tmp_path):
    stdout, plans = _plan(
        tmp_path,
        "--config",
        "configs/dit/digits.py",
        "--ae-config",
        "configs/ae/digits.py",
        "--sweep-fsdp",
        "1,2,4,8",
        *TINY_DIT,
    )
    assert "FSDP sweep" in stdout and "x n / total" in stdout
    assert [p["devices"] for p in plans] == [1, 2, 4, 8]
    assert [p["mesh"]["fsdp"] for p in plans] == [1, 2, 4, 8]
    base = plans[0]
    # float32 parameters, EMA and Adam's two moments: 4 copies of every parameter.
    assert base["params"] == base["ema"] == 4 * base["num_params"]
    assert base["opt_state"] >= 2 * base["params"]
    for p in plans:
        n = p["devices"]
        assert p["num_params"] == base["num_params"]
        # Parameters *and* optimiser state shrink as 1/n (within 10%).
        for key in ("params", "opt_state", "params_and_opt"):
            assert abs(p[key] * n / base[key] - 1.0) < 0.10, (key, n, p[key], base[key])
        # XLA's arguments hold the sharded state: they shrink too.
        assert p["arguments"] < 1.2 * base["arguments"] / n + 4096
        # Per-device FLOPs: the global batch is split n ways.
        assert p["flops"] > 0 and abs(p["flops"] * n / base["flops"] - 1.0) < 0.25
        assert p["peak"] == p["arguments"] + p["outputs"] - p["aliased"] + p["temporaries"]
        assert p["fits"]["v5e"] and p["peak"] < topologies.CHIPS["v5e"].memory_bytes
        # Nothing of the state was allocated: only PRNG keys / scalars are live.
        assert p["live_bytes"] < 1024 < p["params"]


@pytest.mark.parametrize(
    "args, match",
    [
        (["--topology", "v9-8"], "unknown topology"),
        (["--topology", "v5p-3"], "2 cores per chip"),
        (["--sweep-fsdp", "1,x"], "--sweep-fsdp"),
        ([], "needs --devices"),
        (["--devices", "4", "--config.model.no_such_key=1"], "no_such_key"),
        (["--devices", "1", "--frames", "9"], "--frames is for a video config"),
        (["--devices", "1", "--size", "480"], "--size '480': use H,W"),
        (["--devices", "1", "--size", "15,16"], "--size 15,16 is not divisible by"),
        (["--devices", "1", "--video"], "needs --frames T"),
        (["--devices", "1", "--video", "--frames", "6"], "--frames 6: "),
    ],
)
def test_bad_input_is_one_line_error(args, match, capsys):
    config = "configs/ae/digits.py"
    if "--video" in args:
        config = "configs/ae/digits_video.py"
        args = [a for a in args if a != "--video"]
    assert cli.main(["plan", "--config", config, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("latentjax: error:") and match in err and "\n" not in err


def test_dit_plan_needs_a_latent_shape(capsys, tmp_path):
    argv = ["plan", "--config", "configs/dit/digits.py", "--devices", "1"]
    assert cli.main([*argv, f"--config.ae_workdir={tmp_path}"]) == 2
    assert "--ae-config" in capsys.readouterr().err
    assert cli.main([*argv, "--latent-shape", "4,4"]) == 2
    assert "H,W,C" in capsys.readouterr().err
    assert cli.main([*argv, "--latent-shape", "4,4,4", "--frames", "9"]) == 2
    assert "not with --latent-shape" in capsys.readouterr().err


# A video autoencoder small enough to compile twice (its step still takes ~40 s: slow).
TINY_VIDEO = [
    "model.ch=4",
    "model.ch_mult=(1, 2)",
    "model.temporal_downsample=(True,)",
    "model.num_res_blocks=1",
    "model.z_channels=2",
    "train.batch_size=2",
    "loss.disc_ndf=4",
    "loss.disc_layers=1",
    "model.unroll_chunks=False",  # the chunks as a loop, whose FLOPs XLA counts once
]


@pytest.mark.slow
def test_a_video_config_is_planned_at_its_clip_shape():
    from latentjax import plan as plan_lib
    from latentjax.config import load_config
    from latentjax.factory import build_autoencoder

    config = load_config("ae/digits_video.py", TINY_VIDEO)
    plans = {}
    for frames in (5, 9):
        pixels = plan_lib.pixel_shape(config, frames, "8,12")  # frames of 8 x 12: not square
        assert pixels == (frames, 8, 12, 1)
        mesh = dict(config.mesh.shape)
        plans[frames] = plan_lib.plan(config, mesh, 1, pixels=pixels, phase="reconstruction")
    five, nine = plans[5], plans[9]
    assert five.example == (5, 8, 12, 1) and nine.example == (9, 8, 12, 1)
    # The train state holds the video autoencoder (and the PatchGAN), whatever the clip shape.
    ae = build_autoencoder(config.model)
    clip = jax.ShapeDtypeStruct((1, 5, 8, 12, 1), jnp.float32)
    variables = jax.eval_shape(ae.init, {"params": jax.random.key(0)}, clip)
    ae_params = sum(x.size for x in jax.tree.leaves(variables["params"]))
    assert five.num_params == nine.num_params > ae_params
    # The encoder and decoder scan over chunks of frames after the first (x2 in time here), so
    # their loops run more often for 9 frames than for 5. XLA's cost analysis counts a loop's
    # body once, so the FLOPs barely move with the length (measured: +0.4%); the plan says they
    # are a lower bound.
    assert sum(nine.loops) > sum(five.loops) and max(five.loops) > 1
    assert nine.flops < 1.1 * five.flops
    assert nine.to_json()["flops_is_lower_bound"]
    assert "a lower bound" in plan_lib.format_plan(nine)
    # Counted from the program, each loop's body times its trips, the products and
    # convolutions grow with the clip (frame by frame the work is 9/5 = 1.8x; the first frame,
    # encoded alone, and the PatchGAN, on every frame, make it a little less: 1.73x).
    assert 1.5 * five.network_flops < nine.network_flops < 1.8 * five.network_flops
    assert "every loop trip counted" in plan_lib.format_plan(nine)
    assert nine.temporaries > five.temporaries


def test_loops_that_do_a_networks_work_are_found_with_their_trip_counts():
    from latentjax.train.watch import compiled_flops, loop_trip_counts

    def matmuls(x):  # 4 products in a scan: XLA's cost analysis counts one
        return jax.lax.scan(lambda c, y: (c @ y, None), x[0], x)[0]

    def elementwise(x):  # a loop, but no network's work in it (like the PRNG's rounds)
        return jax.lax.fori_loop(0, 5, lambda i, c: c * 1.5 + 1.0, x)

    x = jnp.ones((4, 16, 16))
    compiled = jax.jit(lambda x: matmuls(x) + elementwise(x[0])).lower(x).compile()
    assert loop_trip_counts(compiled) == [4]
    assert compiled_flops(compiled) < 2 * 2 * 16**3  # one 16 x 16 product's FLOPs, not four
    plain = jax.jit(lambda x: x[0] @ x[1]).lower(x).compile()
    assert loop_trip_counts(plain) == []


def test_topologies_count_chips_not_cores():
    # Cloud TPU v5p/v4 names count TensorCores (2 per chip): v5p-64 is 32 chips on 8 hosts.
    v5p = topologies.parse_topology("v5p-64")
    assert (v5p.devices, v5p.hosts, v5p.chip.memory_bytes) == (32, 8, 95 * 10**9)
    assert topologies.parse_topology("v4-32").devices == 16
    # v5e (v5litepod) and v6e count chips.
    assert topologies.parse_topology("v5litepod-16").devices == 16
    assert topologies.parse_topology("v6e-256").devices == 256
    assert topologies.parse_topology("h100-8").chip.memory_bytes == 80 * 10**9


def test_a_video_dit_is_planned_over_clip_latents_and_full_attention_holds_more():
    from latentjax import plan as plan_lib
    from latentjax.config import load_config

    overrides = [o.removeprefix("--config.") for o in TINY_DIT] + ["model.patch_size=1"]
    config = load_config("dit/digits_video.py", overrides)
    # The video autoencoder's 9-frame clips of 16 x 16 (x2 time, x2 space, 4 channels): 5
    # latent frames of 8 x 8 x 4.
    latent = plan_lib.stage2_latent_shape(config, "ae/digits_video.py", None, 9, None)
    assert latent == (5, 8, 8, 4)
    assert plan_lib.stage2_latent_shape(config, "ae/digits.py", None) == (4, 4, 4)
    # A longer clip on a wider grid: 8 latent frames of 8 x 8 are 512 tokens. Full attention
    # holds [B, heads, 512, 512] logits; factorised ones hold 64 x 64 and 8 x 8 blocks.
    mesh = dict(config.mesh.shape)
    plans = {}
    for attention in ("full", "factorised"):
        c = load_config("dit/digits_video.py", [*overrides, f"model.attention={attention}"])
        plans[attention] = plan_lib.plan(c, mesh, 1, latent_shape=(8, 8, 8, 4))
    full, factorised = plans["full"], plans["factorised"]
    assert full.num_params == factorised.num_params
    logits = 8 * 2 * 512 * 512 * 4  # batch 8, 2 heads, float32
    assert full.temporaries > factorised.temporaries + logits
