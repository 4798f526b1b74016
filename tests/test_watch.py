"""Watching a run: TensorBoard event files (scalars and images, across a resume), the throughput
fields of each log line, profiler traces, and ``latentjax plot``."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny

from latentjax import run as run_lib
from latentjax.commands import main
from latentjax.config import load_config
from latentjax.data import pipeline
from latentjax.eval.images import to_uint8
from latentjax.parallel import mesh as mesh_lib
from latentjax.parallel import topologies
from latentjax.run import Run
from latentjax.train import autoencoder, state, watch
from latentjax.train.loop import read_metrics
from latentjax.train.state import build_state, jit_steps

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
import test_loop  # noqa: E402  (the toy task and its loop runs)


def _toy_task():
    """The toy task with an image per evaluation whose pixels say the step (and a second
    channel the parameters' first value, so two runs' images can be told apart)."""
    task = test_loop._task()

    def images(s, step):
        w = float(jax.device_get(s["params"]["w"][0]))
        return {"eval/toy": np.full((4, 6, 3), [step, int(abs(w) * 10) % 256, 7], np.uint8)}

    task.images = images
    return task


def _records(workdir):
    return read_metrics(workdir / run_lib.METRICS_FILE)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A toy run of 6 steps, resumed from its step 4 to 8 (steps 5 and 6 run again); -> its
    directory and the images the event files held after the first sitting."""
    workdir = tmp_path_factory.mktemp("toy")
    test_loop._run(workdir, 6, _toy_task(), batch_size=4, checkpoint_every=4)
    first = watch.read_images(workdir / run_lib.TENSORBOARD_DIR)
    test_loop._run(workdir, 8, _toy_task(), batch_size=4, checkpoint_every=4, resume_step=4)
    return workdir, first


def test_event_files_hold_each_scalar_and_image_once_across_a_resume(toy_run):
    workdir, first = toy_run
    assert [s for s, _ in first["eval/toy"]] == [4, 6]  # eval_every 4, and the last step
    board = workdir / run_lib.TENSORBOARD_DIR
    scalars = watch.read_scalars(board)
    records = {r["step"]: r for r in _records(workdir)}
    assert sorted(records) == [2, 4, 6, 8]
    tags = {"loss": "train/loss", "ev": "train/ev", "steps_per_s": "perf/steps_per_s"}
    for key, tag in tags.items():
        logged = [(r["step"], r[key]) for r in records.values() if key in r]
        assert [s for s, _ in scalars[tag]] == [s for s, _ in logged], tag
        np.testing.assert_allclose([v for _, v in scalars[tag]], [v for _, v in logged], rtol=1e-6)
    # What the first sitting logged after step 4 is gone: step 6's image with it.
    images = watch.read_images(board)["eval/toy"]
    assert [s for s, _ in images] == [4, 8]
    assert all(img.shape == (4, 6, 3) and (img[..., 0] == s).all() for s, img in images)
    assert (images[0][1] == first["eval/toy"][0][1]).all()  # step 4's image kept as written


