"""notebooks/quickstart.ipynb runs end to end (nbclient) with a few steps per stage on CPU, on
the Python API: the command line runs in one cell only (the one tagged "cli", which shows the
commands of the notebook's steps and runs `latentjax config show`). That `latentjax sample` gives
the pipeline's images is tests/test_pipeline.py's."""

import json
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
import xla
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "quickstart.ipynb"
# A cell that runs the `latentjax` command: `python -m latentjax ...` or a shell escape.
RUNS_THE_CLI = re.compile(r'"-m",\s*"latentjax"|^\s*[!%]+\s*(bash\s+)?latentjax\b', re.M)


def test_only_the_cli_cell_runs_the_command_line():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    runs = [c for c in nb.cells if c.cell_type == "code" and RUNS_THE_CLI.search(c.source)]
    assert [c.metadata.get("tags") for c in runs] == [["cli"]]
    assert all("git clone" not in c.source for c in nb.cells)
    assert any("pip install" in c.source for c in nb.cells if c.cell_type == "markdown")


def _execute(path: Path, monkeypatch, timeout: int):
    """Runs the notebook at ``path`` (in the environment the test set) with the suite's XLA
    settings; fails on any cell's error. -> (its code cells, their printed text)."""
    monkeypatch.setenv("XLA_FLAGS", xla.flags())
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3").execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    outputs = [o for cell in code for o in cell.outputs]
    assert all(o.get("output_type") != "error" for o in outputs)
    return code, "".join(o.get("text", "") for o in outputs)


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path, digits_data_dir, monkeypatch):
    workdir = tmp_path / "runs"
    for key, value in {
        "LATENTJAX_NB_AE_STEPS": "3",
        "LATENTJAX_NB_DIT_STEPS": "3",
        "LATENTJAX_NB_SAMPLE_STEPS": "2",
        "LATENTJAX_NB_BATCH": "16",
        "LATENTJAX_NB_WORKDIR": str(workdir),
        "LATENTJAX_DATA_DIR": digits_data_dir,
    }.items():
        monkeypatch.setenv(key, value)
    code, text = _execute(NOTEBOOK, monkeypatch, timeout=300)
    # The install cell found latentjax importable (no install): the package of this checkout.
    assert f"at {NOTEBOOK.parents[1] / 'latentjax'}" in text
    # latentjax.train returned each run's final metrics (the last line of its metrics.jsonl).
    for stage, key, fmt in (("ae", "test_psnr", ".2f"), ("dit", "loss", ".4f")):
        last = json.loads((workdir / stage / "metrics.jsonl").read_text().splitlines()[-1])
        assert last["step"] == 3
        shown = f"stage {1 if stage == 'ae' else 2}: step 3, "
        assert shown in text and format(last[key], fmt) in text.split(shown)[1].split("\n")[0]
    assert "active units" in text and "latent shift" in text
    # Reconstructions, loss curves, samples and the guidance grid were drawn.
    pictures = [c for c in code if any("image/png" in o.get("data", {}) for o in c.outputs)]
    assert len(pictures) == 4
    data = np.load(workdir / "samples.npz")
    assert data["images"].shape == (100, 16, 16, 1) and data["images"].dtype == np.uint8
    assert data["labels"].tolist() == list(range(10)) * 10
    # The CLI cell ran `latentjax config show` once, with the keys the notebook set.
    cli = [c for c in code if c.metadata.get("tags") == ["cli"]][0]
    cli_text = "".join(o.get("text", "") for o in cli.outputs)
    assert "train.num_steps = 3" in cli_text and "optimiser steps" in cli_text
    assert f"ae_workdir = '{workdir / 'ae'}'" in cli_text


VIDEO = NOTEBOOK.parent / "video.ipynb"


def test_the_video_notebook_is_on_the_python_api():
    nb = nbformat.read(VIDEO, as_version=4)
    assert not [c for c in nb.cells if c.cell_type == "code" and RUNS_THE_CLI.search(c.source)]
    assert any("pip install" in c.source for c in nb.cells if c.cell_type == "markdown")


@pytest.mark.slow  # compiles the video autoencoder's two steps: about 4 minutes on 2 cores
def test_video_notebook_executes(tmp_path, monkeypatch):
    workdir = tmp_path / "runs"
    for key, value in {
        "LATENTJAX_NB_AE_STEPS": "2",
        "LATENTJAX_NB_DIT_STEPS": "2",
        "LATENTJAX_NB_SAMPLE_STEPS": "2",
        "LATENTJAX_NB_SMALL": "1",
        "LATENTJAX_NB_WORKDIR": str(workdir),
        "LATENTJAX_DATA_DIR": str(tmp_path / "tfds"),
    }.items():
        monkeypatch.setenv(key, value)
    _, text = _execute(VIDEO, monkeypatch, timeout=600)
    assert "stage 1: step 2" in text and "stage 2: step 2" in text
    assert "clips (50, 9, 16, 16, 1) uint8" in text and "recognised per frame" in text
    assert "variety against real clips: glyphs" in text
    assert (workdir / "clips.gif").is_file()
