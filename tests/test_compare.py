"""Paired (and unpaired) before -> after analysis of two runs' per-patient predictions."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_tool, tool_env
from scipy import stats as sps

from gliomil.comparison.compare import (
    ACCURACY,
    HGG_RECALL,
    LGG_RECALL,
    PRIMARY,
    SPLITS,
    PairedComparison,
    UnpairedComparison,
    compare_predictions,
    comparison_json,
    render_comparison,
)
from gliomil.comparison.statistics import holm
from gliomil.errors import GliomilError
from gliomil.evaluation.intervals import delong_auc_ci
from gliomil.evaluation.metrics import balanced_accuracy

REPO = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).parent / "dvc")

# pROC's roc.test(wfns, s100b, method = "delong") on aSAH: wfns is `after`, s100b `before`.
PROC_Z, PROC_P = 2.20898359144091, 0.0271757822291882
PROC_CI = (0.0104061769564846, 0.174214419249478)


def _run(labels, scores, youden_threshold, fold=0, subject_ids=None) -> pd.DataFrame:
    """A run's prediction table as plots/cv/pooled_predictions.csv has it."""
    labels, scores = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)
    return pd.DataFrame(
        {
            "subject_id": np.arange(labels.size) if subject_ids is None else subject_ids,
            "grade": np.where(labels == 1, "HGG", "LGG"),
            "label": labels,
            "probability": scores,
            "predicted_at_0.5": (scores >= 0.5).astype(int),
            "predicted_at_youden": (scores >= youden_threshold).astype(int),
            "fold": fold,
        }
    )


@pytest.fixture(scope="module")
def asah_runs(asah):
    """before = s100b, after = wfns on pROC's aSAH data (label 1 = outcome Poor)."""
    labels, markers = asah
    return _run(labels, markers["s100b"], 0.2), _run(labels, markers["wfns"], 3)


@pytest.fixture(scope="module")
def asah_result(asah_runs):
    return compare_predictions(*asah_runs)


def _synthetic_run(seed: int, n_hgg=30, n_lgg=20, shift=1.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n_hgg, int), np.zeros(n_lgg, int)]
    probabilities = 1 / (1 + np.exp(-(rng.normal(size=labels.size) + shift * (2 * labels - 1))))
    return _run(labels, probabilities.round(6), 0.45, fold=np.arange(labels.size) % 3)


# ---------------------------------------------------------------------------------------------- paired


def test_asah_primary_endpoint_matches_proc(asah_result):
    r = asah_result
    assert isinstance(r, PairedComparison)
    assert (r.n_rows, r.n_hgg, r.n_lgg) == (113, 41, 72)
    d = r.delong
    assert d.z == pytest.approx(PROC_Z, abs=1e-6)
    assert d.p == pytest.approx(PROC_P, abs=1e-6)
    assert (d.ci_low, d.ci_high) == pytest.approx(PROC_CI, abs=1e-6)
    assert d.difference == pytest.approx(0.823678861788618 - 0.731368563685637, abs=1e-6)


def test_asah_markdown_prints_the_numbers_as_rounded(asah_result):
    text = render_comparison(asah_result)
    assert text.startswith(f"## {SPLITS['held_out']}")
    assert "Primary endpoint: the difference in ROC AUC" in text
    row = next(line for line in text.splitlines() if line.startswith("| AUC (primary)"))
    assert f"z = {PROC_Z:.4f}" in row and f"| {PROC_P:#.4g} |" in row
    assert f"+{0.823678861788618 - 0.731368563685637:.4f} [{PROC_CI[0]:.4f}, {PROC_CI[1]:.4f}]" in row
    assert "2.2090" in row and "0.02718" in row and "[0.0104, 0.1742]" in row
    # One verdict line per endpoint: DeLong, three McNemar tests, seven bootstrap intervals.
    verdicts = text.split("Verdict:\n")[1].splitlines()
    assert len(verdicts) == 11 == len(asah_result.verdicts)
    assert verdicts[0].startswith("- AUC improved (dAUC +0.092 [0.010, 0.174], p = 0.027")
    # No table row reads like a per-fold before -> after row (the pipeline test counts those).
    assert not [line for line in text.splitlines() if line.startswith("| ") and "->" in line]


def test_asah_json_keeps_full_precision(asah_result):
    document = json.loads(json.dumps(comparison_json(asah_result)))
    assert document["paired"] is True
    assert document["delong"]["z"] == pytest.approx(PROC_Z, abs=1e-9)
    assert document["delong"]["p"] == pytest.approx(PROC_P, abs=1e-9)
    assert set(document["mcnemar"]) == {ACCURACY, HGG_RECALL, LGG_RECALL}


