"""Stage aggregate: cross-validation summary over the evaluated folds, and the audit report.

Writes metrics/cv_summary.json (mean and std of every metric over folds, pooled out-of-fold AUC with a
bootstrap 95% interval, per-fold status, the model against each baseline on the same patients with DeLong's
test), metrics/headline.json (the few numbers `dvc exp show` lists),
reports/cv_folds.csv (the audit's per-fold table), reports/audit.md with its ROC and confusion images,
and plots/cv/ (every fold's curves and predictions in long tables with a `fold` column, which dvc.yaml's
plots read whatever the folds are).
"""

import _src  # noqa: F401  (first: gliomil from this checkout, see stages/_src.py)

# isort: split

import json
from pathlib import Path

import pandas as pd

from gliomil import params as P
from gliomil import paths
from gliomil.evaluation.aggregate import (
    STATUSES,
    StatusRules,
    against_baselines,
    fold_statuses,
    headline,
    mean_and_std,
    seed_table,
)
from gliomil.evaluation.audit import FoldRecord, checklist, item_verdict, mil_history, render_report
from gliomil.evaluation.diagnostics import LOGGED_KEYS, CollapseThresholds, applicable_keys
from gliomil.evaluation.metrics import pooled_auc_with_ci, threshold_metrics
from gliomil.evaluation.plots import plot_confusion, plot_rocs
from gliomil.runtime.files import write_json, write_text
from gliomil.runtime.stage import run_stage
from gliomil.vocabulary import HAS_ATTENTION, HAS_INSTANCE_SCORES

KNOBS = (
    "label_smoothing",
    "use_class_weights",
    "train.weighted_sampler",
    "train.epochs",
    "train.model.aggregator",
    "train.instance_supervision",
    "train.instance_target",
    "train.pixel_supervision",
    "train.pixel_target",
    "train.model.slice_pooling",
    "train.model.context_slices",
    "train.augment_geometry",
    "train.tumour_blind",
    "seed",
)
CURVES = ("roc", "precision_recall", "calibration")


def main():
    params = P.load_params()
    folds, seed = P.value(params, "folds"), P.value(params, "seed")
    settings = P.section(params, "aggregate")
    rules = StatusRules(min_recall=settings["min_recall"])
    plot_every = P.value(params, "train.plot_every")
    diagnostics = P.section(params, "train.diagnostics")
    diagnostics.pop("top_k")
    aggregator = P.value(params, "train.model.aggregator")
    logged = applicable_keys(LOGGED_KEYS, HAS_ATTENTION[aggregator], HAS_INSTANCE_SCORES[aggregator])

    fold_metrics = [read_json(paths.fold_eval_metrics(k)) for k in folds]
    predictions = read_fold_tables("predictions", folds)
    summary = {"folds": len(folds), "patients": len(predictions)}
    for key, table in (("pooled", predictions), ("pooled_inner_val", read_fold_tables("inner_val_predictions", folds))):
        summary[key] = pooled_auc_with_ci(
            table["label"].to_numpy(), table["probability"].to_numpy(), settings["n_bootstrap"], seed
        )
    statuses = {}
    for key in ("at_0.5", "at_youden_inner_val"):
        statuses[key] = fold_statuses([m[key] for m in fold_metrics], rules)
        summary[f"status_{key}"] = {s: statuses[key].count(s) for s in STATUSES}
    summary["folds_mean_std"] = mean_and_std(fold_metrics)
    baseline_metrics = read_json(paths.BASELINE_METRICS)
    summary["baselines"] = against_baselines(
        predictions, pd.read_csv(paths.BASELINE_PREDICTIONS, dtype={"subject_id": str})
    )
    for name, test in summary["baselines"].items():
        test["uses"] = baseline_metrics[name]["uses"]
    write_json(paths.CV_SUMMARY, summary)
    # The decisions as evaluate made them (the probabilities in the table are rounded).
    at_half = threshold_metrics(predictions["label"].to_numpy(), predictions["predicted_at_0.5"].to_numpy(), 0.5)
    fingerprint = read_json(paths.FINGERPRINT_METRICS)
    write_json(paths.HEADLINE, headline(summary, at_half, fingerprint))
    write_text(paths.CV_PLOTS / "pooled_predictions.csv", predictions.to_csv(index=False))
    for name in CURVES:
        write_text(paths.CV_PLOTS / f"{name}.csv", in_drawing_order(read_fold_tables(name, folds)).to_csv(index=False))
    histories = {k: pd.read_csv(paths.fold_model(k) / "history.csv") for k in folds}
    curves = in_drawing_order(pd.concat([history.assign(fold=k) for k, history in histories.items()]))
    write_text(paths.CV_PLOTS / "training_curves.csv", curves.to_csv(index=False))
    table = seed_table(fold_metrics, statuses["at_0.5"])
    write_text("reports/cv_folds.csv", table.to_csv(index=False))
    print(table.to_string(index=False))

    records = [
        FoldRecord(
            fold=k,
            held_out=m,
            training=read_json(paths.fold_train_metrics(k)),
            class_weights=read_json(paths.fold_model(k) / "class_weights.json"),
            mil_history=mil_history(histories[k], logged),
            epochs_trained=len(histories[k]),
            figures=len(list(paths.fold_train_figures(k).glob("*.png"))),
        )
        for k, m in zip(folds, fold_metrics)
    ]
    plot_rocs(
        {
            f"fold {k}": (group["label"].to_numpy(), group["probability"].to_numpy())
            for k, group in predictions.groupby("fold")
        },
        Path("reports/roc.png"),
        "Held-out ROC per fold",
    )
    plot_confusion(
        predictions["label"].to_numpy(),
        predictions["predicted_at_0.5"].to_numpy(),
        Path("reports/confusion.png"),
        "Pooled held-out, threshold 0.5",
    )
    items = checklist(records, plot_every, rules.min_recall, CollapseThresholds(**diagnostics), aggregator)
    knobs = {key: P.value(params, key) for key in KNOBS}
    images = ["reports/roc.png", "reports/confusion.png"]
    external, cohort = read_json(paths.EXTERNAL_METRICS), P.value(params, "external.root")
    write_text(
        "reports/audit.md",
        render_report(table, summary, records, items, knobs, images, external, cohort, fingerprint),
    )
    for item in items:
        print(f"[{item_verdict(item)}] {item.text}")
    pooled = summary["pooled"]
    print(
        f"pooled out-of-fold AUC {pooled['auc']:.3f} (95% CI {pooled['ci_low']:.3f}-{pooled['ci_high']:.3f}), "
        f"{len(predictions)} patients"
    )


def read_json(path):
    return json.loads(Path(path).read_text())


def in_drawing_order(table: pd.DataFrame) -> pd.DataFrame:
    """A ``point`` column numbering each fold's rows: the fold_lines template joins points in this order, not by x
    (a precision-recall curve steps down at a tied recall; sorting by x would draw that step upwards)."""
    return table.assign(point=table.groupby("fold").cumcount())


def read_fold_tables(name: str, folds: list[int]) -> pd.DataFrame:
    """Every fold's ``plots/eval/fold_<k>/<name>.csv``, with a ``fold`` column."""
    return pd.concat([pd.read_csv(paths.fold_eval_plots(k) / f"{name}.csv").assign(fold=k) for k in folds])


if __name__ == "__main__":
    run_stage(main)
