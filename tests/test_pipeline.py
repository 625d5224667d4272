"""End to end: real `dvc repro` in a temporary git repo on a tiny synthetic cohort."""

import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import (
    DVC,
    dvc,
    make_pipeline_repo,
    repro,
    run_tool,
    stages_run,
    tiny_params,
    tool_env,
    write_params,
)

from gliomil.data.brats import Subject, resolve_files
from gliomil.data.preprocess import preprocess_case
from gliomil.evaluation.scoring import score_bags
from gliomil.runtime.device import autocast_dtype
from gliomil.serving.bundle import load_bundle
from gliomil.serving.predict import Case, predict_cases

pytestmark = pytest.mark.slow


FOLD_STAGES = {f"{stage}@{k}" for stage in ("train", "evaluate") for k in range(5)}
# What follows the models: the packaged model, its external validation and the report that includes both.
PACKAGING = {"bundle", "external", "aggregate"}
# The logistic-regression baselines (features once per cohort, a fit per split) and the cohort's fingerprint.
BASELINES = {"baseline_features", "baselines", "fingerprint"}


@pytest.mark.xdist_group("tiny_run")
def test_dvc_repro_runs_every_stage_then_is_up_to_date(tiny_run, tmp_path):
    out = tiny_run.output  # the session's from-scratch `dvc repro` of tiny_params(); checked on a copy of its repo
    assert stages_run(out) == {"check_params", "synthesize", "synthesize_external", "preprocess", "split"} | (
        FOLD_STAGES | PACKAGING | BASELINES
    )
    pipeline_repo = tiny_run.copy(tmp_path / "repo")

    manifest = pd.read_csv(pipeline_repo / "data/preprocessed/manifest.csv")
    assert sorted(manifest["grade"].value_counts().items()) == [("HGG", 10), ("LGG", 6)]
    folds = [json.loads((pipeline_repo / f"data/splits/fold_{k}.json").read_text()) for k in range(5)]
    assert sorted(s for f in folds for s in f["test"]) == sorted(manifest["subject_id"])
    for k in range(5):
        assert (pipeline_repo / f"models/fold_{k}/best.pt").is_file()
        weights = json.loads((pipeline_repo / f"models/fold_{k}/class_weights.json").read_text())
        assert weights["use_class_weights"] and weights["LGG"] > 1 > weights["HGG"]
        assert f"fold {k}: class weights: LGG=" in out
        assert sorted(p.name for p in (pipeline_repo / f"plots/train/fold_{k}").glob("epoch_002_*.png")) == [
            "epoch_002_attention.png",
            "epoch_002_confusion.png",
            "epoch_002_curves.png",
            "epoch_002_roc.png",
        ]
    summary = json.loads((pipeline_repo / "metrics/train/fold_0.json").read_text())
    assert {"auc", "loss", "mil"} <= set(summary["val"]) and "collapse_epochs" in summary
    held_out = json.loads((pipeline_repo / "metrics/eval/fold_3.json").read_text())
    assert {"auc", "pr_auc", "brier", "ece", "at_0.5", "at_youden_inner_val", "mil"} <= set(held_out)
    cv = json.loads((pipeline_repo / "metrics/cv_summary.json").read_text())
    assert cv["patients"] == 16 and 0 <= cv["pooled"]["ci_low"] <= cv["pooled"]["auc"] <= cv["pooled"]["ci_high"]
    inner = cv["pooled_inner_val"]  # the tuning-side twin, from plots/eval/fold_<k>/inner_val_predictions.csv
    assert 0 <= inner["ci_low"] <= inner["auc"] <= inner["ci_high"] <= 1
    table = pd.read_csv(pipeline_repo / "reports/cv_folds.csv")
    assert list(table.columns) == ["Fold", "AUC", "F1", "Acc", "Class balance", "Status"] and len(table) == 5
    report = (pipeline_repo / "reports/audit.md").read_text()
    checklist = [line for line in report.splitlines() if line.startswith("- [")]
    assert len(checklist) == 7 and all("**passed**" in line or "**failed**" in line for line in checklist)
    assert "MIL diagnostics logged in all epochs: **passed**" in report
    assert "Plots saved per epoch (plot_every=1): **passed**" in report
    assert "Attention collapse warnings appear if needed: **passed**" in report  # warnings match the logs
    assert (pipeline_repo / "reports/roc.png").stat().st_size > 0
    external = json.loads((pipeline_repo / "metrics/external.json").read_text())
    assert external["patients"] == 8 and 0 <= external["auc_ci_low"] <= external["auc"] <= 1
    assert "## External validation" in report and "on 8 patients of `data/external_site`" in report
    _predict_reproduces_preprocess_and_evaluate(pipeline_repo)

    again = repro(pipeline_repo)
    assert stages_run(again) == set()
    assert "Data and pipelines are up to date." in again

    headline = dvc(pipeline_repo, "metrics", "show")
    shown = sorted(line.split()[0] for line in headline.splitlines()[1:])
    assert shown == ["metrics/external.json", "metrics/headline.json"]  # the only metrics in git
    assert "at_bundle_threshold.sensitivity_ci_low" in headline and "calibration.slope" in headline
    assert "inner_val_auc" in headline and "lgg_recall" in headline
    assert "auc_minus_whole_brain" in headline and "seg_statistics_auc" in headline  # DSMIL against its yardsticks
    assert "auc_minus_predicted_mask" in headline
    shown = dvc(pipeline_repo, "metrics", "show", "metrics")
    assert "metrics/preprocess.json" in shown and "slices_total" in shown
    assert "metrics/train/fold_4.json" in shown and "best.val_auc" in shown

    # The audit knob re-runs the training stages only.
    run_tool(["git", "add", "-A"], pipeline_repo)
    run_tool(["git", "commit", "-qm", "baseline run"], pipeline_repo)
    experiment = dvc(pipeline_repo, "exp", "run", "-n", "smoothing-0.1", "-S", "label_smoothing=0.1")
    assert stages_run(experiment) == {"check_params"} | FOLD_STAGES | PACKAGING
    metrics_diff = dvc(pipeline_repo, "metrics", "diff", "--targets", "metrics")
    # smoothed targets change every training loss (a tiny 2-epoch model may rank patients the same)
    assert all(f"metrics/train/fold_{k}.json" in metrics_diff for k in range(5))
    assert "train.loss" in metrics_diff
    dvc(pipeline_repo, "plots", "diff", "-o", "plots_html")
    html = (pipeline_repo / "plots_html/index.html").read_text()
    assert "Held-out ROC" in html and "Pooled confusion at 0.5" in html and "Held-out confusion per fold" in html
    shown = dvc(pipeline_repo, "exp", "show", "--csv")
    assert "smoothing-0.1" in shown and "label_smoothing" in shown and "inner_val_auc" in shown
    assert "pooled.auc" not in shown  # the headline, not every metric: a sweep's table fits a screen
    compared = run_tool(
        [sys.executable, "-m", "gliomil.comparison.compare", "HEAD", "smoothing-0.1"],
        pipeline_repo,
        env=tool_env(pipeline_repo / "src"),
    ).stdout
    rows = [line for line in compared.splitlines() if line.startswith("| ") and "->" in line]
    assert len(rows) == 5 and "Pooled out-of-fold AUC" in compared
    unknown = run_tool(
        [sys.executable, "-m", "gliomil.comparison.compare", "HEAD", "no-such-run"],
        pipeline_repo,
        env=tool_env(pipeline_repo / "src"),
        check=False,
    )
    assert unknown.returncode == 1 and unknown.stderr.strip().startswith(
        "error: cannot read the metrics of 'no-such-run'"
    )

    # Another seed repeats the cross-validation on the same cohort, synthesize and preprocess kept: test_sweep's
    # queued seeds check exactly that (a run of its own here cost the suite 100 s).

    # A preprocess param re-runs preprocess and what depends on it, not synthesize.
    params = tiny_params()
    params["preprocess"]["image_size"] = 12
    write_params(pipeline_repo, params)
    # baseline_features reads the NIfTI files, not the slices: it runs again (the manifest changed) and writes the
    # same table; the baselines run again because predicted_mask segments the new slices. The fingerprint preprocess
    # measures does not depend on the image size: its table and thumbnails are unchanged, so that stage does not run.
    assert stages_run(repro(pipeline_repo)) == {"check_params", "preprocess", "split", "baseline_features"} | (
        FOLD_STAGES | PACKAGING | {"baselines"}
    )


