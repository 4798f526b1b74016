"""What a researcher watches during a run: TensorBoard event files, throughput and model FLOP/s
utilisation, device memory, and profiler traces.

- :class:`EventWriter` writes every logged scalar, and images at evaluation steps, to TensorBoard
  event files in ``WORKDIR/tensorboard`` through tensorboardX (no TensorFlow), from a background
  thread: the loop only hands it host values it has already fetched. Only process 0 writes. On
  resume, events after the restored step (logged by a run killed after its last checkpoint) are
  dropped from the files first, so no step appears twice, as ``metrics.jsonl`` is cut back.
  With ``train.wandb_project``, the same thread logs the same scalars and images (same tags) to
  a Weights & Biases run whose id is the run directory's own (``run.json``), so a resumed run
  continues its W&B run (see :func:`open_wandb`).
- :class:`Throughput` turns host clocks around the loop into the fields of each log line:
  steps/s, examples/s, the fraction of the time spent waiting for the next batch, each
  program's compile time (once), FLOPs per step from XLA's cost analysis of the compiled step,
  the FLOP/s achieved and their ratio to the chip's peak (MFU; ``None`` where the chip's peak is
  not known, e.g. on CPU), and device memory where the backend reports it. No device value is
  read for it, so it adds no host-device synchronisation.
- :class:`Profile` wraps the steps ``train.profile_start .. + profile_steps - 1`` in a
  ``jax.profiler`` trace written under ``WORKDIR/tensorboard/plugins/profile/``, where
  TensorBoard's profile plugin (and Perfetto, from the ``.trace.json.gz``) finds it.
"""

from __future__ import annotations

import math
import queue
import re
import struct
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from latentjax import paths
from latentjax import run as run_lib
from latentjax.errors import ConfigError
from latentjax.parallel import topologies
from latentjax.paths import Path, as_path

EVENT_FILE_PREFIX = "events.out.tfevents."
# Groups of scalars in TensorBoard: evaluation metrics and the watch fields apart from the step's.
PERF_KEYS = (
    "steps_per_s",
    "examples_per_s",
    "data_wait_fraction",
    "flops_per_step",
    "flops_per_s",
    "mfu",
    "memory_bytes_in_use",
    "memory_peak_bytes",
)


def compiled_flops(compiled) -> float:
    """FLOPs of one call of a compiled program (per device for a sharded one), from XLA's cost
    analysis; NaN where the backend gives none."""
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):  # older JAX: one dict per program
        cost = cost[0] if cost else None
    return float((cost or {}).get("flops", float("nan")))


def loop_trip_counts(compiled) -> list[int]:
    """The trip counts of the loops of a compiled program that do a network's work more than
    once (a ``lax.scan`` whose body holds a convolution or a matrix product, such as the video
    autoencoder's over chunks of frames), as XLA annotates them (``known_trip_count``; 0 where
    it could not tell). XLA's cost analysis counts a loop's body once, so ``compiled_flops`` of a
    program with any such loop is a lower bound. Loops of elementwise work (the PRNG's rounds)
    and loops that run once are left out: they leave nothing that matters uncounted."""
    text = compiled.as_text()
    bodies = _computations(text)
    heavy: dict[str, bool] = {}

    def is_heavy(name: str, seen: frozenset = frozenset()) -> bool:
        if name not in heavy:
            body = bodies.get(name, "")
            callees = set(re.findall(r"%([\w.\-]+)", body)) & bodies.keys() - seen - {name}
            heavy[name] = bool(_NETWORK_OPS.search(body)) or any(
                is_heavy(c, seen | {name}) for c in callees
            )
        return heavy[name]

    counts = []
    for line in text.splitlines():
        if " while(" not in line:
            continue
        body = re.search(r"body=%([\w.\-]+)", line)
        if body and is_heavy(body.group(1)):
            m = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
            n = int(m.group(1)) if m else 0
            if n != 1:
                counts.append(n)
    return counts


_NETWORK_OPS = re.compile(r" (convolution|dot)\(")


