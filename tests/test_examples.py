"""The examples for bringing your own model run end to end (at toy size, without the HTML report)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.mark.parametrize(("script", "mode"), [("custom_cnn.py", "one at a time"), ("transformer.py", "batched")])
def test_example_runs_and_records_how_it_trained(tmp_path, script, mode):
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, str(EXAMPLES / script), "--tiny", "--no-report", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    assert "TPR at 1% FPR" in done.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stages"]["train"]["training_mode"] == mode
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_models"] == 4 and len(summary["epochs"]) == 2