def _wandb_history(run_dir) -> list[dict]:
    """The history rows of an offline W&B run directory, read from its ``run-ID.wandb`` file:
    W&B's record log (a 7-byte header, then 32 KiB blocks of records in LevelDB's log format,
    each a ``wandb_internal_pb2.Record``)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    (file,) = run_dir.glob("run-*.wandb")
    data, rows, pending, pos = file.read_bytes(), [], b"", 7
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record.FromString(pending)
            pending = b""
            if record.WhichOneof("record_type") == "history":
                items = record.history.item
                rows.append(
                    {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}
                )
    return rows


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory):
    """The toy run of ``toy_run`` (6 steps, resumed from 4 to 8) logging to W&B, offline,
    without TensorBoard."""
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    workdir = tmp_path_factory.mktemp("toy_wandb")
    train = dict(batch_size=4, checkpoint_every=4, tensorboard=False, wandb_project="toy")
    test_loop._run(workdir, 6, _toy_task(), **train)
    test_loop._run(workdir, 8, _toy_task(), resume_step=4, **train)
    mp.undo()
    return workdir


def test_wandb_gets_the_scalars_and_images_of_each_sitting_under_the_runs_id(wandb_run):
    workdir = wandb_run
    assert not (workdir / run_lib.TENSORBOARD_DIR).exists()  # tensorboard=False
    run_id = Run.open(workdir).id
    sittings = sorted((workdir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(sittings) == 2  # both sittings are the run directory's one W&B run
    first, second = (_wandb_history(d) for d in sittings)
    records = {r["step"]: r for r in _records(workdir)}
    assert [r["_step"] for r in first if "train/loss" in r] == [2, 4, 6]
    assert [r["_step"] for r in second if "train/loss" in r] == [6, 8]
    # The resumed sitting's rows are metrics.jsonl's; its repeat of step 6 (which W&B drops
    # on sync) is the killed sitting's value, since resume is exact.
    for row in second:
        if "train/loss" in row:
            assert row["train/loss"] == pytest.approx(records[row["_step"]]["loss"], rel=1e-6)
            assert row["perf/steps_per_s"] > 0 and "eval/ev" not in row
    (repeat,) = (r["train/loss"] for r in first if r.get("_step") == 6)
    assert repeat == pytest.approx(records[6]["loss"], rel=1e-6)
    # Images at the evaluation steps, the pixels saying the step.
    from PIL import Image

    images = [
        (r["_step"], d / "files" / r["eval/toy/path"])
        for d, rows in zip(sittings, (first, second), strict=True)
        for r in rows
        if "eval/toy/path" in r  # W&B flattens an image's fields: path, width, ...
    ]
    assert [s for s, _ in images] == [4, 6, 8]
    for step, path in images:
        assert (np.asarray(Image.open(path))[..., 0] == step).all()


def test_wandb_asked_for_but_not_installed_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    assert _train(tmp_path / "w", "--config.train.wandb_project=p") == 2
    assert "pip install 'latentjax[wandb]'" in _error_line(capsys)
    assert not (tmp_path / "w").exists()


def test_throughput_fields_of_each_log_line(toy_run):
    records = _records(toy_run[0])
    # FLOPs per step: XLA's cost analysis of the program the loop runs, compiled here anew.
    config = test_loop._config(6)
    mesh = mesh_lib.make_mesh(config.mesh.shape)
    rules = tuple(tuple(r) for r in config.mesh.rules)
    task = test_loop._task()
    abstract, shardings, _ = build_state(task.init_state, mesh, rules, jax.random.key(0))
    batch = mesh_lib.global_batch(next(test_loop._data()), mesh)
    program = jit_steps(task, shardings, mesh)["main"]
    compiled = program.lower(abstract, {}, batch, jax.random.key(1)).compile()
    flops = compiled.cost_analysis()["flops"]
    assert flops > 0
    for r in records:
        assert r["flops_per_step"] == flops
        assert 0.0 <= r["data_wait_fraction"] <= 1.0
        assert r["steps_per_s"] > 0
        np.testing.assert_allclose(r["examples_per_s"], 4 * r["steps_per_s"], rtol=1e-9)
        np.testing.assert_allclose(r["flops_per_s"], flops * r["steps_per_s"], rtol=1e-9)
        assert r["mfu"] is None  # a CPU: no peak to divide by
        assert "memory_bytes_in_use" not in r  # the CPU backend reports no memory
    # Once per compilation: at the first log line of each sitting (steps 1-2, and 5-6).
    key = "compile_seconds_main"
    compiles = {r["step"]: r[key] for r in records if key in r}
    assert list(compiles) == [2, 6] and min(compiles.values()) > 0


def test_mfu_divides_the_achieved_flops_by_the_chips_peak():
    t = watch.Throughput(start=0, batch_size=8, peak=2e12)
    t.compiled("main", 1.0, 3e9)
    for _ in range(5):
        t.data_wait(0.0)
        t.step("main")
    r = t.report(5)
    assert r["flops_per_step"] == 3e9 and r["compile_seconds_main"] == 1.0
    np.testing.assert_allclose(r["flops_per_s"], 3e9 * r["steps_per_s"], rtol=1e-9)
    np.testing.assert_allclose(r["mfu"], r["flops_per_s"] / 2e12, rtol=1e-9)
    assert "compile_seconds_main" not in t.report(6)  # reported once


@pytest.mark.parametrize(
    ("kind", "chip"),
    [
        ("TPU v4", "v4"),
        ("TPU v5 lite", "v5e"),
        ("TPU v5", "v5p"),
        ("TPU v5p", "v5p"),
        ("TPU v6 lite", "v6e"),
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA H100 PCIe", None),  # another peak than the SXM part's
        ("cpu", None),
    ],
)
def test_device_kinds_name_their_chip(kind, chip):
    found = topologies.chip_of_device(kind)
    assert found is (topologies.CHIPS[chip] if chip else None)


TINY_AE = [
    *tiny.AE,
    "--config.loss.disc_start=100",
    "--config.train.eval_every=4",
    "--config.train.checkpoint_every=4",
    "--config.train.num_steps=4",
    "--config.train.eval_images=2",
]


def _train(workdir, *extra: str) -> int:
    argv = ["train", "--config", "ae/digits.py", "--workdir", str(workdir), "--no-progress"]
    return main(argv + TINY_AE + list(extra))


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("latentjax: error:"), err
    return err[0]


@pytest.fixture(scope="module")
def profiled(tmp_path_factory, digits_data_dir):
    mp = pytest.MonkeyPatch()
    mp.setenv("LATENTJAX_DATA_DIR", digits_data_dir)
    workdir = tmp_path_factory.mktemp("watch") / "ae"
    # Steps 2-4: the compilation (at step 1) stays out of the trace.
    assert _train(workdir, "--profile", "2:3") == 0
    yield workdir
    mp.undo()


def test_a_profile_of_3_digits_steps_is_a_trace_tensorboard_lists(profiled):
    # TensorBoard's profile plugin lists the sessions under <logdir>/plugins/profile that hold
    # an .xplane.pb; Perfetto opens the .trace.json.gz beside it.
    sessions = list((profiled / run_lib.TENSORBOARD_DIR / "plugins" / "profile").iterdir())
    assert len(sessions) == 1
    assert list(sessions[0].glob("*.xplane.pb")) and list(sessions[0].glob("*.trace.json.gz"))


def test_stage1_images_are_the_held_out_reconstructions_of_the_step(profiled, digits_data_dir):
    images = watch.read_images(profiled / run_lib.TENSORBOARD_DIR)["eval/reconstructions"]
    assert [s for s, _ in images] == [4]
    sheet = images[0][1][::12, ::12]  # 8 px tiles enlarged 12x (to >= 96 px)
    assert sheet.shape == (3 * 9 + 1, 2 * 9 + 1, 3)
    config = load_config("ae/digits.py", [o.removeprefix("--config.") for o in TINY_AE])
    config.data.data_dir = digits_data_dir
    stage = autoencoder.AutoencoderStage(config)
    mesh = mesh_lib.make_mesh(config.mesh.shape)
    params = state.restore(Run.open(profiled), stage.init_state, mesh)["params"]["ae"]
    x = pipeline.split_arrays(config.data, config.data.eval_split)["image"][:2]
    rows = {"originals": x, "reconstructions": np.asarray(stage.reconstruct(params, x))}
    for r, expected in enumerate(rows.values()):
        for i in range(2):
            tile = sheet[1 + 9 * r : 9 + 9 * r, 1 + 9 * i : 9 + 9 * i, 0]
            np.testing.assert_allclose(tile, to_uint8(expected[i])[..., 0], atol=1)


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ("3", "--profile '3': give START:STEPS"),
        ("0:2", "--profile '0:2': give START:STEPS"),
        ("9:2", "train.profile_start=9: profiling starts at a step of the run"),
    ],
)
def test_a_profile_request_no_run_can_serve_is_one_line(tmp_path, capsys, profile, message):
    assert _train(tmp_path / "w", "--profile", profile) == 2
    assert message in _error_line(capsys)
    assert not (tmp_path / "w").exists()


def test_plot_writes_the_losses_and_the_throughput(toy_run, tmp_path, capsys):
    assert main(["plot", "--workdir", str(toy_run[0]), "--out", str(tmp_path)]) == 0
    for name in ("losses.png", "throughput.png"):
        with open(tmp_path / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "throughput.png" in capsys.readouterr().out


def test_plot_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert main(["plot", "--workdir", str(tmp_path)]) == 2
    assert "holds no metrics.jsonl" in _error_line(capsys)
    (tmp_path / run_lib.METRICS_FILE).write_text(json.dumps({"step": 1, "loss": 1.0}) + "\n")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    assert main(["plot", "--workdir", str(tmp_path)]) == 2
    assert "pip install 'latentjax[plot]'" in _error_line(capsys)
    assert not (tmp_path / "plots").exists()


def test_stage2_images_are_samples_of_fixed_noise_and_labels():
    """A DiT at initialisation outputs zeros (adaLN-Zero), so the rectified-flow Euler sampler
    leaves its noise as it is: each sample must be ``decode(noise / scale + shift)``."""
    from latentjax.factory import latent_shape
    from latentjax.train import dit

    ae_config = load_config("ae/digits.py", [o.removeprefix("--config.") for o in TINY_AE[:5]])
    dit_config = load_config(
        "dit/digits.py",
        [
            "model.hidden_size=16",
            "model.depth=1",
            "model.num_heads=2",
            "data.image_size=8",
            "sample.num_steps=1",
            "sample.cfg_scale=1.0",  # unguided: one network call per step, a smaller program
            "train.eval_images=3",
        ],
    )
    mesh = mesh_lib.make_mesh(dit_config.mesh.shape)
    ae_stage = autoencoder.AutoencoderStage(ae_config)
    ae = ae_stage.ae
    rngs = {"params": jax.random.key(0), "sample": jax.random.key(1)}
    ae_params = jax.jit(lambda: ae.init(rngs, ae_stage.example_input()))()
    stage = dit.DiTStage(dit_config, ae, latent_shape(ae_config))
    task = dit.make_task(stage, ae_params, {"shift": 0.25, "scale": 2.0}, mesh)
    rules = tuple(tuple(r) for r in dit_config.mesh.rules)
    _, _, init = build_state(task.init_state, mesh, rules, jax.random.key(1))
    s = init(jax.random.key(1))
    first, again = (task.images(s, step)["eval/samples"] for step in (1, 2))
    np.testing.assert_array_equal(first, again)  # the same noise and labels every time
    grid = first[::12, ::12]  # 8 px tiles enlarged 12x
    assert grid.shape == (1 * 9 + 1, 3 * 9 + 1, 3)  # one row: labels 0, 1, 2
    key = jax.random.key(dit_config.seed)
    noise = jax.random.normal(jax.random.fold_in(key, 0), (3, *stage.latent_shape))
    x = jax.jit(lambda p, z: ae.apply(p, z, method=ae.decode))(ae_params, noise / 2.0 + 0.25)
    for i in range(3):
        tile = grid[1:9, 1 + 9 * i : 9 + 9 * i, 0]
        np.testing.assert_allclose(tile, to_uint8(np.asarray(x[i]))[..., 0], atol=1)


@pytest.mark.parametrize("trips", ["known", "unknown"])
def test_a_step_that_loops_over_its_work_counts_every_trip(tmp_path, trips):
    # XLA's cost analysis counts a loop's body once, so a step that scans its work over chunks
    # (the video autoencoder's) would report too few FLOPs and too low an MFU. The loop counts
    # the program's products itself, each loop's body times its trips; where the trips are not
    # known (a while loop on a computed bound), it logs no figure rather than a wrong one. The
    # toy step (no products of its own) with a loop of 3 products of 3 x 3 matrices added.
    plain = test_loop._task()

    def step(state, frozen, batch, rng):
        state, metrics = plain.train_steps["main"](state, frozen, batch, rng)
        m = jnp.ones((3, 3)) * state["params"]["w"][:, None]
        if trips == "known":
            products, _ = jax.lax.scan(lambda c, _: (c @ m, None), jnp.eye(3), None, length=3)
        else:
            n = 3 + (state["params"]["w"][0] > 1e9).astype(jnp.int32)  # 3, computed
            _, products = jax.lax.while_loop(
                lambda c: c[0] < n, lambda c: (c[0] + 1, c[1] @ m), (0, jnp.eye(3))
            )
        return state, {**metrics, "chain": jnp.trace(products)}

    task = test_loop.Task("toy", plain.init_state, {"main": step})
    test_loop._run(tmp_path, 2, task)
    records = _records(tmp_path)
    assert records
    if trips == "known":  # 3 trips x 2 x 3^3 multiply-adds
        assert all(r["flops_per_step"] == 3 * 2 * 27 for r in records)
    else:
        assert all(r["flops_per_step"] is None and r["mfu"] is None for r in records)
    assert all(r["steps_per_s"] > 0 for r in records)


CONVS = {
    "valid": {"window_strides": (1, 1), "padding": "VALID"},
    "same": {"window_strides": (1, 1), "padding": "SAME"},
    "strided": {"window_strides": (2, 2), "padding": ((1, 2), (0, 1))},
    "dilated kernel": {"window_strides": (1, 1), "padding": "SAME", "rhs_dilation": (2, 2)},
    "dilated input": {
        "window_strides": (1, 1),
        "padding": ((2, 2), (1, 1)),
        "lhs_dilation": (2, 2),
    },
    "grouped": {"window_strides": (1, 1), "padding": "SAME", "feature_group_count": 3},
}


@pytest.mark.parametrize("kind", list(CONVS))
def test_network_flops_of_convolutions(kind):
    # Forward: XLA's cost analysis of the same convolution (which counts only the taps that
    # land on the input, not on padding or the holes of an input dilation). Gradients: every
    # multiply-add of the forward pass appears once in the input's gradient and once in the
    # kernel's, so value and both gradients are exactly 3x the forward (XLA's count of that
    # program includes elementwise work, and a dense count of padded taps would not be 3x).
    opts = CONVS[kind]
    groups = opts.get("feature_group_count", 1)
    x = jnp.ones((2, 9, 8, 6))
    w = jnp.ones((3, 3, 6 // groups, 12))

    def conv(x, w):
        dims = ("NHWC", "HWIO", "NHWC")
        return jax.lax.conv_general_dilated(x, w, dimension_numbers=dims, **opts)

    forward, exact = watch.network_flops(jax.make_jaxpr(conv)(x, w).jaxpr)
    assert exact and forward == watch.compiled_flops(jax.jit(conv).lower(x, w).compile())
    both = jax.value_and_grad(lambda x, w: jnp.sum(conv(x, w)), argnums=(0, 1))
    assert watch.network_flops(jax.make_jaxpr(both)(x, w).jaxpr) == (3 * forward, True)


def test_network_flops_of_products_loops_and_branches():
    a, b = jnp.ones((4, 5, 6)), jnp.ones((4, 6, 7))
    batched = jax.make_jaxpr(lambda a, b: jnp.einsum("bij,bjk->bik", a, b))(a, b).jaxpr
    one = 2 * 4 * 5 * 6 * 7
    assert watch.network_flops(batched) == (one, True)

    def scanned(a, b):  # 3 trips of the product, one of them inside a nested jit
        body = jax.jit(lambda c: jnp.einsum("bij,bjk->bik", a, b) + c)
        return jax.lax.scan(lambda c, _: (body(c), None), jnp.zeros((4, 5, 7)), None, length=3)[0]

    assert watch.network_flops(jax.make_jaxpr(scanned)(a, b).jaxpr) == (3 * one, True)

    def branch(a, b, p):  # the costlier branch: two products against one
        two = lambda: jnp.einsum("bij,bjk->bik", a, b) * 2 + jnp.einsum("bij,bjk->bik", a, b)  # noqa: E731
        return jax.lax.cond(p, two, lambda: jnp.einsum("bij,bjk->bik", a, b))

    assert watch.network_flops(jax.make_jaxpr(branch)(a, b, True).jaxpr) == (2 * one, True)

    def looped(a, b, n):  # trips known only at run time: counted once, and not exact
        out = jnp.zeros((4, 5, 7))
        return jax.lax.while_loop(
            lambda c: c[0] < n, lambda c: (c[0] + 1, jnp.einsum("bij,bjk->bik", a, b)), (0, out)
        )[1]

    assert watch.network_flops(jax.make_jaxpr(looped)(a, b, 3).jaxpr) == (one, False)
