"""Mutation check: plant realistic bugs in the core modules one at a time and see whether the
tests that should notice them fail.

    python tools/mutate.py                      # every mutant; writes tools/mutation_results.md
    python tools/mutate.py --only ema-warmup-inverted,cfg-mix-from-cond --no-write
    python tools/mutate.py --list

Each mutant (``tools/mutants.py``) is an exact source replacement in one file, with the test
files that ought to catch it. The package and the tests are copied once into a temporary
directory; each mutant is applied to that copy, its test files run there in a subprocess
(``pytest -x``, the copy first on ``PYTHONPATH``), and the file restored. The working tree is
never written, so an interrupted run leaves it as it was (the temporary copy is removed, and
the subprocess's process group is ended).

A mutant is *killed* when its tests fail (or time out), *survives* when they pass. Before the
mutants, the union of their test files runs on the unmutated copy and must pass. Survivors
that a mutant's ``equivalent`` field explains (a change no test can see, because the behaviour
is the same) are listed with that reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mutants import MUTANTS, Mutant  # tools/mutants.py: the list of planted bugs

ROOT = Path(__file__).resolve().parents[1]

COPIED = ("latentjax", "tests", "pyproject.toml")
RESULTS = ROOT / "tools" / "mutation_results.md"


@dataclasses.dataclass
class Outcome:
    mutant: Mutant
    status: str  # "killed" | "survived" | "timeout"
    seconds: float
    detail: str = ""  # the first failing test, for a killed mutant


def check_mutants(mutants: list[Mutant]) -> None:
    """Every mutant's original snippet occurs exactly once in its file (so a stale list fails
    loudly instead of silently testing nothing), and ids are unique."""
    ids = [m.id for m in mutants]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise SystemExit(f"duplicate mutant ids: {sorted(dup)}")
    for m in mutants:
        text = (ROOT / m.file).read_text()
        count = text.count(m.original)
        if count != 1:
            raise SystemExit(f"{m.id}: the original snippet occurs {count} times in {m.file}")
        if m.original == m.mutated:
            raise SystemExit(f"{m.id}: the mutated snippet equals the original")
        for t in m.tests:
            if not (ROOT / t.split("::")[0]).is_file():
                raise SystemExit(f"{m.id}: no test file {t}")


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int | None, str, float]:
    """pytest -x on ``tests`` in ``copy``; -> (exit code or None on timeout, output, seconds)."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=copy,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, ended as a whole below
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out, time.monotonic() - start
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out, time.monotonic() - start
    finally:
        if proc.poll() is None:  # interrupted (Ctrl-C): end the tests too
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" - ")[0].split(" ", 1)[1]
    return ""


def run_mutant(copy: Path, m: Mutant, timeout: float) -> Outcome:
    path = copy / m.file
    original = path.read_text()
    path.write_text(original.replace(m.original, m.mutated, 1))
    try:
        code, out, seconds = run_tests(copy, m.tests, timeout)
    finally:
        path.write_text(original)
    if code is None:
        return Outcome(m, "timeout", seconds)
    if code == 0:
        return Outcome(m, "survived", seconds)
    if code not in (1, 2):  # 1: a test failed; 2: collection failed (the module broke)
        raise SystemExit(f"{m.id}: pytest exited with {code}:\n{out[-3000:]}")
    return Outcome(m, "killed", seconds, first_failure(out))


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *COPIED, "tools"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def report(outcomes: list[Outcome], baseline_s: float, total_s: float, commit: str) -> str:
    n = len(outcomes)
    survivors = [o for o in outcomes if o.status == "survived"]
    rate = len(survivors) / n if n else 0.0
    lines = [
        "# Mutation check",
        "",
        f"Written by `python tools/mutate.py` (`make mutate`) on {datetime.date.today()}, "
        f"commit {commit}, in {total_s / 60:.1f} min "
        f"(the unmutated baseline took {baseline_s:.0f} s).",
        "",
        f"**{n} mutants, {n - len(survivors)} killed, {len(survivors)} survived: "
        f"survival rate {100 * rate:.1f}%.**",
        "",
    ]
    if survivors:
        lines += ["## Survivors", ""]
        for o in survivors:
            why = o.mutant.equivalent or "NOT EXPLAINED: a gap in the tests"
            lines.append(f"- `{o.mutant.id}` ({o.mutant.file}): {o.mutant.description} {why}")
        lines.append("")
    lines += [
        "## Every mutant",
        "",
        "Each ran against its test files with `pytest -x`; a killed mutant names the first test "
        "that failed.",
        "",
        "| mutant | file | bug | tests | result | s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731
    for o in outcomes:
        tests = ", ".join(Path(t).name for t in o.mutant.tests)
        result = o.status + (f" by `{o.detail}`" if o.detail else "")
        lines.append(
            f"| `{o.mutant.id}` | {o.mutant.file} | {cell(o.mutant.description)} | {tests} | "
            f"{cell(result)} | {o.seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated mutant ids")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {RESULTS.name}")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args(argv)

    mutants = list(MUTANTS)
    check_mutants(mutants)
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - {m.id for m in mutants})
        if unknown:
            raise SystemExit(f"unknown mutant ids: {unknown}")
        mutants = [m for m in mutants if m.id in wanted]
    if args.list:
        for m in mutants:
            print(f"{m.id:32s} {m.file:36s} {m.description}")
        return 0

    def interrupted(signum, frame):  # SIGTERM cleans up as Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    commit = git_commit()  # the tree that is copied, not whatever HEAD is at the end
    start = time.monotonic()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="latentjax-mutate-") as tmp:
        copy = Path(tmp)
        for name in COPIED:
            src = ROOT / name
            if src.is_dir():
                ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                shutil.copytree(src, copy / name, ignore=ignore)
            else:
                shutil.copy2(src, copy / name)
        baseline_s = 0.0
        if not args.skip_baseline:
            tests = tuple(sorted({t for m in mutants for t in m.tests}))
            print(f"baseline: {len(tests)} test files on the unmutated copy ...", flush=True)
            code, out, baseline_s = run_tests(copy, tests, args.timeout * 2)
            if code != 0:
                print(out[-5000:])
                raise SystemExit("the tests fail without any mutant; fix them first")
            print(f"baseline passed in {baseline_s:.0f} s", flush=True)
        for i, m in enumerate(mutants, 1):
            o = run_mutant(copy, m, args.timeout)
            outcomes.append(o)
            flag = "" if o.status != "survived" else "   <-- SURVIVED"
            print(f"[{i}/{len(mutants)}] {m.id}: {o.status} ({o.seconds:.0f} s){flag}", flush=True)
    total = time.monotonic() - start
    text = report(outcomes, baseline_s, total, commit)
    survivors = [o for o in outcomes if o.status == "survived"]
    print(f"\n{len(outcomes)} mutants, {len(survivors)} survived "
          f"({100 * len(survivors) / max(len(outcomes), 1):.1f}%)")  # fmt: skip
    for o in survivors:
        print(f"  survived: {o.mutant.id}: {o.mutant.equivalent or 'not explained'}")
    if not args.no_write and not args.only:
        RESULTS.write_text(text)
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the copy is removed and the tests ended by then
        sys.exit("interrupted; the working tree was not modified")
