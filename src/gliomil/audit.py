"""The audit report: the seed audit's table, summary and verification checklist, evaluated on this run's outputs.

Every checklist item is decided from files the pipeline wrote, and its evidence is printed beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class FoldRecord:
    """What the report needs of one fold (read by the aggregate stage from the fold's outputs)."""

    fold: int
    held_out: dict          # metrics/eval/fold_<k>.json
    training: dict          # metrics/train/fold_<k>/metrics.json (DVCLive summary)
    class_weights: dict     # models/fold_<k>/class_weights.json
    epochs_logged: int      # rows of the fold's per-epoch MIL diagnostics log
    epochs_trained: int
    figures: int            # PNG files in plots/train/fold_<k>


@dataclass(frozen=True)
class CheckItem:
    text: str
    passed: bool
    evidence: str


def checklist(records: list[FoldRecord], plot_every: int, min_recall: float) -> list[CheckItem]:
    """The seed audit's verification checklist, item by item."""
    at = [r.held_out["at_0.5"] for r in records]
    balanced = [min(m["sensitivity"], m["specificity"]) >= min_recall for m in at]
    last = records[-1]
    figures_expected = [4 * (r.epochs_trained // plot_every) if plot_every else 0 for r in records]
    collapse = {r.fold: r.training.get("collapse_epochs", {}) for r in records}
    return [
        CheckItem("Class balance improved (check confusion matrices)", all(balanced),
                  "HGG and LGG recall at 0.5 >= {:.2f} in {}/{} folds; per fold: {}".format(
                      min_recall, sum(balanced), len(records),
                      ", ".join(f"{r.fold}: {m['hgg_detected']}, LGG {m['confusion']['tn']}/{m['confusion']['tn'] + m['confusion']['fp']}"
                                for r, m in zip(records, at)))),
        CheckItem(f"Fold {last.fold} no longer predicts all LGG", at[-1]["predicted_hgg"] > 0,
                  f"fold {last.fold} predicts {at[-1]['predicted_hgg']} of {last.held_out['n_test']} patients HGG "
                  f"({at[-1]['hgg_detected']})"),
        CheckItem("MIL diagnostics logged in all epochs", all(r.epochs_logged == r.epochs_trained for r in records),
                  "; ".join(f"fold {r.fold}: {r.epochs_logged}/{r.epochs_trained} epochs" for r in records)),
        CheckItem("Attention collapse warnings appear if needed",
                  all("uniform" in c and "one-hot" in c for c in collapse.values()),
                  "collapse epochs (training + validation bags): " + "; ".join(
                      f"fold {k}: {c.get('uniform', '?')} uniform, {c.get('one-hot', '?')} one-hot"
                      for k, c in collapse.items())),
        CheckItem(f"Plots saved per epoch (plot_every={plot_every})",
                  all(r.figures == e for r, e in zip(records, figures_expected)),
                  "; ".join(f"fold {r.fold}: {r.figures}/{e} figures" for r, e in zip(records, figures_expected))),
        CheckItem("Class weights logged at training start",
                  all(("LGG" in r.class_weights and "HGG" in r.class_weights) for r in records),
                  "; ".join(f"fold {r.fold}: LGG={r.class_weights['LGG']:.3f}, HGG={r.class_weights['HGG']:.3f}"
                            + ("" if r.class_weights["use_class_weights"] else " (unused)") for r in records)),
        CheckItem("Final metrics include MIL diagnostics", all("mil" in r.held_out for r in records),
                  "; ".join(f"fold {r.fold}: attention lift on tumour slices "
                            f"{r.held_out['mil']['attention_tumour_lift']:.2f}" for r in records)),
    ]


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def render_report(table: pd.DataFrame, summary: dict, records: list[FoldRecord], items: list[CheckItem],
                  params: dict, images: list[str]) -> str:
    """The Markdown text of reports/audit.md."""
    stats = summary["folds_mean_std"]

    def mean_std(key):
        return f"{stats[key]['mean']:.4f} ± {stats[key]['std']:.4f}"

    pooled = summary["pooled"]
    lines = [
        "# Audit report",
        "",
        f"Written by the `aggregate` stage. Knobs: `label_smoothing={params['label_smoothing']}`, "
        f"`use_class_weights={str(params['use_class_weights']).lower()}`, "
        f"`train.weighted_sampler={str(params['train']['weighted_sampler']).lower()}`, "
        f"`train.epochs={params['train']['epochs']}`, `seed={params['seed']}`.",
        "",
        "## Per-fold results (held-out patients, threshold 0.5)",
        "",
        _markdown_table(table),
        "",
        "## Cross-validation summary",
        "",
        f"- AUC: {mean_std('auc')}",
        f"- F1 (at 0.5): {mean_std('at_0.5/f1')}; at the inner-validation Youden threshold: "
        f"{mean_std('at_youden_inner_val/f1')}",
        f"- Accuracy (at 0.5): {mean_std('at_0.5/accuracy')}; balanced accuracy: {mean_std('at_0.5/balanced_accuracy')}",
        f"- Pooled out-of-fold AUC: {pooled['auc']:.4f} (95% bootstrap CI {pooled['ci_low']:.4f} to "
        f"{pooled['ci_high']:.4f}, {summary['patients']} patients)",
        "",
        "## MIL diagnostics",
        "",
        _markdown_table(pd.DataFrame({
            "Fold": [r.fold for r in records],
            "Uniform-collapse epochs": [r.training.get("collapse_epochs", {}).get("uniform") for r in records],
            "One-hot-collapse epochs": [r.training.get("collapse_epochs", {}).get("one-hot") for r in records],
            "Held-out attention entropy": [round(r.held_out["mil"]["mean_normalized_entropy"], 3) for r in records],
            "Attention on tumour slices": [round(r.held_out["mil"]["tumour_attention_mass"], 3) for r in records],
            "Tumour share of slices": [round(r.held_out["mil"]["tumour_share"], 3) for r in records],
            "Critical slice is tumour": [round(r.held_out["mil"]["critical_is_tumour_rate"], 3) for r in records],
        })),
        "",
        "## Class weights used",
        "",
        _markdown_table(pd.DataFrame({
            "Fold": [r.fold for r in records],
            "In the loss": [r.class_weights["use_class_weights"] for r in records],
            "LGG": [round(r.class_weights["LGG"], 4) for r in records],
            "HGG": [round(r.class_weights["HGG"], 4) for r in records],
            "Training LGG / HGG": [f"{r.class_weights['train_counts']['LGG']} / {r.class_weights['train_counts']['HGG']}"
                                   for r in records],
        })),
        "",
        "## Verification checklist",
        "",
        *[f"- [{'x' if item.passed else ' '}] {item.text}: **{'passed' if item.passed else 'failed'}**. "
          f"{item.evidence}" for item in items],
        "",
        *[f"![{Path(image).stem}]({Path(image).name})" for image in images],
        "",
    ]
    return "\n".join(lines)