def test_mcnemar_counts_right_decisions_at_half(asah_runs, asah_result):
    before, after = asah_runs
    hgg = before["label"] == 1
    m = asah_result.mcnemar[HGG_RECALL]
    assert m.n == hgg.sum() == 41
    assert m.n_right_before == before.loc[hgg, "predicted_at_0.5"].sum()
    assert m.n_right_after == 41  # wfns >= 1 > 0.5: everyone is called Poor
    lgg = asah_result.mcnemar[LGG_RECALL]
    assert (lgg.n, lgg.n_right_after) == (72, 0)


def test_youden_endpoints_use_the_decision_columns(asah_runs, asah_result):
    before, after = asah_runs
    labels = before["label"].to_numpy()
    expected = balanced_accuracy(labels, after["predicted_at_youden"]) - balanced_accuracy(
        labels, before["predicted_at_youden"]
    )
    boot = asah_result.bootstrap["balanced accuracy at Youden"]
    assert boot.observed == pytest.approx(expected)
    assert boot.ci_low <= boot.observed <= boot.ci_high
    assert asah_result.values_after["HGG recall at Youden"] == pytest.approx(
        after.loc[labels == 1, "probability"].ge(3).mean()
    )


def test_comparing_a_run_with_itself_finds_nothing():
    run = _synthetic_run(1)
    r = compare_predictions(run, run.copy())
    assert isinstance(r, PairedComparison)
    assert r.delong.difference == 0 and r.delong.p == 1
    assert all(m.p == 1 and m.b == m.c == 0 for m in r.mcnemar.values())
    assert all((b.observed, b.ci_low, b.ci_high) == (0, 0, 0) for b in r.bootstrap.values())
    assert all(p == 1 for p in r.holm.values())
    assert r.verdicts and all(line.startswith("no evidence of a difference") for line in r.verdicts)
    assert "cannot pair" not in render_comparison(r)


def test_holm_runs_over_delong_and_mcnemar():
    before, after = _synthetic_run(2, shift=0.5), _synthetic_run(3, shift=1.5)
    r = compare_predictions(before, after)
    raw = [r.delong.p] + [r.mcnemar[k].p for k in (ACCURACY, HGG_RECALL, LGG_RECALL)]
    adjusted = [r.holm[k] for k in (PRIMARY, ACCURACY, HGG_RECALL, LGG_RECALL)]
    assert adjusted == pytest.approx(holm(raw), abs=1e-12)
    assert any(a > p for a, p in zip(adjusted, raw))  # the correction did something
    text = render_comparison(r)
    assert r.holm[PRIMARY] < 0.001  # so the table prints the floor, not the value (0.00058 here)
    assert "| < 0.001 |" in text and "Holm-adjusted < 0.001" in r.verdicts[0]


def test_row_order_does_not_change_the_result():
    before, after = _synthetic_run(4), _synthetic_run(5)
    shuffled = after.sample(frac=1.0, random_state=0)
    assert compare_predictions(before, after) == compare_predictions(before, shuffled)


def test_inner_validation_patients_in_several_folds_are_paired_per_fold():
    one = _synthetic_run(6)
    # The same patients in a second fold's inner validation, with other predictions.
    two = _synthetic_run(7).assign(fold=9, subject_id=one["subject_id"])
    before = pd.concat([one, two], ignore_index=True)
    after = before.assign(probability=before["probability"].to_numpy()[::-1])
    r = compare_predictions(before, after, split=SPLITS["inner_val"])
    assert isinstance(r, PairedComparison) and (r.n_rows, r.n_patients) == (100, 50)
    text = render_comparison(r)
    assert text.startswith("## inner validation: the one to tune on")
    assert "50 distinct patients" in text


def test_missing_column_is_one_clear_error():
    run = _synthetic_run(8)
    with pytest.raises(GliomilError, match=r"before predictions lack the columns \['fold'\]"):
        compare_predictions(run.drop(columns="fold"), run)


def test_too_few_patients_of_a_grade_is_one_clear_error():
    run = _run([1, 1, 1, 0], [0.9, 0.8, 0.7, 0.2], 0.5)
    with pytest.raises(GliomilError, match="at least 2 HGG and 2 LGG"):
        compare_predictions(run, run)


