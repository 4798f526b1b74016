"""The training loop's mechanics on a toy task: metrics, checkpoints, resume, non-finite stop."""

import json

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from latentjax.errors import NonFiniteError, WorkdirError
from latentjax.parallel import mesh as mesh_lib
from latentjax.train import loop
from latentjax.train.checkpoint import Checkpointer, abstract_like


def _config(num_steps: int, **train) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "stage": "toy",
            "seed": 0,
            "model": {"width": 3},
            "mesh": {"shape": {"data": -1}, "rules": (("batch", ("data", "fsdp")),)},
            "train": {
                "num_steps": num_steps,
                "log_every": 2,
                "eval_every": 4,
                "checkpoint_every": 2,
                "keep_checkpoints": 5,
                **train,
            },
        }
    )


def _task(nan_at: tuple[int, ...] = (), zero_at: tuple[int, ...] = ()) -> loop.Task:
    def init_state(rng):
        return {"step": jnp.zeros((), jnp.int32), "params": {"w": jax.random.normal(rng, (3,))}}

    def step(state, frozen, batch, rng):
        del frozen
        noise = jax.random.normal(jax.random.fold_in(rng, state["step"]), (3,))
        target = jnp.mean(batch["image"]) + 0.01 * noise
        loss = jnp.sum(jnp.square(state["params"]["w"] - target))
        grad = 2 * (state["params"]["w"] - target)
        # A NaN gradient (and so a NaN update) at the 1-based steps in nan_at.
        bad = jnp.isin(state["step"] + 1, jnp.asarray(nan_at or (-1,)))
        grad = jnp.where(bad, jnp.nan, grad)
        grad = jnp.where(jnp.isin(state["step"] + 1, jnp.asarray(zero_at or (-1,))), 0.0, grad)
        w = state["params"]["w"] - 0.1 * grad
        metrics = {"loss": loss, "grad_norm": jnp.sqrt(jnp.sum(jnp.square(grad)))}
        return {"step": state["step"] + 1, "params": {"w": w}}, metrics

    return loop.Task("toy", init_state, {"main": step}, {}, {}, evaluate=lambda s, i: {"ev": 1.0})


def _data():
    ds = grain.MapDataset.range(40).shuffle(seed=0).repeat(None)
    ds = ds.map(lambda i: {"image": np.full((2,), i, np.float32)}).batch(4)
    return iter(ds.to_iter_dataset())


def _run(workdir, num_steps, task=None, **train):
    config = _config(num_steps, **train)
    loop.prepare_workdir(workdir, config)
    mesh = mesh_lib.make_mesh(config.mesh.shape)
    return loop.run(task or _task(), config, workdir, _data(), mesh, progress=False)


def test_metrics_checkpoints_and_exact_resume(tmp_path):
    straight = _run(tmp_path / "a", 6)
    _run(tmp_path / "b", 4)
    resumed = _run(tmp_path / "b", 6)
    np.testing.assert_array_equal(straight["params"]["w"], resumed["params"]["w"])
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [2, 4, 6]
    assert "ev" in lines[1] and "ev" not in lines[0]
    assert Checkpointer(tmp_path / "b" / "checkpoints").all_steps() == [2, 4, 6]


def test_non_finite_gradient_stops_and_names_the_last_good_checkpoint(tmp_path):
    # Step 3 is not a log step: every step is checked, one step late.
    with pytest.raises(
        NonFiniteError, match=r"non-finite grad_norm at step 3; last good checkpoint: step 2"
    ):
        _run(tmp_path, 6, _task(nan_at=(3,)))
    # The bad state was not saved.
    assert Checkpointer(tmp_path / "checkpoints").all_steps() == [2]


def test_non_finite_step_is_skipped_by_config(tmp_path):
    """With on_nonfinite="skip", a bad step leaves the parameters untouched: the run equals one
    whose step 3 has a zero gradient (and later steps keep their own random numbers)."""
    skipped = _run(tmp_path / "a", 6, _task(nan_at=(3,)), on_nonfinite="skip")
    reference = _run(tmp_path / "b", 6, _task(zero_at=(3,)))
    assert int(skipped["step"]) == 6
    np.testing.assert_array_equal(skipped["params"]["w"], reference["params"]["w"])
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["skipped_updates"] == 1.0 and lines[-1]["nonfinite"] == 0.0
    with pytest.raises(Exception, match="on_nonfinite"):
        _run(tmp_path / "c", 2, on_nonfinite="ignore")