def _predict_reproduces_preprocess_and_evaluate(repo: Path) -> None:
    """`gliomil predict` on a training patient: the slices preprocess stored and the probability each fold's
    evaluate gave, bit for bit (evaluate's table rounds to 6 decimals, as predict's does)."""
    split = json.loads((repo / "data/splits/fold_2.json").read_text())
    subject = split["test"][0]
    grade = "HGG" if "HGG" in subject else "LGG"
    case = repo / "data/synthetic" / grade / subject
    run_tool(["gliomil", "predict", case, "--bundle", "bundle", "--out", "predicted"], repo, tool_env(repo / "src"))
    predicted = pd.read_csv(repo / "predicted/predictions.csv").iloc[0]
    assert predicted["subject_id"] == subject and predicted["in_training_cohort"]
    for fold in range(5):
        evaluated = pd.concat(
            pd.read_csv(repo / f"plots/eval/fold_{fold}/{name}.csv")
            for name in ("predictions", "inner_val_predictions")
        ).set_index("subject_id")
        if subject in evaluated.index:
            assert predicted[f"probability_fold_{fold}"] == evaluated.loc[subject, "probability"], fold
    assert (
        predicted["probability_fold_2"]
        == pd.read_csv(repo / "plots/eval/fold_2/predictions.csv").set_index("subject_id").loc[subject, "probability"]
    )

    # In one process: predict's path from the NIfTI files gives the stored slices, and the fold model's probability
    # exactly as evaluate computes it (score_bags on the stored bag).
    bundle = load_bundle(repo / "bundle")
    table, _ = predict_cases(bundle, [Case(Subject(subject, None, subject, case))], device=torch.device("cpu"))
    _, bag = preprocess_case(subject, resolve_files(Subject(subject, None, subject, case)), bundle.preprocess)
    stored = np.load(repo / f"data/preprocessed/slices/{subject}.npy")
    assert bag.slices.dtype == stored.dtype and np.array_equal(bag.slices.view(np.uint16), stored.view(np.uint16))
    dtype = autocast_dtype(torch.device("cpu"), bundle.inference.amp)
    for fold, model in bundle.models.items():
        evaluated = score_bags(model, [stored], torch.device("cpu"), bundle.inference.eval_chunk, dtype)
        assert table[f"probability_fold_{fold}"].iloc[0] == float(evaluated.probabilities[0]), fold


