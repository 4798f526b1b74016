"""Orbax checkpoints of a state pytree and a Grain iterator."""

import errno
import os
import threading

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from latentjax.errors import WorkdirError
from latentjax.train.checkpoint import Checkpointer, CheckpointError, abstract_like


def _state(seed: int):
    k = jax.random.key(seed)
    params = {"w": jax.random.normal(k, (4, 3)), "b": jnp.arange(3.0)}
    tx = optax.adam(1e-3)
    return {"step": jnp.int32(7), "params": params, "opt_state": tx.init(params), "ema": params}


def _abstract(state):
    return abstract_like(state, jax.tree.map(lambda x: x.sharding, state))


def _iterator():
    return iter(grain.MapDataset.range(50).shuffle(seed=3).repeat(None).batch(4).to_iter_dataset())


def test_save_restore_is_identical_and_resumes_the_iterator(tmp_path):
    state = _state(0)
    it = _iterator()
    for _ in range(5):
        next(it)
    ckpt = Checkpointer(tmp_path)
    ckpt.save(7, state, it)
    ckpt.wait()
    expected_next = [next(it) for _ in range(3)]

    fresh = _iterator()
    restored = Checkpointer(tmp_path).restore(_abstract(_state(1)), fresh)
    jax.tree.map(np.testing.assert_array_equal, restored, state)
    for want in expected_next:
        np.testing.assert_array_equal(next(fresh), want)
    ckpt.close()


def test_keeps_only_the_last_checkpoints(tmp_path):
    ckpt = Checkpointer(tmp_path, max_to_keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, _state(step))
    ckpt.wait()
    assert ckpt.all_steps() == [2, 3] and ckpt.latest_step() == 3
    ckpt.close()


def test_restore_errors(tmp_path):
    ckpt = Checkpointer(tmp_path / "empty")
    with pytest.raises(WorkdirError, match="no checkpoint"):
        ckpt.restore(_abstract(_state(0)))
    ckpt.close()

    ckpt = Checkpointer(tmp_path / "other")
    ckpt.save(1, _state(0))
    ckpt.wait()
    other = _state(0)
    other["params"]["w"] = jnp.zeros((5, 3))  # a different model
    with pytest.raises(WorkdirError, match="does not match"):
        ckpt.restore(_abstract(other))
    ckpt.close()


def test_disk_full_during_a_save_is_an_error_and_keeps_the_previous(tmp_path, monkeypatch):
    ckpt = Checkpointer(tmp_path)
    it = _iterator()
    ckpt.save(1, _state(0), it)
    ckpt.wait()

    original = grain.checkpoint.CheckpointHandler.save

    def full_disk(self, directory, *args, **kwargs):
        # Half a file, then the write fails as a full disk does.
        (directory / "process_0-of-1.json").write_text("{")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(grain.checkpoint.CheckpointHandler, "save", full_disk)
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint of step 2 .* failed \(no space left on device\); "
        r"latest complete checkpoint: step 1",
    ):
        ckpt.save(2, _state(1), it)
        ckpt.wait()
    monkeypatch.setattr(grain.checkpoint.CheckpointHandler, "save", original)
    ckpt.close()

    reopened = Checkpointer(tmp_path)
    assert reopened.all_steps() == [1]
    restored = reopened.restore(_abstract(_state(1)), _iterator())
    jax.tree.map(np.testing.assert_array_equal, restored, _state(0))
    reopened.close()


def test_best_checkpoint_needs_a_metric(tmp_path):
    with pytest.raises(WorkdirError, match="needs a metric"):
        Checkpointer(tmp_path, keep_best=1)
    with pytest.raises(WorkdirError, match="best_mode"):
        Checkpointer(tmp_path, keep_best=1, best_metric="loss", best_mode="lowest")


def _hold_orbax_saves(monkeypatch) -> threading.Event:
    """Orbax's save waits until the returned event is set (at most a minute)."""
    release = threading.Event()
    original = ocp.CheckpointManager.save

    def held(self, *args, **kwargs):
        release.wait(timeout=60)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", held)
    return release


@pytest.mark.parametrize("snapshot", ["auto", "device", "off"])
def test_a_save_holds_the_state_and_position_it_was_given(tmp_path, monkeypatch, snapshot):
    # The training loop donates the state to the next step and keeps reading batches while a
    # save is still being written: the checkpoint must hold the values at the call. Orbax is
    # held until the loop has moved on (except with snapshot="off", where it runs in the call).
    release = _hold_orbax_saves(monkeypatch) if snapshot != "off" else threading.Event()
    state, it = jax.tree.map(jnp.copy, _state(0)), _iterator()  # no buffer shared by two leaves
    next(it)
    ckpt = Checkpointer(tmp_path, snapshot=snapshot)
    ckpt.save(1, state, it)
    expected = jax.tree.map(np.asarray, state)
    expected_next = next(it)
    bump = jax.jit(lambda s: jax.tree.map(lambda x: x + 1, s), donate_argnums=0)
    for _ in range(3):
        state = bump(state)
        next(it)
    jax.block_until_ready(state)
    release.set()
    ckpt.wait()
    fresh = _iterator()
    restored = Checkpointer(tmp_path).restore(_abstract(_state(1)), fresh)
    jax.tree.map(np.testing.assert_array_equal, restored, expected)
    np.testing.assert_array_equal(next(fresh), expected_next)
    ckpt.close()


