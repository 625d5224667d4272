"""benchmarks/baseline_ablation.py on a finished tiny pipeline run: it reads the run's folds, features and slices,
and its image-only row is the baselines stage's predicted_mask AUC."""

import json
import re
import sys
from pathlib import Path

import pytest
from conftest import run_tool, tool_env

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tiny_run")]

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "baseline_ablation.py"


def test_the_ablation_reads_the_run_and_agrees_with_the_baselines_stage(tiny_run_copy):
    repo = tiny_run_copy
    out = run_tool([sys.executable, str(SCRIPT)], repo, env=tool_env(repo / "src")).stdout
    rows = dict(re.findall(r"^(.+?)\s{2,}(\d\.\d{3})$", out, flags=re.MULTILINE))
    assert "5 folds, 16 held-out patients" in out
    assert len(rows) == 7 and all(0 <= float(auc) <= 1 for auc in rows.values())
    stage = json.loads((repo / "metrics/baselines.json").read_text())
    assert rows["predicted_mask, 64 px (21, image-only)"] == f"{stage['predicted_mask']['auc']:.3f}"
    assert rows["seg_statistics (all 24)"] == f"{stage['seg_statistics']['auc']:.3f}"
