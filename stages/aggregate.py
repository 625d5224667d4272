"""Stage aggregate: cross-validation summary over the evaluated folds, and the audit report.

Writes metrics/cv_summary.json (mean and std of every metric over folds, pooled out-of-fold AUC with a
bootstrap 95% interval, per-fold status), reports/cv_folds.csv (the audit's per-fold table) and
reports/audit.md with its ROC and confusion images.
"""

import json
from pathlib import Path

import pandas as pd

from gliomil import params as P
from gliomil.aggregate import STATUSES, StatusRules, fold_statuses, mean_and_std, pooled_auc_with_ci, seed_table
from gliomil.audit import FoldRecord, checklist, read_mil_history, render_report
from gliomil.diagnostics import collapse_thresholds_from_params
from gliomil.plots import plot_confusion, plot_rocs
from gliomil.stage import run_stage, write_json, write_text


def main():
    params = P.load_params()
    folds = P.folds(params)
    seed = P.integer(params, "seed", low=0)
    rules = StatusRules(min_recall=P.number(params, "aggregate.min_recall", low=0.0, high=1.0))
    n_bootstrap = P.integer(params, "aggregate.n_bootstrap", low=100)

    plot_every = P.integer(params, "train.plot_every", low=0)
    fold_metrics = [read_json(f"metrics/eval/fold_{k}.json") for k in folds]
    predictions = read_predictions("predictions", folds)
    summary = {"folds": len(folds), "patients": len(predictions)}
    for key, table in (("pooled", predictions), ("pooled_inner_val", read_predictions("inner_val_predictions", folds))):
        summary[key] = pooled_auc_with_ci(table["label"].to_numpy(), table["probability"].to_numpy(), n_bootstrap, seed)
    statuses = {}
    for key in ("at_0.5", "at_youden_inner_val"):
        statuses[key] = fold_statuses([m[key] for m in fold_metrics], rules)
        summary[f"status_{key}"] = {s: statuses[key].count(s) for s in STATUSES}
    summary["folds_mean_std"] = mean_and_std(fold_metrics)
    write_json("metrics/cv_summary.json", summary)
    write_text("plots/cv/pooled_predictions.csv", predictions.to_csv(index=False))
    table = seed_table(fold_metrics, statuses["at_0.5"])
    write_text("reports/cv_folds.csv", table.to_csv(index=False))
    print(table.to_string(index=False))

    records = [fold_record(k, m) for k, m in zip(folds, fold_metrics)]
    plot_rocs({f"fold {k}": (group["label"].to_numpy(), group["probability"].to_numpy())
               for k, group in predictions.groupby("fold")}, Path("reports/roc.png"), "Held-out ROC per fold")
    plot_confusion(predictions["label"].to_numpy(), predictions["predicted_at_0.5"].to_numpy(),
                   Path("reports/confusion.png"), "Pooled held-out, threshold 0.5")
    items = checklist(records, plot_every, rules.min_recall, collapse_thresholds_from_params(params))
    write_text("reports/audit.md", render_report(table, summary, records, items, params,
                                                 ["reports/roc.png", "reports/confusion.png"]))
    for item in items:
        print(f"[{'passed' if item.passed else 'FAILED'}] {item.text}")
    pooled = summary["pooled"]
    print(f"pooled out-of-fold AUC {pooled['auc']:.3f} (95% CI {pooled['ci_low']:.3f}-{pooled['ci_high']:.3f}), "
          f"{len(predictions)} patients")


def read_json(path):
    return json.loads(Path(path).read_text())


def read_predictions(name: str, folds: list[int]) -> pd.DataFrame:
    """Every fold's ``plots/eval/fold_<k>/<name>.csv`` (one row per patient), with a ``fold`` column."""
    return pd.concat([pd.read_csv(f"plots/eval/fold_{k}/{name}.csv").assign(fold=k) for k in folds])


def fold_record(fold: int, held_out: dict) -> FoldRecord:
    live = Path(f"metrics/train/fold_{fold}")
    return FoldRecord(
        fold=fold,
        held_out=held_out,
        training=read_json(live / "metrics.json"),
        class_weights=read_json(f"models/fold_{fold}/class_weights.json"),
        mil_history=read_mil_history(live),
        epochs_trained=len(Path(live / "plots/metrics/val/loss.tsv").read_text().splitlines()) - 1,
        figures=len(list(Path(f"plots/train/fold_{fold}").glob("*.png"))),
    )


if __name__ == "__main__":
    run_stage(main)