def network_flops(jaxpr) -> tuple[float, bool]:
    """The FLOPs of a (closed) jaxpr's matrix products and convolutions, two per
    multiply-accumulate, with each ``scan`` body counted ``length`` times (what XLA's cost
    analysis does not do: it counts a loop's body once) and the costlier branch of a ``cond``.
    -> (FLOPs, exact): exact is False where a ``while`` loop of unknown trip count was counted
    once. Elementwise work is left out, as the model-FLOPs convention of MFU leaves it out
    (Chowdhery et al. 2022, PaLM, appendix B)."""
    total, exact = 0.0, True
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        out = eqn.outvars[0].aval.shape if eqn.outvars else ()
        if name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += 2.0 * math.prod(out) * math.prod(lhs[d] for d in contract)
            continue
        if name == "conv_general_dilated":
            total += 2.0 * _conv_macs(eqn)
            continue
        subs = [(k, v) for k, v in eqn.params.items() if _is_jaxpr(v) or _is_jaxprs(v)]
        if name == "cond":
            counted = [network_flops(_open(b)) for b in eqn.params["branches"]]
            total += max(f for f, _ in counted)
            exact = exact and all(e for _, e in counted)
            continue
        times = eqn.params["length"] if name == "scan" else 1
        if name == "while":
            exact = False
            subs = [("body_jaxpr", eqn.params["body_jaxpr"])]
        for _, sub in subs:
            for one in sub if _is_jaxprs(sub) else [sub]:
                f, e = network_flops(_open(one))
                total += times * f
                exact = exact and e
    return total, exact


def _conv_macs(eqn) -> float:
    """Multiply-accumulates of a ``conv_general_dilated``: per output element, the kernel's
    input features (one group's) times the window taps that land on the input, not on its
    padding or the holes of an input dilation (how XLA's cost analysis counts them: the
    input-gradient of a convolution is a convolution padded by the kernel's size less one)."""
    p = eqn.params
    lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
    out = eqn.outvars[0].aval.shape
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    lhs_dilation = p["lhs_dilation"] or (1,) * (len(lhs) - 2)
    rhs_dilation = p["rhs_dilation"] or (1,) * (len(lhs) - 2)
    taps = 1
    for i in range(len(lhs) - 2):
        n, k, m = lhs[lhs_spec[2 + i]], rhs[rhs_spec[2 + i]], out[out_spec[2 + i]]
        ld, rd, (lo, _) = lhs_dilation[i], rhs_dilation[i], p["padding"][i]
        at = np.arange(m)[:, None] * p["window_strides"][i] + np.arange(k)[None, :] * rd - lo
        taps *= int(np.sum((at >= 0) & (at <= (n - 1) * ld) & (at % ld == 0)))
    return float(out[out_spec[0]] * out[out_spec[1]] * rhs[rhs_spec[1]] * taps)


def _is_jaxpr(value) -> bool:
    from jax.extend import core

    return isinstance(value, core.ClosedJaxpr | core.Jaxpr)


def _is_jaxprs(value) -> bool:
    return isinstance(value, tuple | list) and bool(value) and all(map(_is_jaxpr, value))


def _open(jaxpr):
    return getattr(jaxpr, "jaxpr", jaxpr)


