"""What a stage gives the loop (:class:`Task`), and its state made, jitted and restored.

A stage's state is one small pytree (``step``, ``params``, ``opt_state``, maybe ``ema_params``);
its parameters carry logical axis names, so :func:`build_state` derives every array's sharding
from the config's rules table and materialises each array directly in its shard
(``jax.eval_shape(init)`` -> shardings -> ``jax.jit(init, out_shardings=...)``, as big_vision).
:func:`restore` reads a finished run back onto a mesh: the latest checkpoint of a training run,
or the parameters of an inference checkpoint (``latentjax export``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from latentjax.errors import WorkdirError
from latentjax.parallel import mesh as mesh_lib
from latentjax.paths import absolute
from latentjax.run import Run


@dataclasses.dataclass
class Task:
    """What the loop needs from a stage."""

    name: str
    # rng -> state pytree with nn.Partitioned leaves (logical axis names); evaluated abstractly.
    init_state: Callable[[jax.Array], Any]
    # Pure steps (state, frozen, batch, rng) -> (state, metrics), one per training phase.
    train_steps: dict[str, Callable[..., tuple[Any, dict[str, jax.Array]]]]
    # Pytree of arrays the step reads but never updates (e.g. the frozen stage-1 encoder).
    frozen: Any = dataclasses.field(default_factory=dict)
    frozen_shardings: Any = dataclasses.field(default_factory=dict)
    # Called on evaluation steps with the device state; returns extra metrics.
    evaluate: Callable[[Any, int], dict[str, float]] | None = None
    # Called on evaluation steps (on every process) when the run writes TensorBoard images;
    # returns tag -> uint8 image [H, W, 3] (stage 1: reconstructions, stage 2: samples).
    images: Callable[[Any, int], dict[str, Any]] | None = None
    # Which of ``train_steps`` runs at a given step (0-based count of updates done). A phase
    # switch on the host, not ``lax.cond`` in the step: XLA:CPU runs a backward pass inside a
    # conditional about 10x slower than the same pass outside one.
    phase: Callable[[int], str] | None = None
    # Called once on a freshly initialised state (never on a resumed one): a fine-tune puts
    # the parameters it starts from in place here.
    warm_start: Callable[[Any], Any] | None = None

    def step_for(self, step: int) -> str:
        return self.phase(step) if self.phase is not None else next(iter(self.train_steps))


def abstract_like(tree: Any, shardings: Any) -> Any:
    """``jax.ShapeDtypeStruct`` leaves carrying ``shardings``: a restore or compile target."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def build_state(init_state: Callable[[jax.Array], Any], mesh: Mesh, rules, rng: jax.Array):
    """-> (abstract state, its shardings, a jitted initialiser that materialises each array
    directly in its shard: nothing is built on one device first)."""
    boxed = jax.eval_shape(init_state, rng)
    shardings = mesh_lib.logical_shardings(boxed, mesh, rules)
    abstract = abstract_like(nn.unbox(boxed), shardings)
    init = jax.jit(lambda r: nn.unbox(init_state(r)), out_shardings=shardings)
    return abstract, shardings, init


def guard_nonfinite(step_fn: Callable, skip: bool) -> Callable:
    """``step_fn`` plus a ``nonfinite`` metric (1.0 when any metric is NaN/Inf). With ``skip``,
    such a step leaves the state as it was apart from the step counter, so the step numbering
    (and hence ``fold_in(rng, step)``) goes on as in an uninterrupted run."""

    def step(state, frozen, batch, rng):
        new_state, metrics = step_fn(state, frozen, batch, rng)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(metrics)]))
        if skip:
            kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
            new_state = {**kept, "step": state["step"] + 1}
        return new_state, {**metrics, "nonfinite": 1.0 - finite.astype(jnp.float32)}

    return step


def jit_steps(task: Task, shardings, mesh: Mesh, on_nonfinite: str = "stop") -> dict[str, Callable]:
    """Each phase's step jitted with explicit shardings and the state donated."""
    repl = mesh_lib.replicated(mesh)
    return {
        name: jax.jit(
            guard_nonfinite(fn, skip=on_nonfinite == "skip"),
            in_shardings=(shardings, task.frozen_shardings, mesh_lib.batch_sharding(mesh), repl),
            out_shardings=(shardings, repl),
            donate_argnums=(0,),
        )
        for name, fn in task.train_steps.items()
    }


def select(tree: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """The entries of a nested dict at dotted ``keys`` (``"params.ae"``), nested as before."""
    out: dict[str, Any] = {}
    for key in keys:
        *parents, leaf = key.split(".")
        src, dst = tree, out
        for part in parents:
            src, dst = src[part], dst.setdefault(part, {})
        dst[leaf] = src[leaf]
    return out


def restore(
    run: Run, init_state: Callable[[jax.Array], Any], mesh: Mesh, step: int | None = None
) -> dict[str, Any]:
    """The state of the finished ``run`` placed on ``mesh`` by the run's own rules: the latest
    checkpoint of a training run (or its checkpoint at ``step``, one of those kept), or, for an
    inference checkpoint, only the entries it holds (e.g. ``ema_params``)."""
    import orbax.checkpoint as ocp

    from latentjax.train.checkpoint import Checkpointer

    rules = tuple(tuple(r) for r in run.config.mesh.rules)
    abstract, _, _ = build_state(init_state, mesh, rules, jax.random.key(0))
    info = run.export_info
    if info is not None:
        with ocp.StandardCheckpointer() as checkpointer:
            return checkpointer.restore(absolute(run.params_dir), select(abstract, info["keys"]))
    if not run.checkpoint_dir.is_dir():
        raise WorkdirError(
            f"run {run.path} has no checkpoint; train it first: latentjax train --config "
            f"CONFIG --workdir {run.path}"
        )
    checkpointer = Checkpointer(run.checkpoint_dir)
    try:
        if checkpointer.latest_step() is None:
            raise WorkdirError(
                f"run {run.path} has no checkpoint; train it first: latentjax train --config "
                f"CONFIG --workdir {run.path}"
            )
        if step is not None and step not in checkpointer.all_steps():
            raise WorkdirError(
                f"run {run.path} keeps no checkpoint of step {step}; it keeps steps "
                f"{', '.join(map(str, checkpointer.all_steps()))}"
            )
        return checkpointer.restore(abstract, step=step)
    finally:
        checkpointer.close()
