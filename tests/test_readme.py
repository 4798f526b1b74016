"""The README's demo figures are the committed demo summary's (benchmarks/demo/summary.json,
written by `latentjax demo` and copied there), never typed by hand."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).parents[1]


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.index("\n## ", start)
    return text[start:end]


def test_the_readme_quotes_the_committed_demo_summary():
    summary = json.loads((ROOT / "benchmarks" / "demo" / "summary.json").read_text())
    section = _section((ROOT / "README.md").read_text(), "### What `make demo` gives")
    n = summary["num_samples_judged"]
    quoted = {
        "ae_test_psnr_db": f"{summary['ae_test_psnr_db']:.2f} dB",
        "latent_shift": f"shift {summary['latent_shift']:.3f}",
        "latent_scale": f"scale {summary['latent_scale']:.3f}",
        "classifier_acc_samples": f"{round(summary['classifier_acc_samples'] * n):,} / {n:,}",
        "classifier_acc_real_test": f"{100 * summary['classifier_acc_real_test']:.1f}%",
        "ae_train_s": f"stage 1: {summary['ae_train_s']:.0f} s",
        "dit_train_s": f"stage 2: {summary['dit_train_s']:.0f} s",
        "sample_s": f"{n:,} samples: {summary['sample_s']:.0f} s",
    }
    missing = {k: v for k, v in quoted.items() if v not in section}
    assert not missing, missing
    assert summary["quick"] is False