def _computations(hlo: str) -> dict[str, str]:
    """The computations of HLO text: name -> its instructions."""
    out, name, lines = {}, None, []
    for line in hlo.splitlines():
        if name is None:
            m = re.match(r"\s*(?:ENTRY\s+)?%([\w.\-]+)\s.*\{\s*$", line)
            if m:
                name, lines = m.group(1), []
        elif line.strip() == "}":
            out[name], name = "\n".join(lines), None
        else:
            lines.append(line)
    return out


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of a logged key: ``eval/…``, ``perf/…`` or ``train/…``."""
    if key.startswith("test_"):
        return f"eval/{key}"
    if key in PERF_KEYS or key.startswith("compile_seconds"):
        return f"perf/{key}"
    return f"train/{key}"


class EventWriter:
    """TensorBoard event files of a run, written by a background thread (process 0 only).

    ``start`` is the step the run resumes from (0 for a new run): events of later steps in the
    directory are dropped before this run writes its own. A failure to write (a full disk) is
    reported once on stderr and ends the writing, not the training."""

    def __init__(
        self,
        directory: str | Path,
        start: int,
        enabled: bool = True,
        wandb_run: Any = None,
        tensorboard: bool = True,
    ):
        self.directory = as_path(directory)
        self.enabled = enabled and jax.process_index() == 0
        self.error: BaseException | None = None
        self._wandb = wandb_run if self.enabled else None
        self._writer = None
        if not self.enabled:
            return
        if tensorboard:
            self.directory.mkdir(parents=True, exist_ok=True)
            drop_events_after(self.directory, start)
            from tensorboardX import SummaryWriter

            # File names hold the second they were created and the host; the suffix keeps two
            # sittings started within one second apart (the same start step drops the same
            # events).
            suffix = f".from{start}"
            self._writer = SummaryWriter(str(self.directory), flush_secs=30, filename_suffix=suffix)
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="latentjax-tensorboard")
        self._thread.daemon = True
        self._thread.start()

    def scalars(self, step: int, values: dict[str, float | None]) -> None:
        """Queues ``values`` (None and non-finite values are left out: TensorBoard has no
        place for a missing value)."""
        if self.enabled:
            clean = {k: v for k, v in values.items() if v is not None and math.isfinite(v)}
            self._queue.put(("scalars", step, clean))

    def images(self, step: int, images: dict[str, np.ndarray]) -> None:
        """Queues ``images``: tag -> uint8 [H, W, 3] (a grid already laid out)."""
        if self.enabled and images:
            self._queue.put(("images", step, images))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            kind, step, values = item
            if self.error is not None:
                continue
            try:
                tagged = values
                if kind == "scalars":
                    tagged = {scalar_tag(key): value for key, value in values.items()}
                if self._writer is not None:
                    for tag, value in tagged.items():
                        if kind == "scalars":
                            self._writer.add_scalar(tag, value, step)
                        else:
                            self._writer.add_image(tag, value, step, dataformats="HWC")
                if self._wandb is not None:
                    import wandb

                    if kind == "images":
                        tagged = {tag: wandb.Image(image) for tag, image in values.items()}
                    self._wandb.log(tagged, step=step)
            except Exception as e:  # noqa: BLE001 - reported once; training goes on
                self.error = e
                print(f"latentjax: TensorBoard/W&B writing stopped: {e}", file=sys.stderr)

    def close(self) -> None:
        if self.enabled:
            self._queue.put(None)
            self._thread.join()
            if self._writer is not None:
                self._writer.close()
            if self._wandb is not None:
                self._wandb.finish()
            self.enabled = False


def check_wandb(t) -> None:
    """A ``train`` section asking for Weights & Biases needs the package (checked before the
    run directory is touched)."""
    if not t.wandb_project:
        return
    try:
        import wandb  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"train.wandb_project={t.wandb_project!r} needs Weights & Biases: "
            "pip install 'latentjax[wandb]' (or set train.wandb_project='')"
        ) from e


def open_wandb(workdir: Path, config, start: int) -> Any:
    """The Weights & Biases run of a training run (process 0, ``train.wandb_project`` set),
    else None (also when W&B cannot start, e.g. not logged in: said once on stderr, and the
    training goes on, as when TensorBoard cannot write). Its id is the run directory's
    (``run.json``) and W&B's own files go to ``WORKDIR/wandb``, so a resumed run (on this host
    or another) continues the same W&B run; ``WANDB_MODE=offline`` keeps it on disk for
    ``wandb sync``.

    W&B's history is append-only: steps a killed sitting logged after its last checkpoint are
    not cut back there (TensorBoard and ``metrics.jsonl`` are), and W&B ignores the resumed
    sitting's repeat of those steps. Resume is exact, so the step metrics of both agree; only
    the throughput fields of those few steps are the killed sitting's."""
    t = config.train
    if not t.wandb_project or jax.process_index() != 0:
        return None
    import wandb

    try:
        return wandb.init(
            project=t.wandb_project,
            entity=t.wandb_entity or None,
            id=run_lib.Run.open(workdir).id,
            name=t.wandb_name or workdir.name,
            resume="allow",
            # W&B writes its files locally: beside the run, or for a bucket run in the
            # working directory's ./wandb (W&B's default).
            dir=str(workdir) if paths.is_local(workdir) else None,
            config=config.to_dict(),
            settings=wandb.Settings(console="off", silent=True),
        )
    except Exception as e:  # noqa: BLE001 - not logged in, no network: training goes on
        print(f"latentjax: W&B not started ({type(e).__name__}: {e})", file=sys.stderr)
        return None


