"""The training loop's mechanics on a toy task: metrics, checkpoints, resume, non-finite stop."""

import json

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from latentjax import run as run_lib
from latentjax.configs.common import train_config
from latentjax.errors import ConfigError, NonFiniteError, WorkdirError
from latentjax.parallel import mesh as mesh_lib
from latentjax.train import loop
from latentjax.train.checkpoint import Checkpointer
from latentjax.train.state import Task


def _config(num_steps: int, **train) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "stage": "toy",
            "seed": 0,
            "model": {"width": 3},
            "mesh": {"shape": {"data": -1}, "rules": (("batch", ("data", "fsdp")),)},
            "train": train_config(
                **{
                    "num_steps": num_steps,
                    "log_every": 2,
                    "eval_every": 4,
                    "checkpoint_every": 2,
                    "keep_checkpoints": 5,
                    **train,
                }
            ).to_dict(),
        }
    )


def _task(nan_at: tuple[int, ...] = (), zero_at: tuple[int, ...] = ()) -> Task:
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

    return Task("toy", init_state, {"main": step}, evaluate=lambda s, i: {"ev": 1.0})


def _data():
    ds = grain.MapDataset.range(40).shuffle(seed=0).repeat(None)
    ds = ds.map(lambda i: {"image": np.full((2,), i, np.float32)}).batch(4)
    return iter(ds.to_iter_dataset())


def _run(workdir, num_steps, task=None, **train):
    config = _config(num_steps, **train)
    run_lib.check_workdir(workdir, config)
    mesh = mesh_lib.make_mesh(config.mesh.shape)
    start = lambda: run_lib.write_config(workdir, config)  # noqa: E731
    return loop.run(task or _task(), config, workdir, _data(), mesh, progress=False, start=start)


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
        run_lib.check_workdir(tmp_path, other)


def test_metrics_of_a_killed_write_are_dropped_on_resume(tmp_path):
    # A kill while a line is written leaves half a line: the resume drops it (it is logged
    # again); a damaged line before the last one is a one-line error.
    _run(tmp_path, 4)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 6, "lo')
    _run(tmp_path, 6)
    assert [json.loads(x)["step"] for x in metrics.read_text().splitlines()] == [2, 4, 6]
    metrics.write_text('{"step": 2}\nnot json\n{"step": 4}\n')
    with pytest.raises(WorkdirError, match="line 2 is damaged"):
        _run(tmp_path, 8)


def test_the_workdir_config_is_replaced_whole(tmp_path):
    # The other processes of a run read config.json while process 0 writes it (one of them
    # once read an empty file): a write that stops midway leaves the old file.
    path = tmp_path / "config.json"
    run_lib.write_atomic(path, lambda f: f.write(b'{"a": 1}'))

    def interrupted(f):
        f.write(b'{"a": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        run_lib.write_atomic(path, interrupted)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_a_run_whose_every_update_was_skipped_is_an_error(tmp_path):
    with pytest.raises(NonFiniteError, match="every one of the 4 updates was skipped"):
        _run(tmp_path, 4, _task(nan_at=(1, 2, 3, 4)), on_nonfinite="skip")


def test_a_run_without_a_terminal_prints_a_line_per_logged_step(tmp_path, capsys):
    _run(tmp_path, 4)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("latentjax: toy")]
    assert [ln.split()[3] for ln in lines] == ["2/4", "4/4"], lines
    assert all("loss" in ln and "steps/s" in ln for ln in lines)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("checkpoint_every", 0, "train.checkpoint_every=0 must be a positive integer"),
        ("log_every", 0, "train.log_every=0 must be a positive integer"),
        ("num_steps", 0, "train.num_steps=0 must be a positive integer"),
        ("keep_checkpoints", 0, "keep at least the last checkpoint"),
        ("on_nonfinite", "ignore", "on_nonfinite='ignore'; use one of stop, skip"),
    ],
)
def test_train_values_no_run_can_use_are_refused_before_anything_is_written(
    tmp_path, key, value, message
):
    train = {"num_steps": 4, key: value}
    with pytest.raises(ConfigError, match=message):
        _run(tmp_path / "w", train.pop("num_steps"), **train)
    assert not (tmp_path / "w").exists()
