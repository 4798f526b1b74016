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
from latentjax.train.checkpoint import Checkpointer


def _config(num_steps: int) -> ml_collections.ConfigDict:
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
            },
        }
    )


def _task(nan_from: int | None = None) -> loop.Task:
    def init_state(rng):
        return {"step": jnp.zeros((), jnp.int32), "params": {"w": jax.random.normal(rng, (3,))}}

    def step(state, frozen, batch, rng):
        del frozen
        noise = jax.random.normal(jax.random.fold_in(rng, state["step"]), (3,))
        target = jnp.mean(batch["image"]) + 0.01 * noise
        loss = jnp.sum(jnp.square(state["params"]["w"] - target))
        if nan_from is not None:
            loss = jnp.where(state["step"] + 1 >= nan_from, jnp.nan, loss)
        w = state["params"]["w"] - 0.1 * 2 * (state["params"]["w"] - target)
        return {"step": state["step"] + 1, "params": {"w": w}}, {"loss": loss}

    return loop.Task("toy", init_state, {"main": step}, {}, {}, evaluate=lambda s, i: {"ev": 1.0})


def _data():
    ds = grain.MapDataset.range(40).shuffle(seed=0).repeat(None)
    ds = ds.map(lambda i: {"image": np.full((2,), i, np.float32)}).batch(4)
    return iter(ds.to_iter_dataset())


def _run(workdir, num_steps, task=None):
    config = _config(num_steps)
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


def test_non_finite_loss_stops_and_names_the_last_good_checkpoint(tmp_path):
    with pytest.raises(
        NonFiniteError, match=r"non-finite loss at step 4 .*last good checkpoint: step 2"
    ):
        _run(tmp_path, 6, _task(nan_from=3))
    # The bad state was not saved.
    assert Checkpointer(tmp_path / "checkpoints").all_steps() == [2]


def test_workdir_of_another_model(tmp_path):
    _run(tmp_path, 2)
    other = _config(2)
    other.model.width = 4
    with pytest.raises(WorkdirError, match=r"different run \(model.width: saved 3, now 4\)"):
        loop.prepare_workdir(tmp_path, other)