# ---------------------------------------------------------------------------------------------
# Event files: read back, and cut back on resume.


def event_files(directory: str | Path) -> list[Path]:
    return sorted(p for p in as_path(directory).glob(f"{EVENT_FILE_PREFIX}*") if p.is_file())


def _records(path: Path) -> Iterator[bytes]:
    """The raw records (length, its checksum, data, its checksum) of a TFRecord file; a record
    cut short (a process killed while writing it) ends the file."""
    data = path.read_bytes()
    at = 0
    while at + 12 <= len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        end = at + 12 + length + 4
        if end > len(data):
            return
        yield data[at:end]
        at = end


def _event(record: bytes):
    from tensorboardX.proto import event_pb2

    event = event_pb2.Event()
    event.ParseFromString(record[12:-4])
    return event


def read_events(directory: str | Path) -> list:
    """Every event (``tensorboardX.proto.event_pb2.Event``) in a directory's event files, file
    by file in name order (their names start with the time they were created)."""
    return [_event(r) for path in event_files(directory) for r in _records(path)]


def read_scalars(directory: str | Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value), ...] of the scalars in a directory's event files."""
    out: dict[str, list[tuple[int, float]]] = {}
    for event in read_events(directory):
        for value in event.summary.value:
            if value.HasField("simple_value"):
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def read_images(directory: str | Path) -> dict[str, list[tuple[int, np.ndarray]]]:
    """tag -> [(step, uint8 image [H, W, C]), ...] of the images in a directory's event files."""
    import io

    from PIL import Image

    out: dict[str, list[tuple[int, np.ndarray]]] = {}
    for event in read_events(directory):
        for value in event.summary.value:
            if value.HasField("image"):
                pixels = np.asarray(Image.open(io.BytesIO(value.image.encoded_image_string)))
                out.setdefault(value.tag, []).append((event.step, pixels))
    return out


def drop_events_after(directory: Path, step: int) -> None:
    """Rewrites (whole, by rename) every event file holding events of steps after ``step``
    without them. Only the files of the segment that ran past its last checkpoint hold any."""
    for path in event_files(directory):
        records = list(_records(path))
        kept = [r for r in records if _event(r).step <= step]
        if len(kept) != len(records) or path.stat().length != sum(map(len, records)):
            run_lib.write_atomic(path, lambda f, kept=kept: f.write(b"".join(kept)))


# ---------------------------------------------------------------------------------------------
# Throughput, FLOPs, memory.


def device_memory() -> dict[str, float]:
    """Bytes in use and the peak on this process's devices (the largest over them), where the
    backend reports them (GPU, TPU); empty on CPU."""
    stats = [d.memory_stats() for d in jax.local_devices()]
    stats = [s for s in stats if s]
    if not stats:
        return {}
    out = {"memory_bytes_in_use": float(max(s.get("bytes_in_use", 0) for s in stats))}
    peaks = [s["peak_bytes_in_use"] for s in stats if "peak_bytes_in_use" in s]
    if peaks:
        out["memory_peak_bytes"] = float(max(peaks))
    return out


def peak_flops(device: jax.Device | None = None) -> float | None:
    """The chip's peak dense bf16 FLOP/s (``topologies.CHIPS``), None for a device the table
    does not know (CPU, other GPUs)."""
    device = device or jax.local_devices()[0]
    chip = topologies.chip_of_device(device.device_kind)
    return chip.peak_flops if chip is not None else None


