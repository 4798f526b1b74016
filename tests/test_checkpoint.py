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
from latentjax.train.checkpoint import Checkpointer, CheckpointError
from latentjax.train.state import abstract_like


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


@pytest.mark.parametrize("snapshot", ["auto", "on", "off"])
def test_a_save_holds_the_state_and_position_it_was_given(tmp_path, monkeypatch, snapshot):
    # The training loop donates the state to the next step and keeps reading batches while a
    # save is still being written: the checkpoint must hold the values at the call. With a
    # snapshot ("on"; "auto" on accelerators) Orbax is held until the loop has moved on.
    release = _hold_orbax_saves(monkeypatch) if snapshot == "on" else threading.Event()
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


def test_a_snapshot_save_returns_before_orbax_has_the_state(tmp_path, monkeypatch):
    # Orbax's own save is held until the caller has returned from ours: with the hand-off to a
    # background thread our save returns at once; without it this would wait out the timeout
    # and the step would already be on disk below. The snapshot is compiled once per layout.
    release = _hold_orbax_saves(monkeypatch)
    ckpt = Checkpointer(tmp_path, snapshot="on", max_to_keep=3)
    ckpt.save(1, _state(0), _iterator())
    assert not (tmp_path / "1").exists()
    release.set()
    copy = ckpt._copy[1]
    ckpt.save(2, _state(1), _iterator())
    assert ckpt._copy[1] is copy
    ckpt.wait()
    assert ckpt.all_steps() == [1, 2]
    ckpt.close()


def test_a_failed_background_save_is_raised_by_the_next_save(tmp_path, monkeypatch):
    ckpt = Checkpointer(tmp_path, snapshot="on")
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


def _saved(tmp_path, steps=(1, 2)):
    ckpt = Checkpointer(tmp_path, max_to_keep=5)
    for step in steps:
        ckpt.save(step, _state(step), _iterator())
    ckpt.wait()
    ckpt.close()


def _data_files(step_dir):
    """The files holding the saved arrays' bytes, as a restore reads them (OCDBT's merged data
    under state/d/; the per-process files beside it are what was merged)."""
    files = [p for p in (step_dir / "state" / "d").iterdir() if p.is_file()]
    assert files, sorted(str(p) for p in step_dir.rglob("*"))
    return files


@pytest.mark.parametrize("flip", range(12))
def test_a_flipped_bit_in_saved_arrays_is_reported_on_restore(tmp_path, flip):
    _saved(tmp_path)
    rng = np.random.default_rng(flip)
    files = _data_files(tmp_path / "2")
    path = files[rng.integers(len(files))]
    data = bytearray(path.read_bytes())
    at = int(rng.integers(len(data)))
    data[at] ^= 1 << int(rng.integers(8))
    path.write_bytes(bytes(data))
    ckpt = Checkpointer(tmp_path)
    with pytest.raises(CheckpointError, match=r"/2 is damaged .*earlier checkpoints: 1; resume"):
        ckpt.restore(_abstract(_state(0)))
    # The earlier checkpoint is intact and restores.
    jax.tree.map(
        np.testing.assert_array_equal, ckpt.restore(_abstract(_state(0)), step=1), _state(1)
    )
    ckpt.close()


def test_the_fingerprint_changes_with_any_single_bit():
    from latentjax.train.checkpoint import fingerprints

    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32))
    base = fingerprints({"x": x})["['x']"]
    bits = np.asarray(x).view(np.uint32).copy()
    for i in range(bits.size):
        for k in (0, 13, 31):
            flipped = bits.copy().reshape(-1)
            flipped[i] ^= np.uint32(1 << k)
            y = jnp.asarray(flipped.view(np.float32).reshape(x.shape))
            assert fingerprints({"x": y})["['x']"] != base
    # The same values give the same fingerprint whatever the layout (a plain modular sum).
    assert fingerprints({"x": x, "n": jnp.int32(3)})["['x']"] == base


@pytest.mark.parametrize("damage", ["truncate", "garbage", "metadata"])
def test_damaged_checkpoint_files_are_one_line_naming_the_earlier_one(tmp_path, damage):
    _saved(tmp_path)
    step = tmp_path / "2"
    if damage == "metadata":
        targets = [p for p in step.rglob("*") if p.is_file() and "metadata" in p.name.lower()]
    else:
        targets = _data_files(step)
    assert targets
    for path in targets:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3] if damage != "garbage" else os.urandom(len(data)))
    ckpt = Checkpointer(tmp_path)
    with pytest.raises(CheckpointError, match=r"is damaged .*resume_step=1") as e:
        ckpt.restore(_abstract(_state(0)))
    assert "\n" not in str(e.value) and "another run" not in str(e.value)
    ckpt.close()


def test_resuming_from_an_earlier_step_moves_the_later_ones_aside(tmp_path):
    _saved(tmp_path, steps=(1, 2, 3))
    ckpt = Checkpointer(tmp_path)
    with pytest.raises(WorkdirError, match=r"resume_step=5: no checkpoint .*1, 2, 3"):
        ckpt.resume_step(5)
    assert ckpt.resume_step(None) == 3
    assert ckpt.resume_step(1) == 1
    assert ckpt.all_steps() == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1", "discarded-2", "discarded-3"]
    ckpt.save(2, _state(7))  # the step number is free again
    ckpt.wait()
    assert ckpt.all_steps() == [1, 2]
    ckpt.close()


def test_a_full_disk_reported_by_tensorstore_is_one_line(tmp_path, monkeypatch):
    ckpt = Checkpointer(tmp_path)
    ckpt.save(1, _state(0))
    ckpt.wait()

    def full(self, *args, **kwargs):
        raise ValueError("RESOURCE_EXHAUSTED: Error writing local file: No space left [...]")

    monkeypatch.setattr(ocp.CheckpointManager, "save", full)
    with pytest.raises(CheckpointError, match=r"no space left on device.*checkpoint: step 1"):
        ckpt.save(2, _state(1))
    ckpt.close()
