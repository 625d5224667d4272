"""benchmarks/baseline_ablation.py and benchmarks/segmenter_gain.py on a finished tiny pipeline run: the ablation
reads the run's folds, features and slices, and its image-only row is the baselines stage's predicted_mask AUC; the
gain benchmark trains on the run's fold 0."""

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


GAIN_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "segmenter_gain.py"


def test_the_segmenter_gain_benchmark_trains_on_the_runs_fold_and_the_gain_matters(tiny_run_copy):
    repo = tiny_run_copy
    command = [sys.executable, str(GAIN_SCRIPT), "--gains", "1", "100", "--steps", "60", "--patients", "6", "3"]
    out = run_tool(command, repo, env=tool_env(repo / "src")).stdout
    rows = re.findall(r"^(\S+) \| (\d+) \| (\d\.\d{4}) \| (\d\.\d{3}) \| (-?\d+\.\d{2})$", out, flags=re.MULTILINE)
    assert [(gain, int(step)) for gain, step, *_ in rows] == [("1", 50), ("1", 60), ("100", 50), ("100", 60)]
    assert all(0 <= float(dice) <= 1 for *_, dice, _ in rows)
    losses = {gain: float(loss) for gain, step, loss, *_ in rows if step == "60"}
    biases = {gain: float(bias) for gain, step, *_, bias in rows if step == "60"}
    assert losses["100"] < losses["1"]  # the same draws, a hundred times the travel a step: a better fit
    assert biases["100"] < biases["1"] < 0  # towards the log-odds of a tumour pixel