def test_keeps_the_last_n_plus_the_best(tmp_path):
    losses = {2: 0.5, 4: 0.1, 6: 0.9, 8: 0.8, 10: 0.7}

    def evaluate(state, step):
        return {"val": losses[step]}

    task = _task()
    task.evaluate = evaluate
    _run(tmp_path, 10, task, eval_every=2, keep_checkpoints=2, keep_best=1, best_metric="val")
    assert Checkpointer(tmp_path / "checkpoints").all_steps() == [4, 8, 10]


def test_workdir_of_another_model(tmp_path):
    _run(tmp_path, 2)
    other = _config(2)
    other.model.width = 4
    with pytest.raises(WorkdirError, match=r"different run \(model.width: saved 3, now 4\)"):
        loop.prepare_workdir(tmp_path, other)


def _saves(monkeypatch) -> list[tuple[int, bool]]:
    """(step, held) of every ``Checkpointer.save`` from now on."""
    calls = []
    original = Checkpointer.save

    def save(self, step, *args, held=False, **kwargs):
        calls.append((step, held))
        return original(self, step, *args, held=held, **kwargs)

    monkeypatch.setattr(Checkpointer, "save", save)
    return calls


def test_held_saves_write_the_state_the_undonated_next_step_reads(tmp_path, monkeypatch):
    # snapshot="hold": no copy of the state; the step after each save must not donate it, or
    # the background write would read deleted (or overwritten) buffers.
    saves = _saves(monkeypatch)
    held = _run(tmp_path / "held", 8, checkpoint_snapshot="hold")
    assert saves == [(2, True), (4, True), (6, True), (8, False)]  # nothing runs after step 8
    straight = _run(tmp_path / "straight", 8, checkpoint_every=100)
    np.testing.assert_array_equal(held["params"]["w"], straight["params"]["w"])
    ckpt = Checkpointer(tmp_path / "held" / "checkpoints")
    abstract = abstract_like(held, jax.tree.map(lambda x: x.sharding, held))
    for step in (2, 4, 6):
        expected = _run(tmp_path / f"to{step}", step, checkpoint_every=100)
        restored = ckpt.restore(abstract, step=step)
        np.testing.assert_array_equal(restored["params"]["w"], expected["params"]["w"])
        assert int(restored["step"]) == step
    ckpt.close()


def test_auto_holds_saves_on_cpu_once_the_undonated_step_is_compiled(tmp_path, monkeypatch):
    # The undonated step compiles in the background; saves before it is ready are snapshots.
    compiled = []
    original = loop.UndonatedSteps._compile

    def compile_(self, phase, avals):
        compiled.append(phase)
        return original(self, phase, avals)

    monkeypatch.setattr(loop.UndonatedSteps, "_compile", compile_)
    calls = _saves(monkeypatch)
    result = _run(tmp_path / "auto", 12)
    saves = list(calls)
    straight = _run(tmp_path / "straight", 12, checkpoint_every=100)
    np.testing.assert_array_equal(result["params"]["w"], straight["params"]["w"])
    assert compiled == ["main"]
    assert saves[0] == (2, False) and saves[-1] == (12, False)
    # The run's own thread raced the compilation: how many saves were held varies, but a held
    # save is never followed by a snapshot one (the compiled step stays).
    flags = [h for _, h in saves[:-1]]
    assert flags == sorted(flags)
    # A last save (or a save with no later one that could use it) compiles nothing.
    compiled.clear()
    _run(tmp_path / "short", 4, checkpoint_every=2)
    assert compiled == []


def test_the_workdir_config_is_replaced_whole(tmp_path):
    # The other processes of a run read config.json while process 0 writes it (one of them
    # once read an empty file): a write that stops midway leaves the old file.
    path = tmp_path / "config.json"
    loop.write_atomic(path, lambda f: f.write(b'{"a": 1}'))

    def interrupted(f):
        f.write(b'{"a": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        loop.write_atomic(path, interrupted)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
