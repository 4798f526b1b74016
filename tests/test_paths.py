"""One path type for every path a user passes (``latentjax.paths``), read with ``ast`` over the
package; the run module's whole-file writes and lock on a bucket (the GCS emulator of
``conftest.gcs_bucket``)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from latentjax import paths
from latentjax import run as run_lib
from latentjax.commands import main
from latentjax.config import resolve_config
from latentjax.errors import ConfigError, WorkdirError

PACKAGE = Path(__file__).parents[1] / "latentjax"
PATH_MODULE = PACKAGE / "paths.py"  # the one module that makes paths
PATH_CLASSES = {"Path", "PurePath", "PosixPath", "PurePosixPath", "WindowsPath", "GPath"}


PATH_MODULES = ("pathlib", "etils.epath", "latentjax.paths")


def path_violations(source: str, filename: str = "<source>") -> list[str]:
    """Where ``source`` makes a path other than through ``latentjax.paths.as_path``: any import
    of ``pathlib`` or ``etils.epath``, and any call of a path class imported from those or from
    ``latentjax.paths`` (``Path(x)``, ``pathlib.Path(x)``, ``epath.Path(x)``, ``paths.Path(x)``,
    under whatever name it was imported). Annotations (``x: Path``) are fine, and so is another
    class that happens to be named ``Path`` (``latentjax.diffusion.paths.Path``)."""
    found, classes, modules = [], set(), set()
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        line = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in PATH_MODULES:
                    modules.add(alias.asname or alias.name)
                if alias.name in PATH_MODULES[:2]:
                    found.append(f"{line}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if node.module in PATH_MODULES and alias.name in PATH_CLASSES:
                    classes.add(alias.asname or alias.name)
                elif full in PATH_MODULES:
                    modules.add(alias.asname or alias.name)
            epath = node.module == "etils" and any(a.name == "epath" for a in node.names)
            if node.module in PATH_MODULES[:2] or epath:
                found.append(f"{line}: from {node.module} import ...")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        by_name = isinstance(f, ast.Name) and f.id in classes
        by_attribute = (
            isinstance(f, ast.Attribute)
            and f.attr in PATH_CLASSES
            and ast.unparse(f.value) in modules
        )
        if by_name or by_attribute:
            found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_but_paths_makes_a_path():
    modules = sorted(PACKAGE.rglob("*.py"))
    assert PATH_MODULE in modules and len(modules) > 50
    found = [
        v
        for m in modules
        if m != PATH_MODULE
        for v in path_violations(m.read_text(), str(m.relative_to(PACKAGE.parent)))
    ]
    assert found == []


@pytest.mark.parametrize(
    "planted",
    [
        "from pathlib import Path\nPath(workdir)",
        "import pathlib\nx = pathlib.Path(args.out).suffix",
        "from etils import epath\nepath.Path(args.shard_dir)",
        "from latentjax.paths import Path\nout = Path(args.out)",
        "import etils.epath",
        "from latentjax import paths\nparts = paths.Path(args.workdir).parts",
        "from pathlib import Path as P\nx = P(y)",
    ],
)
def test_the_scan_finds_a_planted_violation(planted):
    assert path_violations(planted)
    assert path_violations("from latentjax.paths import Path, as_path\nx: Path = as_path(y)") == []
    # Another class named Path (a diffusion path) is not a file path.
    assert path_violations("from latentjax.diffusion.paths import Path\np = Path(path)") == []


def test_bucket_and_local_paths():
    assert not paths.is_local("gs://b/runs/x") and not paths.is_local("s3://b/x")
    assert paths.is_local("/tmp/x") and paths.is_local("runs/gs:x")
    assert str(paths.absolute("gs://b/runs/x")) == "gs://b/runs/x"  # not cwd + "gs:/b/..."
    assert paths.absolute("runs/x") == paths.as_path(Path.cwd() / "runs" / "x")


def test_a_config_file_in_a_bucket_is_one_line():
    with pytest.raises(ConfigError, match="Python code that latentjax imports from a local disk"):
        resolve_config("gs://b/configs/mine.py")


def test_small_files_and_the_lock_on_a_bucket(gcs_bucket):
    run = paths.as_path(f"{gcs_bucket}/paths/run")
    run_lib.write_json(run / "a.json", {"x": 1})
    run_lib.write_json(run / "a.json", {"x": 2})  # replaced whole: no .tmp object is left
    assert run_lib.read_json(run / "a.json") == {"x": 2}
    assert [p.name for p in run.iterdir()] == ["a.json"]

    with run_lib.owned(run):
        lock = json.loads((run / run_lib.LOCK_FILE).read_text())
        assert lock["pid"] > 0
        with pytest.raises(WorkdirError, match="is in use by process"):  # a second trainer
            with run_lib.owned(run):
                pass
    assert not (run / run_lib.LOCK_FILE).exists()  # released

    empty = paths.as_path(f"{gcs_bucket}/paths/never-written")
    with run_lib.owned(empty):
        pass
    assert not empty.exists()


@pytest.mark.parametrize("where", ["local", "bucket"])
def test_files_under_names_every_file_at_any_depth_where_it_is(where, gcs_bucket, tmp_path):
    root = paths.as_path(tmp_path if where == "local" else f"{gcs_bucket}/paths/tree")
    for rel in ("a.txt", "d/b.txt", "d/e/c.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    found = sorted(paths.files_under(root), key=str)
    assert [str(p) for p in found] == [str(root / r) for r in ("a.txt", "d/b.txt", "d/e/c.txt")]
    assert [p.read_text() for p in found] == ["a.txt", "d/b.txt", "d/e/c.txt"]


@pytest.mark.parametrize(
    ("argv", "what"),
    [
        (["data", "build-folder", ".", "--name", "x", "--data-dir", "gs://b/t"], "--data-dir="),
        (["train", "--config", "ae/digits.py", "--config.data.data_dir=gs://b/t"], "data_dir="),
    ],
)
def test_arrayrecord_data_in_a_bucket_is_one_line(argv, what, tmp_path, capsys, monkeypatch):
    # ArrayRecord files are local files: a bucket URL for a dataset names the gcsfuse mount
    # instead, before anything is loaded or written. (The latent cache is copied to and from
    # buckets: tests/test_latent_cache.py.)
    monkeypatch.chdir(tmp_path)
    if argv[0] == "train":
        argv = [*argv, "--workdir", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentjax: error: ") and err.count("\n") == 1, err
    assert what in err and "gcsfuse" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
