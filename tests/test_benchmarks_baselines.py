"""benchmarks/baseline_ablation.py, benchmarks/segmenter_gain.py and benchmarks/moments_ceiling.py on a finished tiny
pipeline run: the ablation reads the run's folds, features and slices, and its image-only row is the baselines
stage's predicted_mask AUC; the gain benchmark trains on the run's fold 0; the ceiling benchmark scores a run with the
tumour-moments stream as evaluate does."""

import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from conftest import repro, run_tool, tool_env, write_params

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tiny_run")]

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "baseline_ablation.py"


def test_the_ablation_reads_the_run_and_agrees_with_the_baselines_stage(tiny_run_copy):
    repo = tiny_run_copy
    out = run_tool([sys.executable, str(SCRIPT)], repo, env=tool_env(repo / "src")).stdout
    rows = dict(re.findall(r"^(.+?)\s{2,}(\d\.\d{3})$", out, flags=re.MULTILINE))
    assert "5 folds, 16 held-out patients" in out
    assert len(rows) == 15 and all(0 <= float(auc) <= 1 for auc in rows.values())
    assert sum(name.startswith("stream: ") for name in rows) == 8
    stage = json.loads((repo / "metrics/baselines.json").read_text())
    assert rows["predicted_mask, 64 px (21, image-only)"] == f"{stage['predicted_mask']['auc']:.3f}"
    assert rows["seg_statistics (all 24)"] == f"{stage['seg_statistics']['auc']:.3f}"
    # --seed draws the folds as the split stage does: at the run's own seed, the run's folds and the same rows
    seed = yaml.safe_load((repo / "params.yaml").read_text())["seed"]
    again = run_tool([sys.executable, str(SCRIPT), "--seed", str(seed)], repo, env=tool_env(repo / "src")).stdout
    assert again == f"seed {seed}\n{out}"
    other = run_tool([sys.executable, str(SCRIPT), "--seed", str(seed + 1)], repo, env=tool_env(repo / "src")).stdout
    assert other.startswith(f"seed {seed + 1}\n5 folds, 16 held-out patients")
    assert len(re.findall(r"^(.+?)\s{2,}(\d\.\d{3})$", other, flags=re.MULTILINE)) == 15


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
    assert all(bias < 0 for bias in biases.values())  # from the prior log-odds of a tumour pixel


CEILING_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "moments_ceiling.py"


def test_the_moments_ceiling_benchmark_scores_a_moments_run_as_evaluate_does(tiny_run_copy):
    repo = tiny_run_copy
    refused = run_tool([sys.executable, str(CEILING_SCRIPT)], repo, env=tool_env(repo / "src"), check=False)
    assert refused.returncode != 0
    assert refused.stderr.strip() == "moments_ceiling: run workspace has train.model.tumour_moments false"
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["pixel_supervision"] = 1.0
    params["train"]["model"]["tumour_moments"] = True
    write_params(repo, params)
    repro(repo)
    out = run_tool([sys.executable, str(CEILING_SCRIPT)], repo, env=tool_env(repo / "src")).stdout
    rows = dict(re.findall(r"^\| (.+?) \| (\d\.\d{3}) \|$", out, flags=re.MULTILINE))
    assert list(rows) == [
        "model",
        "moments stream alone",
        "MIL stream alone",
        "refit on its moments",
        "true tumour, 64 px",
        "true interior, 64 px",
        "true tumour, 64 px, 21 statistics",
        "true tumour, native resolution",
        "segmenter's held-out Dice",
    ]
    pooled = json.loads((repo / "metrics/cv_summary.json").read_text())["pooled"]["auc"]
    assert rows["model"] == f"{pooled:.3f}"  # scored as evaluate scores it
    assert all(0 <= float(value) <= 1 for value in rows.values())
    # the stream with the three regions (13 numbers): scored as evaluate scores it too
    params["train"]["pixel_target"] = "regions"
    write_params(repo, params)
    repro(repo)
    out = run_tool([sys.executable, str(CEILING_SCRIPT)], repo, env=tool_env(repo / "src")).stdout
    rows = dict(re.findall(r"^\| (.+?) \| (\d\.\d{3}) \|$", out, flags=re.MULTILINE))
    pooled = json.loads((repo / "metrics/cv_summary.json").read_text())["pooled"]["auc"]
    assert len(rows) == 9 and rows["model"] == f"{pooled:.3f}"
    # slices that are not the run's are refused, though the workspace's dvc.lock still names the run's
    manifest = repo / "data/preprocessed/manifest.csv"
    text = manifest.read_text()
    manifest.unlink()  # not through a link into the cache
    manifest.write_text(text + "\n")
    refused = run_tool([sys.executable, str(CEILING_SCRIPT)], repo, env=tool_env(repo / "src"), check=False)
    assert refused.returncode != 0
    assert refused.stderr.strip() == "moments_ceiling: data/preprocessed is not run workspace's (its files differ)"
