"""Runs train steps of both stages on a given mesh and prints their losses, and how the state
is sharded, as JSON.

Used by tests/test_multidevice.py in subprocesses, because the number of (fake) CPU devices is
fixed when JAX starts: ``XLA_FLAGS=--xla_force_host_platform_device_count=8``. With a
coordinator address it is one of several processes (``jax.distributed``): each feeds only its
slice of every global batch, as on a multi-host pod.

    python tests/scripts/step_on_mesh.py '{"data": 4, "fsdp": 2, "tensor": 1}'
    python tests/scripts/step_on_mesh.py '{"data": 2, "fsdp": 2, "tensor": 2, "stages": ["dit"]}'
    python tests/scripts/step_on_mesh.py '{"data": -1}' 127.0.0.1:PORT 2 {0,1}
"""

import faulthandler
import json
import math
import os
import sys
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from latentjax.config import load_config
from latentjax.factory import latent_shape
from latentjax.parallel import distributed
from latentjax.parallel import mesh as mesh_lib
from latentjax.train import autoencoder, dit
from latentjax.train.state import build_state, jit_steps

AE_OVERRIDES = [
    "model.ch=16",
    "model.num_groups=4",
    "model.ch_mult=(1, 2)",
    "data.image_size=16",
    "loss.disc_start=1",  # step 0 without, step 1 with the GAN branch
    "loss.disc_ndf=8",
    "train.batch_size=16",
]
DIT_OVERRIDES = [
    "model.hidden_size=32",
    "model.depth=2",
    "model.num_heads=4",  # divisible by tensor=4
    "data.image_size=16",
    "train.batch_size=16",
]


NUM_STEPS = 5


def _bytes(tree, per_device: bool) -> int:
    def size(x):
        shape = x.sharding.shard_shape(x.shape) if per_device else x.shape
        return math.prod(shape) * x.dtype.itemsize

    return sum(size(x) for x in jax.tree.leaves(tree))


def sharding_report(state) -> dict:
    """Per-device and global bytes of parameters and optimiser state, as placed on the mesh."""
    return {
        f"{key}_{kind}": _bytes(state[key], kind == "per_device")
        for key in ("params", "opt_state")
        for kind in ("per_device", "global")
    }


def run_steps(task, config, mesh, batches):
    rules = tuple(tuple(r) for r in config.mesh.rules)
    rng = jax.random.key(0)
    _, shardings, init = build_state(task.init_state, mesh, rules, rng)
    state = init(rng)
    report = sharding_report(state)
    steps = jit_steps(task, shardings, mesh)
    losses = []
    n, pi, pc = len(batches[0]["label"]), jax.process_index(), jax.process_count()
    for i, b in enumerate(batches):
        local = {k: v[pi * n // pc : (pi + 1) * n // pc] for k, v in b.items()}
        step = steps[task.step_for(i)]
        # Traced (on first use) with the rules in context, so activation constraints apply.
        with mesh_lib.activation_rules(mesh, rules):
            state, metrics = step(state, task.frozen, mesh_lib.global_batch(local, mesh), rng)
        losses.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    report["state_after_per_device"] = _bytes({k: state[k] for k in ("params", "opt_state")}, True)
    return losses, report, state


def dit_task_lowered_text(task, config, mesh, batch) -> str:
    rules = tuple(tuple(r) for r in config.mesh.rules)
    rng = jax.random.key(0)
    abstract, shardings, _ = build_state(task.init_state, mesh, rules, rng)
    step = jit_steps(task, shardings, mesh)["diffusion"]
    sharding = mesh_lib.batch_sharding(mesh)
    b = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding) for k, v in batch.items()}
    with mesh_lib.activation_rules(mesh, rules):
        return step.lower(abstract, task.frozen, b, rng).as_text()


def main(shape):
    stages = shape.pop("stages", ["ae", "dit"])
    mesh = mesh_lib.make_mesh(shape)
    rs = np.random.RandomState(0)
    batches = [
        {
            "image": rs.uniform(-1, 1, (16, 16, 16, 1)).astype(np.float32),
            "label": rs.randint(0, 10, 16).astype(np.int32),
        }
        for _ in range(NUM_STEPS)
    ]
    ae_config = load_config("ae/digits.py", AE_OVERRIDES)
    ae_losses, ae_report = None, None
    if "ae" in stages:
        ae_task = autoencoder.make_task(ae_config, mesh)
        ae_losses, ae_report, _ = run_steps(ae_task, ae_config, mesh, batches)

    stage1 = autoencoder.AutoencoderStage(ae_config)
    ae_params = jax.jit(
        lambda r: stage1.init_state(r)["params"]["ae"], out_shardings=mesh_lib.replicated(mesh)
    )(jax.random.key(1))
    dit_config = load_config("dit/digits.py", DIT_OVERRIDES)
    stage2 = dit.DiTStage(dit_config, stage1.ae, latent_shape(ae_config))
    dit_task = dit.make_task(stage2, ae_params, {"shift": 0.1, "scale": 2.0}, mesh)
    dit_losses, dit_report, dit_state = run_steps(dit_task, dit_config, mesh, batches)
    qkv = dit_state["params"]["params"]["block_0"]["attn"]["qkv"]["kernel"]
    fc1 = dit_state["params"]["params"]["block_0"]["fc1"]["kernel"]
    dit_report["qkv_shard"] = list(qkv.sharding.shard_shape(qkv.shape))
    dit_report["fc1_shard"] = list(fc1.sharding.shard_shape(fc1.shape))
    mu = next(  # Adam's first moment of the same kernel, wherever optax nests it
        leaf
        for path, leaf in jax.tree_util.tree_flatten_with_path(dit_state["opt_state"])[0]
        if "mu" in jax.tree_util.keystr(path)
        and "qkv" in jax.tree_util.keystr(path)
        and "kernel" in jax.tree_util.keystr(path)
    )
    dit_report["qkv_adam_mu_shard"] = list(mu.sharding.shard_shape(mu.shape))
    # Activation constraints in the lowered step: Shardy's sdy.sharding_constraint (JAX's
    # default partitioner), or custom_call @Sharding under GSPMD.
    text = dit_task_lowered_text(dit_task, dit_config, mesh, batches[0])
    dit_report["sharding_constraints"] = text.count("sdy.sharding_constraint") + text.count(
        "@Sharding"
    )
    pc = jax.process_count()
    result = {
        "devices": jax.device_count(),
        "processes": pc,
        "compilation_cache": jax.config.jax_enable_compilation_cache,
        "mesh": dict(mesh.shape),
        "ae": ae_losses,
        "dit": dit_losses,
        "ae_sharding": ae_report,
        "dit_sharding": dit_report,
    }
    result = {k: v for k, v in result.items() if v is not None}
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) > 2:
        # A process that has not exited by then prints where each of its threads is (to
        # stderr, which the test shows).
        faulthandler.dump_traceback_later(240, exit=False)
        coordinator, num, pid = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        distributed.initialize(coordinator, num, pid)
    jnp.zeros(())  # start the backend before printing anything else
    try:
        main(json.loads(sys.argv[1]))
    except Exception:
        traceback.print_exc()
        sys.stdout.flush()
        # Not through JAX's shutdown barrier, where a failed peer would keep this process
        # waiting for minutes (and the test with it).
        os._exit(1)
