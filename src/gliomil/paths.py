"""Where the pipeline's files live, spelled once; ``dvc.yaml`` spells the same paths and a test keeps them equal."""

from __future__ import annotations

from pathlib import Path

SYNTHETIC = Path("data/synthetic")
PREPROCESSED = Path("data/preprocessed")
SPLITS = Path("data/splits")
PARAMS_CHECKED = Path("data/params_checked.txt")
CV_SUMMARY = Path("metrics/cv_summary.json")
HEADLINE = Path("metrics/headline.json")
CV_PLOTS = Path("plots/cv")
BUNDLE = Path("bundle")
EXTERNAL_SITE = Path("data/external_site")
EXTERNAL_METRICS = Path("metrics/external.json")
EXTERNAL_PLOTS = Path("plots/external")
BASELINE_FEATURES = Path("data/baseline_features.csv")
BASELINE_PREDICTIONS = Path("plots/baselines/predictions.csv")
BASELINE_METRICS = Path("metrics/baselines.json")
FINGERPRINT_TABLE = Path("reports/fingerprint.csv")
QC_THUMBNAILS = Path("data/qc_thumbnails.npy")
FINGERPRINT_METRICS = Path("metrics/fingerprint.json")
FINGERPRINT_PLOTS = Path("plots/fingerprint")
QC_GRID = Path("reports/qc_grid.png")


def fold_split(fold: int) -> Path:
    """The fold's train / inner_val / test subject lists (JSON)."""
    return SPLITS / f"fold_{fold}.json"


def fold_model(fold: int) -> Path:
    """The fold's best checkpoint, class weights and per-epoch history."""
    return Path(f"models/fold_{fold}")


def fold_train_log(fold: int) -> Path:
    """The fold's DVCLive directory (per-epoch TSVs and its summary)."""
    return Path(f"logs/train/fold_{fold}")


def fold_train_metrics(fold: int) -> Path:
    """The fold's training summary, as DVCLive wrote it (shown by ``dvc metrics show``)."""
    return Path(f"metrics/train/fold_{fold}.json")


def fold_train_figures(fold: int) -> Path:
    """The fold's per-epoch PNG figures."""
    return Path(f"plots/train/fold_{fold}")


def fold_eval_metrics(fold: int) -> Path:
    """The fold's held-out metrics."""
    return Path(f"metrics/eval/fold_{fold}.json")


def fold_eval_plots(fold: int) -> Path:
    """The fold's per-patient predictions and curve tables."""
    return Path(f"plots/eval/fold_{fold}")


def fold_lock(fold: int) -> Path:
    """The lock a fold's train stage holds (inside the workspace; DVC and git ignore .dvc/tmp)."""
    return Path(f".dvc/tmp/gliomil/train_fold_{fold}.lock")


def fold_resume(fold: int) -> Path:
    """Where a fold's train stage builds its outputs and saves its state after every epoch, so that a stopped
    run continues (outside the outputs, which DVC deletes before running a stage; removed once the fold ends)."""
    return Path(f".dvc/tmp/gliomil/train_fold_{fold}")