class Throughput:
    """Host clocks around the loop -> the watch fields of each log line (module docstring).

    Per interval between two log lines: the wall time, less the time spent compiling and
    evaluating (each reported on its own), is the time of the steps; ``data_wait_fraction`` is
    the part of it spent in ``next(iterator)``. Steps are dispatched asynchronously, but the
    loop reads each step's non-finite flag when the next is dispatched, so the host runs at
    most a step ahead and the interval measures the device's pace."""

    def __init__(self, start: int, batch_size: int, peak: float | None = None):
        self.batch_size = batch_size
        self.peak = peak
        self._reset(start)
        self.flops: dict[str, float] = {}  # program -> FLOPs per step (per device)
        self._compiled: dict[str, float] = {}  # compile seconds not yet reported
        self._last = ""  # the program of the latest step

    def _reset(self, step: int) -> None:
        self._step, self._time = step, time.perf_counter()
        self._data = self._aside = self._flops_done = 0.0

    def data_wait(self, seconds: float) -> None:
        self._data += seconds

    def aside(self, seconds: float) -> None:
        """Time of the interval that is not stepping (evaluation, images)."""
        self._aside += seconds

    def compiled(self, program: str, seconds: float, flops: float) -> None:
        self.flops[program] = flops
        self._compiled[program] = seconds
        self._aside += seconds

    def step(self, program: str) -> None:
        self._flops_done += self.flops.get(program, math.nan)
        self._last = program

    def report(self, step: int) -> dict[str, float | None]:
        now = time.perf_counter()
        steps = step - self._step
        busy = max(now - self._time - self._aside, 1e-9)
        out: dict[str, float | None] = {
            "steps_per_s": steps / busy,
            "examples_per_s": steps * self.batch_size / busy,
            "data_wait_fraction": min(1.0, self._data / busy),
        }
        flops = self.flops.get(self._last, math.nan)
        out["flops_per_step"] = flops if math.isfinite(flops) else None
        rate = self._flops_done / busy
        out["flops_per_s"] = rate if math.isfinite(rate) else None
        out["mfu"] = rate / self.peak if self.peak and math.isfinite(rate) else None
        out.update(device_memory())
        for program, seconds in self._compiled.items():
            out[f"compile_seconds_{program}"] = seconds
        self._compiled = {}
        self._reset(step)
        return out


# ---------------------------------------------------------------------------------------------
# Profiler traces.


def parse_profile(text: str) -> tuple[int, int]:
    """``"10:3"`` -> (10, 3): the first step to trace (1-based) and how many."""
    start, sep, count = text.partition(":")
    if sep and start.strip().isdigit() and count.strip().isdigit():
        first, steps = int(start), int(count)
        if first >= 1 and steps >= 1:
            return first, steps
    raise ConfigError(
        f"--profile {text!r}: give START:STEPS, the first step to trace (from 1) and how many "
        "steps, e.g. --profile 10:3"
    )


class Profile:
    """A ``jax.profiler`` trace of steps ``start .. start + count - 1`` (1-based) into
    ``directory`` (process 0 only; ``count == 0``: none). A resumed run inside the window
    traces the steps left of it."""

    def __init__(self, directory: str | Path, start: int, count: int):
        self.directory = as_path(directory)
        self.first, self.last = start, start + count - 1
        self.enabled = count > 0 and jax.process_index() == 0
        self.active = False

    def before(self, step: int) -> None:
        if self.enabled and not self.active and self.first <= step <= self.last:
            self.directory.mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(str(self.directory))
            self.active = True

    def after(self, step: int, outputs: Any) -> str | None:
        """Ends the trace after the window's last step has run; -> a line saying where."""
        if self.active and step >= self.last:
            jax.block_until_ready(outputs)
            return self.stop()
        return None

    def stop(self) -> str | None:
        if not self.active:
            return None
        jax.profiler.stop_trace()
        self.active = False
        return (
            f"profile of steps {self.first}-{self.last} in {self.directory}/plugins/profile "
            f"(tensorboard --logdir {self.directory})"
        )
