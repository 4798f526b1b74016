"""The β-sweep study script (benchmarks/beta_sweep/sweep.py) saves its measurements before it
plots, and writes the committed figures only when asked. Training and evaluation are replaced by
fakes here: what is tested is the script's own order of work and where it writes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

SWEEP = Path(__file__).parents[1] / "benchmarks" / "beta_sweep" / "sweep.py"


@pytest.fixture
def sweep(monkeypatch):
    spec = importlib.util.spec_from_file_location("beta_sweep", SWEEP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trained = []
    monkeypatch.setattr(module, "train", lambda config, workdir, **kw: trained.append(workdir))
    monkeypatch.setattr(module, "make_mesh", lambda shape: None)
    monkeypatch.setattr(
        module, "split_arrays", lambda data, split: {"image": np.zeros((4, 16, 16, 1))}
    )

    def evaluate(workdir, mesh, images, num_show):
        return {"mse": 0.1, "psnr": 10.0, "kl_per_image": 1.0, "active_units": 3, "units": 4}

    monkeypatch.setattr(module, "evaluate", evaluate)
    module.trained = trained
    return module


def test_results_are_saved_before_the_plot_and_never_over_the_committed_figures(
    sweep, tmp_path, monkeypatch
):
    committed = {p.name: p.stat().st_mtime_ns for p in SWEEP.parent.iterdir() if p.is_file()}

    def broken_plot(*args, **kwargs):  # matplotlib missing, or any failure while plotting
        raise RuntimeError("no plotting here")

    monkeypatch.setattr(sweep, "plot", broken_plot)
    monkeypatch.setattr(sys, "argv", ["sweep.py", "--workdir", str(tmp_path), "--steps", "2"])
    with pytest.raises(RuntimeError, match="no plotting here"):
        sweep.main()
    results = json.loads((tmp_path / "figures" / "results.json").read_text())
    assert len(results["runs"]) == len(sweep.trained) == 2 * len(sweep.BETAS)
    now = {p.name: p.stat().st_mtime_ns for p in SWEEP.parent.iterdir() if p.is_file()}
    assert now == committed


def test_the_plotting_dependency_is_declared():
    import tomllib

    extras = tomllib.loads((SWEEP.parents[2] / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("matplotlib") for d in extras["optional-dependencies"]["bench"])