def test_a_held_save_writes_the_callers_arrays_without_a_copy(tmp_path, monkeypatch):
    # held=True: the caller keeps the arrays alive and undonated (the loop's undonated step);
    # the save makes no snapshot, and writes the values at the call while the caller computes
    # new states from them.
    release = _hold_orbax_saves(monkeypatch)
    state, it = jax.tree.map(jnp.copy, _state(0)), _iterator()
    ckpt = Checkpointer(tmp_path)
    ckpt.save(1, state, it, held=True)
    assert ckpt._copy is None and ckpt.saving()
    expected = jax.tree.map(np.asarray, state)
    bump = jax.jit(lambda s: jax.tree.map(lambda x: x + 1, s))  # no donation
    later = bump(bump(state))
    next(it)
    release.set()
    ckpt.wait()
    assert not ckpt.saving()
    restored = Checkpointer(tmp_path).restore(_abstract(_state(1)))
    jax.tree.map(np.testing.assert_array_equal, restored, expected)
    assert not any(x.is_deleted() for x in jax.tree.leaves(later))
    ckpt.close()


def test_which_saves_are_held(tmp_path):
    state = _state(0)
    prefers = {}
    for mode in ("auto", "hold", "device", "off"):
        ckpt = Checkpointer(tmp_path / mode, snapshot=mode)
        prefers[mode] = ckpt.prefers_held(state)
        ckpt.close()
    # On these CPU devices "auto" holds: the state already lives in host memory.
    assert prefers == {"auto": True, "hold": True, "device": False, "off": False}


def test_save_returns_before_orbax_has_the_state(tmp_path, monkeypatch):
    # Orbax's own save is held until the caller has returned from ours: with the hand-off to a
    # background thread our save returns at once; without it this would wait out the timeout
    # and the step would already be on disk below.
    release = _hold_orbax_saves(monkeypatch)
    ckpt = Checkpointer(tmp_path)
    ckpt.save(1, _state(0), _iterator())
    assert not (tmp_path / "1").exists()
    release.set()
    ckpt.wait()
    assert ckpt.all_steps() == [1]
    ckpt.close()


def test_a_failed_background_save_is_raised_by_the_next_save(tmp_path, monkeypatch):
    ckpt = Checkpointer(tmp_path)
    ckpt.save(1, _state(0))
    ckpt.wait()

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    ckpt.save(2, _state(1))  # returns: the failure happens on the background thread
    with pytest.raises(CheckpointError, match=r"step 2 .* latest complete checkpoint: step 1"):
        ckpt.save(3, _state(2))
    ckpt.close()


def test_unknown_snapshot_mode(tmp_path):
    with pytest.raises(WorkdirError, match="snapshot='host'"):
        Checkpointer(tmp_path, snapshot="host")


def test_cpu_snapshots_run_asynchronously_and_reuse_written_buffers(tmp_path, monkeypatch):
    # On CPU devices the snapshot copy carries enough flops for XLA to dispatch it
    # asynchronously, and a save whose predecessor is on disk copies into that predecessor's
    # buffers (donated) instead of fresh ones; one still being written is never overwritten.
    ckpt = Checkpointer(tmp_path, max_to_keep=4)
    states = [_state(i) for i in range(4)]  # "ema" and "params" share buffers in each
    ckpt.save(1, states[0])
    ckpt.wait()
    copier = ckpt._copy[1]
    lowered = copier._fresh.lower([x for x in jax.tree.leaves(states[0])], copier._tick)
    assert lowered.compile().cost_analysis()["flops"] >= 1000  # XLA:CPU's inline threshold
    copier._into.result()  # compiled on the checkpoint thread after the first save
    first = copier._last
    ckpt.save(2, states[1])
    assert all(x.is_deleted() for x in first)  # written into the first snapshot's buffers
    ckpt.wait()

    monkeypatch.setattr(ocp.CheckpointManager, "is_saving_in_progress", lambda self: True)
    second = copier._last
    ckpt.save(3, states[2])
    assert not any(x.is_deleted() for x in second)
    ckpt.wait()
    monkeypatch.undo()
    ckpt.save(4, states[3])
    ckpt.wait()
    ckpt.close()
    reopened = Checkpointer(tmp_path, max_to_keep=4)
    for step, state in enumerate(states, start=1):
        restored = reopened.restore(_abstract(_state(9)), step=step)
        jax.tree.map(np.testing.assert_array_equal, restored, state)
    reopened.close()
