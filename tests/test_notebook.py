"""notebooks/quickstart.ipynb runs end to end (nbclient) with a few steps per stage on CPU."""

from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "quickstart.ipynb"


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
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    # The install cell found latentjax importable (no clone): the package of this checkout.
    assert f"at {NOTEBOOK.parents[1] / 'latentjax'}" in text
    assert "latent shift" in text and "channel" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the grid was displayed
    data = np.load(workdir / "samples.npz")
    assert data["images"].shape == (100, 16, 16, 1) and data["images"].dtype == np.uint8
    assert sorted(set(data["labels"].tolist())) == list(range(10))
    assert (workdir / "samples.png").stat().st_size > 0
    assert all(o.get("output_type") != "error" for o in outputs)
