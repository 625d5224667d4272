"""Cross-validation summary: mean and spread over folds, pooled out-of-fold AUC, the audit's per-fold status, the
model against the baselines on the same patients."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from gliomil.evaluation.intervals import delong_test
from gliomil.nested import flatten

STATUSES = ("Critical", "Needs improvement", "Good", "Best")


@dataclass(frozen=True)
class StatusRules:
    """Thresholds of the per-fold status (params.yaml ``aggregate``).

    Critical: a class is never predicted (the audited script's fold 4 predicted every patient LGG).
    Needs improvement: HGG recall (sensitivity) or LGG recall (specificity) below ``min_recall``.
    Good: otherwise. Best: the Good fold with the highest balanced accuracy.
    """

    min_recall: float = 0.5


def fold_status(at_threshold: dict, rules: StatusRules) -> str:
    """Critical, Needs improvement or Good for one fold's metrics at one threshold (see :class:`StatusRules`)."""
    if at_threshold["predicted_hgg"] == 0 or at_threshold["predicted_lgg"] == 0:
        return "Critical"
    if min(at_threshold["sensitivity"], at_threshold["specificity"]) < rules.min_recall:
        return "Needs improvement"
    return "Good"


def fold_statuses(at_thresholds: list[dict], rules: StatusRules) -> list[str]:
    """Status of every fold; the Good fold with the highest balanced accuracy (first on ties) becomes Best."""
    statuses = [fold_status(m, rules) for m in at_thresholds]
    good = [i for i, s in enumerate(statuses) if s == "Good"]
    if good:
        best = max(good, key=lambda i: at_thresholds[i]["balanced_accuracy"])
        statuses[best] = "Best"
    return statuses


def flatten_numbers(metrics: dict) -> dict[str, float]:
    """Numeric leaves of a nested dict as ``{"a/b": value}`` (strings and booleans left out)."""
    return {
        key: float(value)
        for key, value in flatten(metrics, separator="/").items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def mean_and_std(fold_metrics: list[dict]) -> dict[str, dict[str, float]]:
    """For every numeric metric shared by all folds: mean and sample standard deviation (ddof=1) over folds."""
    flat = [flatten_numbers(m) for m in fold_metrics]
    shared = [k for k in flat[0] if all(k in f for f in flat[1:]) and k not in ("fold",)]
    summary = {}
    for key in shared:
        values = np.array([f[key] for f in flat])
        summary[key] = {
            "mean": float(np.nanmean(values)),
            "std": float(np.nanstd(values, ddof=1)) if len(values) > 1 else 0.0,
        }
    return summary


def against_baselines(predictions: pd.DataFrame, baselines: pd.DataFrame, level: float = 0.95) -> dict[str, dict]:
    """The model against each baseline on the same held-out patients: DeLong's test of the two correlated pooled
    AUCs (:func:`gliomil.evaluation.intervals.delong_test`), ``difference = AUC(model) - AUC(baseline)``.

    ``predictions``: the model's pooled held-out predictions (``subject_id``, ``label``, ``probability``);
    ``baselines``: the baselines stage's table (``baseline``, ``subject_id``, ``label``, ``probability``). Raises
    ValueError when a baseline did not score exactly the model's patients (another split: not paired).
    Returns ``{baseline: {auc_model, auc_baseline, difference, ci_low, ci_high, z, p, level, patients}}``."""
    model = predictions.set_index("subject_id")
    compared = {}
    for name, rows in baselines.groupby("baseline", sort=False):
        rows = rows.set_index("subject_id")
        if set(rows.index) != set(model.index) or len(rows) != len(model):
            raise ValueError(
                f"baseline {name} scored other patients than the model ({len(rows)} against {len(model)}): "
                "re-run the baselines stage on the same split"
            )
        rows = rows.loc[model.index]
        if not (rows["label"].to_numpy() == model["label"].to_numpy()).all():
            raise ValueError(f"baseline {name} has other labels than the model for the same patients")
        test = delong_test(
            model["label"].to_numpy(), rows["probability"].to_numpy(), model["probability"].to_numpy(), level
        )
        compared[name] = {
            "auc_model": test.auc_after,
            "auc_baseline": test.auc_before,
            "difference": test.difference,
            "ci_low": test.ci_low,
            "ci_high": test.ci_high,
            "z": test.z,
            "p": test.p,
            "level": level,
            "patients": len(model),
        }
    return compared


def headline(summary: dict, pooled_at_half: dict, fingerprint: dict | None = None) -> dict[str, float]:
    """The few numbers a sweep is read by (``dvc exp show``): pooled held-out AUC with its interval, pooled
    inner-validation AUC, pooled balanced accuracy and per-grade recall at 0.5, folds flagged at 0.5, per
    baseline (``summary["baselines"]``, when there) its pooled AUC and the model's AUC minus it, and from the
    cohort's ``fingerprint`` (metrics/fingerprint.json, when given) the share of patients in single-grade sites
    and the highest nuisance AUC of an acquisition property."""
    pooled, statuses = summary["pooled"], summary["status_at_0.5"]
    versus = {}
    for name, test in summary.get("baselines", {}).items():
        versus[f"{name}_auc"] = test["auc_baseline"]
        versus[f"auc_minus_{name}"] = test["difference"]
    return {
        "auc": pooled["auc"],
        "auc_ci_low": pooled["ci_low"],
        "auc_ci_high": pooled["ci_high"],
        "inner_val_auc": summary["pooled_inner_val"]["auc"],
        "balanced_accuracy": pooled_at_half["balanced_accuracy"],
        "hgg_recall": pooled_at_half["sensitivity"],
        "lgg_recall": pooled_at_half["specificity"],
        "folds_flagged": statuses["Critical"] + statuses["Needs improvement"],
        **versus,
        **(
            {
                "single_grade_site_share": fingerprint["sites"]["share_in_single_grade_sites"],
                "nuisance_auc_max": max(row["ranking_auc"] for row in fingerprint["nuisance"]),
            }
            if fingerprint
            else {}
        ),
    }


def seed_table(fold_metrics: list[dict], statuses: list[str], threshold_key: str = "at_0.5") -> pd.DataFrame:
    """The audit's per-fold table: Fold, AUC, F1, Acc, Class balance ("k/n HGG": correct HGG / true HGG at the
    threshold), Status."""
    return pd.DataFrame(
        {
            "Fold": [m["fold"] for m in fold_metrics],
            "AUC": [round(m["auc"], 4) for m in fold_metrics],
            "F1": [round(m[threshold_key]["f1"], 4) for m in fold_metrics],
            "Acc": [round(m[threshold_key]["accuracy"], 4) for m in fold_metrics],
            "Class balance": [m[threshold_key]["hgg_detected"] for m in fold_metrics],
            "Status": statuses,
        }
    )