# ---------------------------------------------------------------------------------------------- unpaired


def test_different_patients_are_refused_once_then_tested_unpaired():
    before = _synthetic_run(10)
    after = _synthetic_run(11, n_hgg=28, n_lgg=22).assign(subject_id=lambda t: t["subject_id"] + 6)
    r = compare_predictions(before, after)
    assert isinstance(r, UnpairedComparison)
    text = render_comparison(r)
    assert text.count("cannot pair") == 1
    assert "cannot pair: 12 patients differ between the runs (another cohort or split); unpaired tests follow" in text
    assert text.index("cannot pair") < text.index("| AUC (primary) | unpaired z")
    # z-test of two independent AUCs with DeLong variances.
    b = delong_auc_ci(before["label"], before["probability"])
    a = delong_auc_ci(after["label"], after["probability"])
    z = (a.auc - b.auc) / math.sqrt(a.variance + b.variance)
    assert r.auc.z == pytest.approx(z) and r.auc.p == pytest.approx(2 * sps.norm.sf(abs(z)))
    # Fisher's exact test and chi-square on the counts of right decisions.
    lgg = r.proportions[LGG_RECALL]
    right_b = int(((before["label"] == 0) & (before["predicted_at_0.5"] == 0)).sum())
    right_a = int(((after["label"] == 0) & (after["predicted_at_0.5"] == 0)).sum())
    assert (lgg.right_before, lgg.n_before, lgg.right_after, lgg.n_after) == (right_b, 20, right_a, 22)
    table = [[right_b, 20 - right_b], [right_a, 22 - right_a]]
    assert lgg.fisher_p == pytest.approx(sps.fisher_exact(table).pvalue)
    assert lgg.chi2_p == pytest.approx(sps.chi2_contingency(table).pvalue)
    raw = [r.auc.p] + [r.proportions[k].fisher_p for k in (ACCURACY, HGG_RECALL, LGG_RECALL)]
    assert [r.holm[k] for k in (PRIMARY, ACCURACY, HGG_RECALL, LGG_RECALL)] == pytest.approx(holm(raw))
    assert len(r.verdicts) == 4 and comparison_json(r)["paired"] is False


def test_a_changed_split_is_refused():
    before = _synthetic_run(12)
    after = before.assign(fold=(before["fold"] + 1) % 3)
    r = compare_predictions(before, after)
    assert isinstance(r, UnpairedComparison)
    assert r.reason == "50 patients are in another fold in the other run (a changed split)"


def test_another_label_is_refused():
    before = _synthetic_run(13)
    after = before.copy()
    after.loc[:2, "label"] = 1 - after.loc[:2, "label"]
    r = compare_predictions(before, after)
    assert isinstance(r, UnpairedComparison) and r.reason.startswith("3 patients have another label")


def test_perfect_recall_in_both_unpaired_runs_is_no_difference():
    before = _run([1, 1, 1, 0, 0, 0], [0.9, 0.8, 0.7, 0.2, 0.1, 0.3], 0.5)
    after = _run([1, 1, 1, 0, 0, 0], [0.6, 0.9, 0.7, 0.4, 0.1, 0.2], 0.5, subject_ids=np.arange(10, 16))
    r = compare_predictions(before, after)
    assert all(t.fisher_p == 1 and t.chi2_p == 1 for t in r.proportions.values())
    assert all(line.startswith("no evidence") for line in r.verdicts)


# ---------------------------------------------------------------------------------------------- CLI

MAKE_PY = """\
import json, os
import numpy as np, pandas as pd, yaml

shift = yaml.safe_load(open("params.yaml"))["shift"]
rng = np.random.default_rng(0)
labels = np.r_[np.ones(30, int), np.zeros(20, int)]
p = (1 / (1 + np.exp(-(rng.normal(size=50) + (1 + shift) * (2 * labels - 1))))).round(6)
table = pd.DataFrame({"subject_id": [f"S{i:02d}" for i in range(50)], "grade": np.where(labels == 1, "HGG", "LGG"),
                      "label": labels, "probability": p, "predicted_at_0.5": (p >= 0.5).astype(int),
                      "predicted_at_youden": (p >= 0.4).astype(int)})
for d in ("plots/cv", "plots/eval/fold_0", "metrics/eval"):
    os.makedirs(d, exist_ok=True)
table.assign(fold=0).to_csv("plots/cv/pooled_predictions.csv", index=False)
table.to_csv("plots/eval/fold_0/inner_val_predictions.csv", index=False)
at = {"f1": 0.8, "accuracy": 0.8, "balanced_accuracy": 0.8, "sensitivity": 0.8, "specificity": 0.8,
      "hgg_detected": "24/30 HGG", "predicted_hgg": 26, "predicted_lgg": 24}
json.dump({"fold": 0, "auc": 0.8 + shift / 10, "at_0.5": at}, open("metrics/eval/fold_0.json", "w"))
ms = {"mean": 0.8, "std": 0.0}
json.dump({"folds_mean_std": {k: ms for k in ("auc", "at_0.5/f1", "at_0.5/accuracy", "at_0.5/balanced_accuracy")},
           "pooled": {"auc": 0.8, "ci_low": 0.7, "ci_high": 0.9}}, open("metrics/cv_summary.json", "w"))
"""

