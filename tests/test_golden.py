"""Behaviour unchanged by refactoring: summary.json of a fixed tiny run, every digit of it,
against a golden file. Regenerate it (and say in the commit what moved and why) only when a
change is meant to move numbers:

    .venv/bin/python tests/test_golden.py
"""

import json
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden" / "tiny_summary.json"


def golden_config():
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import TINY_CONFIG

    cfg = json.loads(json.dumps(TINY_CONFIG))
    cfg["attacks"] = ["lira_online", "rmia", "attack_r", "loss"]
    cfg["analysis"]["model_bootstrap"] = 50
    return cfg


def make_summary(out: Path) -> dict:
    from privdyn import pipeline
    from privdyn.config import config_from_dict

    pipeline.run_all(config_from_dict(golden_config()), out, progress=False, with_report=False)
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_summary_matches_the_golden_file_to_the_last_digit(tmp_path):
    assert make_summary(tmp_path / "run") == json.loads(GOLDEN.read_text())


if __name__ == "__main__":
    import tempfile

    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        GOLDEN.write_text(json.dumps(make_summary(Path(d) / "run"), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