def test_bad_subject_fails_with_one_line_and_leaves_no_output(pipeline_repo):
    repro(pipeline_repo, "synthesize")
    bad = next((pipeline_repo / "data/synthetic/LGG").iterdir())
    t1ce = bad / f"{bad.name}_t1ce.nii.gz"
    t1ce.chmod(0o644)
    t1ce.write_bytes(b"not a nifti file")

    result = run_tool(
        [sys.executable, "stages/preprocess.py"], pipeline_repo, env=tool_env(pipeline_repo / "src"), check=False
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in result.stderr
    assert bad.name in lines[-1] and t1ce.name in lines[-1]
    assert not (pipeline_repo / "data/preprocessed").exists()
    assert not list((pipeline_repo / "data").glob("*.partial")) + list((pipeline_repo / "data").glob(".*.partial-*"))

    # on_error: skip carries on and reports the subject with its reason.
    params = tiny_params()
    params["preprocess"]["on_error"] = "skip"
    write_params(pipeline_repo, params)
    run_tool([sys.executable, "stages/preprocess.py"], pipeline_repo, env=tool_env(pipeline_repo / "src"))
    skipped = pd.read_csv(pipeline_repo / "reports/preprocess_skipped.csv")
    assert skipped["subject_id"].tolist() == [bad.name]
    assert t1ce.name in skipped["reason"][0]
    manifest = pd.read_csv(pipeline_repo / "data/preprocessed/manifest.csv")
    assert bad.name not in set(manifest["subject_id"]) and len(manifest) == 15


def _output_hashes(repo: Path) -> dict[str, str]:
    """SHA-256 of every file the pipeline wrote or recorded (dvc.lock included), by path."""
    inputs = {"src", "stages", ".git", "params.yaml", "dvc.yaml"}
    return {
        str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(repo.rglob("*"))
        if p.is_file()
        and p.relative_to(repo).parts[0] not in inputs
        and p.relative_to(repo).parts[:2] != (".dvc", "tmp")
    }


def _folds_in_plots(repo: Path) -> dict[str, set[str]]:
    """For every plot `dvc plots show` renders: the folds its data (or image path) covers."""
    shown = json.loads(dvc(repo, "plots", "show", "--json"))
    assert "errors" not in shown, shown["errors"]
    folds = {}
    for name, renders in shown["data"].items():
        if name.startswith("plots/external/"):  # one ensemble, no folds
            continue
        for render in renders:
            if render["type"] == "vega":
                folds.setdefault(name, set()).update(str(row["fold"]) for row in render["content"]["data"]["values"])
            else:
                folds.setdefault("images", set()).update(re.findall(r"fold_(\d+)", render["url"]))
    return folds


BAD_PARAMS = [  # (change to the tiny params, what the one error line must say)
    (lambda p: p["train"].update(epoch=3), "unknown key 'train.epoch' (did you mean 'train.epochs'?)"),
    (lambda p: p.update(label_smothing=0.1), "unknown key 'label_smothing' (did you mean 'label_smoothing'?)"),
    (lambda p: p["train"].update(bag_size=-1), "train.bag_size must be an integer >= 1, got -1"),
    (lambda p: p["data"].update(root="/nonexistent"), "data.root: /nonexistent is not a folder"),
    (lambda p: p["aggregate"].update(min_recall=2), "aggregate.min_recall must be a number in [0.0, 1.0], got 2"),
]


def test_three_folds_everywhere_and_bad_params_stop_before_any_stage(tmp_path):
    params = tiny_params()
    params["folds"] = [0, 1, 2]
    repo = make_pipeline_repo(tmp_path, params)
    three = {f"{stage}@{k}" for stage in ("train", "evaluate") for k in range(3)}
    assert stages_run(repro(repo)) == {"check_params", "synthesize", "synthesize_external", "preprocess", "split"} | (
        three | PACKAGING | BASELINES
    )

    shown = dvc(repo, "metrics", "show", "metrics")
    for kind in ("train", "eval"):
        assert set(re.findall(rf"metrics/{kind}/fold_(\d+)\.json", shown)) == {"0", "1", "2"}
    folds = _folds_in_plots(repo)
    assert set(folds) >= {
        "plots/cv/training_curves.csv",  # a stage's own plots are named by their file
        "Training loss",
        "plots/cv/roc.csv",
        "plots/cv/pooled_predictions.csv",
        "images",
    }
    assert all(covered == {"0", "1", "2"} for covered in folds.values()), folds

    def outputs():  # all but check_params' own marker, which DVC removes before running the check
        return {path: sha for path, sha in _output_hashes(repo).items() if path != "data/params_checked.txt"}

    before = outputs()
    for change, message in BAD_PARAMS:
        bad = tiny_params()
        bad["folds"] = [0, 1, 2]
        change(bad)
        write_params(repo, bad)
        result = run_tool([DVC, "repro"], repo, env=tool_env(repo / "src"), check=False)
        assert result.returncode != 0
        errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error: ")]
        assert errors == [f"error: params.yaml: {message}"], result.stdout + result.stderr
        assert stages_run(result.stdout) == {"check_params"}
        assert outputs() == before, message
    write_params(repo, params)
    fixed = repro(repo)
    assert stages_run(fixed) == set() and "Stage 'check_params' is cached - skipping run" in fixed
    assert outputs() == before and "Data and pipelines are up to date." in dvc(repo, "status")


@pytest.mark.xdist_group("tiny_run")
def test_switching_params_back_restores_every_stage_from_the_run_cache(tiny_run_copy):
    """DVC saves every stage to its run-cache (each output is cached, or a metric or plot of its stage), so the
    second `dvc repro` after a change and its undoing restores everything and runs nothing."""
    repo = tiny_run_copy  # tiny_params() after a from-scratch `dvc repro`

    def outputs():
        return {path: sha for path, sha in _output_hashes(repo).items() if not path.startswith(".dvc/")}

    first = outputs()
    changed = tiny_params()
    changed["synthesize"]["seed"] += 1  # every stage downstream of both cohorts runs again
    changed["external"]["site"]["seed"] += 1
    write_params(repo, changed)
    assert len(stages_run(repro(repo))) == 5 + 2 * 5 + len(PACKAGING) + len(BASELINES)

    write_params(repo, tiny_params())
    out = repro(repo)
    assert stages_run(out) == set(), out
    restored = {line.split("'")[1] for line in out.splitlines() if "is cached - skipping run" in line}
    everything = {"check_params", "synthesize", "synthesize_external", "preprocess", "split"}
    assert restored == everything | FOLD_STAGES | PACKAGING | BASELINES
    assert outputs() == first
