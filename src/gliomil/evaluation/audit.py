"""The audit report: the seed audit's table, summary and verification checklist, evaluated on this run's outputs.

Every checklist item is decided from files the pipeline wrote, and its evidence is printed beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gliomil.evaluation.diagnostics import COLLAPSE_KINDS, LOGGED_KEYS, CollapseThresholds, detect_collapse
from gliomil.evaluation.intervals import format_p
from gliomil.evaluation.plots import figures_per_epoch
from gliomil.vocabulary import HAS_ATTENTION


@dataclass(frozen=True)
class FoldRecord:
    """What the report needs of one fold (read by the aggregate stage from the fold's outputs)."""

    fold: int
    held_out: dict  # metrics/eval/fold_<k>.json
    training: dict  # metrics/train/fold_<k>.json (DVCLive summary)
    class_weights: dict  # models/fold_<k>/class_weights.json
    mil_history: pd.DataFrame  # mil_history() of the fold's recorded history
    epochs_trained: int
    figures: int  # PNG files in plots/train/fold_<k>


def mil_history(history: pd.DataFrame, keys: tuple[str, ...] = LOGGED_KEYS) -> pd.DataFrame:
    """The per-epoch MIL diagnostics of one fold, from the history its train stage recorded
    (``models/fold_<k>/history.csv``: one row per epoch, columns ``epoch`` and ``<split>/mil/<key>``).

    One row per (split, epoch) for split ``train`` and ``val``, with columns ``split``, ``step``
    (epoch - 1, as DVCLive counts) and one per key of ``keys`` (the diagnostics the aggregator has, of
    :data:`~gliomil.evaluation.diagnostics.LOGGED_KEYS`); a value that was never logged is NaN.
    """
    frames = []
    for split in ("train", "val"):
        columns = {key: history.get(f"{split}/mil/{key}") for key in keys}
        frame = pd.DataFrame(
            {key: np.nan if column is None else column.to_numpy() for key, column in columns.items()},
            index=range(len(history)),
        )
        frames.append(frame.assign(split=split, step=history["epoch"].to_numpy() - 1))
    return pd.concat(frames, ignore_index=True)[["split", "step", *keys]]


def recount_collapse(mil_history: pd.DataFrame, thresholds: CollapseThresholds) -> dict[str, int]:
    """Collapse epochs recounted from logged diagnostics (training and validation rows together)."""
    keys = [key for key in mil_history.columns if key not in ("split", "step")]
    verdicts = [detect_collapse(row, thresholds) for row in mil_history[keys].to_dict("records")]
    return {kind: verdicts.count(kind) for kind in COLLAPSE_KINDS}


def epochs_with_all_diagnostics(mil_history: pd.DataFrame) -> int:
    """Epochs for which every diagnostic of the history was logged for both training and validation bags."""
    keys = [key for key in mil_history.columns if key not in ("split", "step")]
    complete = mil_history[keys].notna().all(axis=1)
    per_split = complete.groupby(mil_history["split"]).sum()
    return int(per_split.reindex(["train", "val"], fill_value=0).min())


@dataclass(frozen=True)
class CheckItem:
    text: str
    passed: bool
    evidence: str
    applies: bool = True  # False: the model has nothing the item checks (no attention to collapse); never "passed"


def checklist(
    records: list[FoldRecord],
    plot_every: int,
    min_recall: float,
    thresholds: CollapseThresholds,
    aggregator: str = "dsmil",
) -> list[CheckItem]:
    """The seed audit's verification checklist, item by item.

    Collapse warnings are checked against the logs: the collapse epochs that training counted (and
    warned about) must match, kind by kind, those that :func:`~gliomil.evaluation.diagnostics.detect_collapse`
    finds in the logged per-epoch diagnostics with the same thresholds. The diagnostics expected are those the
    ``aggregator`` has (:data:`gliomil.vocabulary.HAS_ATTENTION`); the collapse item does not apply without
    attention.
    """
    attention = HAS_ATTENTION[aggregator]
    at = [r.held_out["at_0.5"] for r in records]
    balanced = [min(m["sensitivity"], m["specificity"]) >= min_recall for m in at]
    last = records[-1]
    per_epoch = figures_per_epoch(attention)
    figures_expected = [per_epoch * (r.epochs_trained // plot_every) if plot_every else 0 for r in records]
    warned = {
        r.fold: {kind: r.training.get("collapse_epochs", {}).get(kind) for kind in COLLAPSE_KINDS} for r in records
    }
    recounted = {r.fold: recount_collapse(r.mil_history, thresholds) for r in records}
    logged = {r.fold: epochs_with_all_diagnostics(r.mil_history) for r in records}
    return [
        CheckItem(
            "Class balance improved (check confusion matrices)",
            all(balanced),
            "HGG and LGG recall at 0.5 >= {:.2f} in {}/{} folds; per fold: {}".format(
                min_recall,
                sum(balanced),
                len(records),
                ", ".join(
                    f"{r.fold}: {m['hgg_detected']}, "
                    f"LGG {m['confusion']['tn']}/{m['confusion']['tn'] + m['confusion']['fp']}"
                    for r, m in zip(records, at)
                ),
            ),
        ),
        CheckItem(
            f"Fold {last.fold} no longer predicts all LGG",
            at[-1]["predicted_hgg"] > 0,
            f"fold {last.fold} predicts {at[-1]['predicted_hgg']} of {last.held_out['n_test']} patients HGG "
            f"({at[-1]['hgg_detected']})",
        ),
        CheckItem(
            "MIL diagnostics logged in all epochs",
            all(logged[r.fold] == r.epochs_trained for r in records),
            "epochs with every diagnostic for training and validation bags: "
            + "; ".join(f"fold {r.fold}: {logged[r.fold]}/{r.epochs_trained}" for r in records),
        ),
        CheckItem(
            "Attention collapse warnings appear if needed",
            attention and warned == recounted,
            "collapse epochs warned during training vs recounted from the logged diagnostics "
            "(training + validation bags): "
            + "; ".join(
                f"fold {k}: warned {w['uniform']} uniform, {w['one-hot']} one-hot; recounted "
                f"{recounted[k]['uniform']}, {recounted[k]['one-hot']}"
                for k, w in warned.items()
            )
            if attention
            else f"aggregator {aggregator} has no attention to collapse",
            applies=attention,
        ),
        CheckItem(
            f"Plots saved per epoch (plot_every={plot_every})",
            all(r.figures == e for r, e in zip(records, figures_expected)),
            "; ".join(f"fold {r.fold}: {r.figures}/{e} figures" for r, e in zip(records, figures_expected)),
        ),
        CheckItem(
            "Class weights logged at training start",
            all(("LGG" in r.class_weights and "HGG" in r.class_weights) for r in records),
            "; ".join(
                f"fold {r.fold}: LGG={r.class_weights['LGG']:.3f}, HGG={r.class_weights['HGG']:.3f}"
                + ("" if r.class_weights["use_class_weights"] else " (unused)")
                for r in records
            ),
        ),
        CheckItem(
            "Final metrics include MIL diagnostics",
            all(r.held_out.get("mil") for r in records),
            "; ".join(f"fold {r.fold}: {_tumour_evidence(r.held_out.get('mil', {}))}" for r in records),
        ),
    ]


def item_verdict(item: CheckItem) -> str:
    """``passed``, ``failed`` or ``not applicable``."""
    if not item.applies:
        return "not applicable"
    return "passed" if item.passed else "failed"


def _rounded(mil: dict, key: str) -> float | str:
    """A held-out diagnostic to 3 decimals, or "n/a" when the aggregator has no such thing."""
    return round(mil[key], 3) if key in mil else "n/a"


def _tumour_evidence(mil: dict) -> str:
    """Where the held-out model looks, by what its aggregator has: attention's lift on tumour slices, else how
    often the highest-scoring slice holds tumour."""
    if "attention_tumour_lift" in mil:
        return f"attention lift on tumour slices {mil['attention_tumour_lift']:.2f}"
    if "critical_is_tumour_rate" in mil:
        return f"highest-scoring slice holds tumour in {mil['critical_is_tumour_rate']:.2f} of bags"
    return "no MIL diagnostics"


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def render_report(
    table: pd.DataFrame,
    summary: dict,
    records: list[FoldRecord],
    items: list[CheckItem],
    knobs: dict,
    images: list[str],
    external: dict | None = None,
    external_cohort: str = "",
    fingerprint: dict | None = None,
) -> str:
    """The Markdown text of reports/audit.md; ``knobs`` are the params it names (``{"seed": 42, ...}``);
    ``external`` is the external stage's metrics/external.json (of the cohort at ``external_cohort``), if any;
    ``fingerprint`` the fingerprint stage's metrics/fingerprint.json (:func:`confounds_section`), if any."""
    stats = summary["folds_mean_std"]

    def mean_std(key):
        return f"{stats[key]['mean']:.4f} ± {stats[key]['std']:.4f}"

    pooled = summary["pooled"]
    lines = [
        "# Audit report",
        "",
        "Written by the `aggregate` stage. Knobs: "
        + ", ".join(
            f"`{key}={str(value).lower() if isinstance(value, bool) else value}`" for key, value in knobs.items()
        )
        + ".",
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
        f"- Accuracy (at 0.5): {mean_std('at_0.5/accuracy')}; "
        f"balanced accuracy: {mean_std('at_0.5/balanced_accuracy')}",
        f"- Pooled out-of-fold AUC: {pooled['auc']:.4f} (95% bootstrap CI {pooled['ci_low']:.4f} to "
        f"{pooled['ci_high']:.4f}, {summary['patients']} patients)",
        f"- Pooled inner-validation AUC (the patients that chose each fold's epoch; compare runs on this, "
        f"not on the held-out numbers): {summary['pooled_inner_val']['auc']:.4f}",
        "",
        *baselines_section(summary.get("baselines", {})),
        "## MIL diagnostics",
        "",
        _markdown_table(
            pd.DataFrame(
                {
                    "Fold": [r.fold for r in records],
                    "Uniform-collapse epochs": [r.training.get("collapse_epochs", {}).get("uniform") for r in records],
                    "One-hot-collapse epochs": [r.training.get("collapse_epochs", {}).get("one-hot") for r in records],
                    "Held-out attention entropy": [
                        _rounded(r.held_out["mil"], "mean_normalized_entropy") for r in records
                    ],
                    "Attention on tumour slices": [
                        _rounded(r.held_out["mil"], "tumour_attention_mass") for r in records
                    ],
                    "Tumour share of slices": [_rounded(r.held_out["mil"], "tumour_share") for r in records],
                    "Critical slice is tumour": [
                        _rounded(r.held_out["mil"], "critical_is_tumour_rate") for r in records
                    ],
                }
            )
        ),
        "",
        "## Class weights used",
        "",
        _markdown_table(
            pd.DataFrame(
                {
                    "Fold": [r.fold for r in records],
                    "In the loss": [r.class_weights["use_class_weights"] for r in records],
                    "LGG": [round(r.class_weights["LGG"], 4) for r in records],
                    "HGG": [round(r.class_weights["HGG"], 4) for r in records],
                    "Training LGG / HGG": [
                        f"{r.class_weights['train_counts']['LGG']} / {r.class_weights['train_counts']['HGG']}"
                        for r in records
                    ],
                }
            )
        ),
        "",
        *(external_section(external, external_cohort, pooled) if external else []),
        *(confounds_section(fingerprint, pooled, bool(knobs.get("train.tumour_blind"))) if fingerprint else []),
        "## Verification checklist",
        "",
        *[
            f"- [{'x' if item.passed else ' '}] {item.text}: **{item_verdict(item)}**. {item.evidence}"
            for item in items
        ],
        "",
        *[f"![{Path(image).stem}]({Path(image).name})" for image in images],
        "",
    ]
    return "\n".join(lines)


def baselines_section(baselines: dict) -> list[str]:
    """Lines of the report's section on the model against the baselines (``summary["baselines"]``, from
    :func:`gliomil.evaluation.aggregate.against_baselines`); none without baselines."""
    if not baselines:
        return []
    lines = [
        "## Against the baselines (same folds, same held-out patients)",
        "",
        "Logistic regressions fitted on each fold's training and inner-validation patients (`baselines` stage). "
        "DeLong's test of the two correlated pooled AUCs; the difference is the model's AUC minus the baseline's, so "
        "a negative one means the baseline ranks the patients better. `predicted_mask` finds the tumour in the images "
        "with a pixel regression taught by the training patients' masks: image-only at test time, like the model. "
        "`seg_statistics` reads the tumour mask at test time: an upper reference, not a competitor of an image-only "
        "model.",
        "",
        "| Baseline | Uses | Baseline AUC | Model AUC | Difference (95% CI) | p |",
        "|---|---|---|---|---|---|",
    ]
    for name, test in baselines.items():
        lines.append(
            f"| `{name}` | {test.get('uses', '')} | {test['auc_baseline']:.3f} | {test['auc_model']:.3f} | "
            f"{test['difference']:+.3f} ({test['ci_low']:+.3f} to {test['ci_high']:+.3f}) | {format_p(test['p'])} |"
        )
    return [*lines, ""]


def confounds_section(fingerprint: dict, pooled: dict | None = None, tumour_blind: bool = False) -> list[str]:
    """Lines of the report's confound section (grade or scanner?), from the fingerprint stage's
    metrics/fingerprint.json (:mod:`gliomil.evaluation.confounds`): the site x grade table with a warning per
    single-grade site, each acquisition property's nuisance AUC with its DeLong interval, and what this run says
    as the tumour-blind control (``tumour_blind``, its pooled held-out AUC ``pooled``) or how to run it."""
    sites, nuisance = fingerprint["sites"], fingerprint["nuisance"]
    lines = ["## Confounds: grade or scanner?", ""]
    if sites["known_sites"] == 0:
        lines += [
            f"No subject's site is known (all {fingerprint['subjects']} `unknown`: ids that name no site, no "
            "`site` column in labels.csv), so the site x grade check cannot run.",
            "",
        ]
    else:
        share = sites["share_in_single_grade_sites"]
        lines += [
            "| Site | LGG | HGG | Total |",
            "|---|---|---|---|",
            *[
                f"| {row['site']}{' (single grade)' if row['single_grade'] else ''} | {row['LGG']} | {row['HGG']} | "
                f"{row['total']} |"
                for row in sites["table"]
            ],
            "",
            *[f"- **warning**: {warning}" for warning in sites["warnings"]],
            f"- {share:.0%} of the patients are in single-grade sites"
            + (": a model that recognises the site knows their grade." if share else "."),
            "",
        ]
    flagged = ", ".join(f"`{row['property']}`" for row in nuisance if row["flagged"])
    lines += [
        "How well each acquisition property alone ranks the grades (AUC read in the direction that ranks better; "
        "DeLong 95% interval). Flagged: AUC >= 0.70 with its Bonferroni-simultaneous interval over the "
        f"{len(nuisance)} properties above 0.5.",
        "",
        "| Property | Direction | Ranking AUC (95% CI) | Flagged |",
        "|---|---|---|---|",
        *[
            f"| `{row['property']}` | {row['direction']} | {row['ranking_auc']:.3f} ({row['ci_low']:.3f} to "
            f"{row['ci_high']:.3f}) | {'**yes**' if row['flagged'] else 'no'} |"
            for row in nuisance
        ],
        "",
        (
            f"- **warning**: {flagged} alone rank(s) the grades: a "
            "model can learn the acquisition instead of the tumour."
            if flagged
            else "- No acquisition property ranks the grades beyond the warning level."
        ),
        "",
        *tumour_blind_lines(pooled, tumour_blind),
    ]
    return lines


def tumour_blind_lines(pooled: dict | None, tumour_blind: bool) -> list[str]:
    """The tumour-blind control's lines: in such a run (``train.tumour_blind``), whether its pooled held-out AUC
    (``pooled``: auc, ci_low, ci_high) lies above chance; in any other run, the two commands that run it."""
    if not tumour_blind:
        return [
            "Tumour-blind control: not this run. `dvc exp run -S train.tumour_blind=true` trains and scores the "
            "same folds on the slices without a tumour voxel; `gliomil compare <this run> <that one>` gives the "
            "paired verdict.",
            "",
        ]
    auc, low, high = pooled["auc"], pooled["ci_low"], pooled["ci_high"]
    above = low > 0.5
    return [
        f"**This run is the tumour-blind control**: no slice holding a tumour voxel reached the model in training or "
        f"in scoring the held-out folds (the external section above scores every slice: prediction is image-only, "
        f"with no segmentation to find them). Pooled held-out AUC {auc:.3f} (95% CI {low:.3f} to {high:.3f}).",
        "",
        (
            "- **warning**: the interval lies above 0.5: the pipeline can rank the grades from something other "
            "than the tumour (mass effect, the acquisition). `gliomil compare <the real model's run> <this run>` "
            "gives the paired verdict against the real model."
            if above
            else "- The interval reaches 0.5: without the tumour the pipeline ranks the grades no better than chance."
        ),
        "",
    ]


def _with_ci(metrics: dict, key: str, method: str) -> str:
    return f"{metrics[key]:.3f} | {metrics[key + '_ci_low']:.3f} to {metrics[key + '_ci_high']:.3f} ({method})"


def external_section(external: dict, cohort: str, pooled: dict) -> list[str]:
    """Lines of the report's external-validation section, from metrics/external.json (the cohort at ``cohort``)."""
    decisions, calibration = external["at_bundle_threshold"], external["calibration"]
    return [
        "## External validation",
        "",
        f"The packaged model (`bundle/`: the mean of the fold models' probabilities, decision threshold "
        f"{decisions['threshold']:.4f} chosen on the pooled inner-validation predictions) on "
        f"{external['patients']} patients of `{cohort}` ({external['hgg']} HGG, {external['lgg']} LGG; "
        f"{external['skipped']} skipped) that no model was trained or tuned on.",
        "",
        "| Metric | Value | 95% interval |",
        "|---|---|---|",
        f"| AUC | {_with_ci(external, 'auc', 'DeLong')} |",
        f"| Balanced accuracy | {_with_ci(decisions, 'balanced_accuracy', 'stratified bootstrap')} |",
        f"| Sensitivity (HGG recall), {decisions['tp']}/{external['hgg']} | "
        f"{_with_ci(decisions, 'sensitivity', 'Wilson')} |",
        f"| Specificity (LGG recall), {decisions['tn']}/{external['lgg']} | "
        f"{_with_ci(decisions, 'specificity', 'Wilson')} |",
        f"| Brier score | {external['brier']:.3f} | |",
        f"| Expected calibration error | {external['ece']:.3f} | |",
        f"| Calibration slope / intercept (1 / 0 when calibrated) | "
        f"{calibration['slope']:.2f} / {calibration['intercept']:.2f} | |",
        f"| Mean P(HGG) / observed HGG rate | {calibration['mean_probability']:.3f} / "
        f"{calibration['observed_hgg_rate']:.3f} | |",
        "",
        f"Cross-validation on the training cohort, for comparison: pooled held-out AUC {pooled['auc']:.3f} "
        f"({pooled['ci_low']:.3f} to {pooled['ci_high']:.3f}). Per-patient predictions: `plots/external/`.",
        "",
    ]