DVC_YAML = """\
stages:
  make:
    cmd: python make.py
    deps: [make.py]
    params: [shift]
    outs: [plots/cv/pooled_predictions.csv, plots/eval/fold_0/inner_val_predictions.csv]
    metrics:
      - metrics/eval/fold_0.json: {cache: false}
      - metrics/cv_summary.json: {cache: false}
"""


@pytest.mark.slow
def test_cli_compares_a_commit_with_an_experiment(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "make.py").write_text(MAKE_PY)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "params.yaml").write_text("folds: [0]\nshift: 0.0\naggregate:\n  min_recall: 0.5\n")
    env = tool_env(REPO / "src")
    for args in (
        ["git", "init", "-q"],
        ["git", "config", "user.email", "ci@example.invalid"],
        ["git", "config", "user.name", "ci"],
        [DVC, "init", "-q"],
        [DVC, "repro", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "baseline"],
        [DVC, "exp", "run", "-q", "-n", "shifted", "-S", "shift=1.0"],
    ):
        run_tool(args, repo, env=env)
    compare = [sys.executable, "-m", "gliomil.comparison.compare"]
    out = run_tool([*compare, "HEAD", "shifted", "--json", "out.json", "--n-resamples", "200"], repo, env=env).stdout
    assert out.startswith("HEAD -> shifted\nThreshold: at_0.5")
    assert f"## {SPLITS['held_out']}" in out and f"## {SPLITS['inner_val']}" in out
    assert "cannot pair" not in out and out.count("Verdict:") == 2
    document = json.loads((repo / "out.json").read_text())
    assert set(document["splits"]) == {"held_out", "inner_val"}
    held_out = document["splits"]["held_out"]
    assert held_out["paired"] and held_out["delong"]["difference"] > 0  # the shift separates the grades more
    assert f"DeLong z = {held_out['delong']['z']:.4f}" in out
    # The workspace holds the experiment's files after `dvc exp run`; one split only.
    one = run_tool([*compare, "HEAD", "workspace", "--split", "held_out"], repo, env=env).stdout
    assert one.count("Verdict:") == 1 and f"DeLong z = {held_out['delong']['z']:.4f}" in one
    unknown = run_tool([*compare, "HEAD", "no-such-run"], repo, env=env, check=False)
    assert unknown.returncode == 1
    assert unknown.stderr.strip().startswith("error: cannot read the metrics of 'no-such-run'")


def test_the_external_sites_predictions_compare_as_one_fold_with_the_bundles_decisions(asah):
    import pandas as pd

    from gliomil.comparison.compare import external_as_fold_table

    labels, markers = asah
    ids = [f"E{i:03d}" for i in range(len(labels))]

    def stage_table(marker, threshold):
        p = markers[marker] / markers[marker].max()
        return pd.DataFrame(
            {"subject_id": ids, "label": labels, "probability": p, "decision": np.where(p >= threshold, "HGG", "LGG")}
        )

    before, after = external_as_fold_table(stage_table("s100b", 0.3)), external_as_fold_table(stage_table("wfns", 0.5))
    assert set(before["fold"]) == {0}
    assert (before["predicted_at_youden"] == (markers["s100b"] / markers["s100b"].max() >= 0.3)).all()
    assert (before["predicted_at_0.5"] == (markers["s100b"] / markers["s100b"].max() >= 0.5)).all()
    result = compare_predictions(before, after, split=SPLITS["external"], n_resamples=200)
    assert isinstance(result, PairedComparison) and result.n_patients == 113
    assert result.delong.p == pytest.approx(0.0271757822291882, abs=1e-6)  # pROC: roc.test(wfns, s100b)
