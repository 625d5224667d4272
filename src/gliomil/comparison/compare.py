"""Before -> after comparison of two runs, read through DVC's API.

    python -m gliomil.comparison.compare BEFORE AFTER [--threshold at_0.5|at_youden_inner_val]
        [--split held_out|inner_val|external|all] [--n-resamples 2000] [--seed 0] [--json FILE]

BEFORE and AFTER are git revisions or experiment names (as `dvc exp show` lists them), or
"workspace" for the files as they are now.

It prints the audit's per-fold table (before -> after), then a paired analysis of the per-patient
predictions, for the held-out predictions pooled over folds (``plots/cv/pooled_predictions.csv``: the one to
report), for the folds' inner-validation predictions (``plots/eval/fold_<k>/inner_val_predictions.csv``:
the one to tune on) and for the packaged model's predictions on the external site (``plots/external/
predictions.csv``: transfer to another scanner, a secondary endpoint; its "Youden" decisions are the bundle's,
at the threshold chosen on the pooled inner-validation predictions; a run without them is left out in one line):

1. primary endpoint: the difference in ROC AUC, DeLong's test for two correlated AUCs (z, p, 95% CI);
2. exact McNemar tests of right/wrong decisions at 0.5: all patients, HGG only (HGG recall), LGG only (LGG
   recall);
3. paired bootstrap 95% intervals (patients resampled within grade, fixed seed) of the differences in balanced
   accuracy, HGG recall and LGG recall at 0.5 and at each run's inner-validation Youden threshold, and in the
   Brier score.

Holm's correction runs over the family of p-values (DeLong and the three McNemar tests); the bootstrap
intervals are not adjusted. Every difference is after - before. The two runs are paired patient by patient on
``(subject_id, fold)``; when their patients, folds or labels differ (another cohort, another split) one line
says why they cannot be paired and unpaired tests follow: each run's AUC with its DeLong interval and a z-test
of the two independent AUCs, and Fisher's exact test (with the chi-square test beside it) on the counts of
right decisions.

The pure functions (:func:`compare_predictions`, :func:`render_comparison`) take two DataFrames and need no
DVC; :func:`read_run` and :func:`read_predictions` are the I/O.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import pandas as pd

from gliomil import paths
from gliomil.comparison.runs import read_csv, read_json, read_params
from gliomil.comparison.statistics import (
    BootstrapResult,
    McNemarResult,
    ProportionTest,
    UnpairedAucTest,
    holm,
    mcnemar_exact,
    p_text,
    paired_bootstrap_ci,
    proportion_test,
    unpaired_auc_test,
    verdict,
)
from gliomil.errors import GliomilError
from gliomil.evaluation.aggregate import StatusRules, fold_statuses, seed_table
from gliomil.evaluation.intervals import DeLongResult, delong_test, format_p
from gliomil.evaluation.metrics import balanced_accuracy, brier_score, sensitivity, specificity
from gliomil.runtime.files import write_text
from gliomil.runtime.stage import run_command
from gliomil.vocabulary import GRADES

SPLITS = {
    "held_out": "held-out: the one to report",
    "inner_val": "inner validation: the one to tune on",
    "external": "external site: transfer to another scanner (secondary)",
}
PREDICTION_COLUMNS = ("subject_id", "label", "probability", "predicted_at_0.5", "predicted_at_youden", "fold")
# Decision column of each threshold; the Youden threshold is each fold's own (chosen on its inner validation).
THRESHOLDS = {"0.5": "predicted_at_0.5", "Youden": "predicted_at_youden"}
PRIMARY = "AUC"
ACCURACY, HGG_RECALL, LGG_RECALL = "accuracy at 0.5", "HGG recall at 0.5", "LGG recall at 0.5"
LEVEL = 0.95


def read_run(rev: str) -> dict:
    """Params, per-fold held-out metrics and the CV summary of one revision or experiment."""
    params = read_params(rev, what="metrics")
    folds = [read_json(paths.fold_eval_metrics(k).as_posix(), rev, "metrics") for k in params["folds"]]
    return {"params": params, "folds": folds, "summary": read_json(paths.CV_SUMMARY.as_posix(), rev, "metrics")}


def _arrow(before, after, digits: int = 4) -> str:
    if isinstance(before, float):
        return f"{before:.{digits}f} -> {after:.{digits}f}"
    return f"{before} -> {after}"


def comparison_table(before: dict, after: dict, threshold_key: str = "at_0.5") -> str:
    """Markdown: per fold AUC, F1, Acc, class balance and status before -> after, then CV mean and std."""
    rules = StatusRules(min_recall=after["params"]["aggregate"]["min_recall"])
    tables = [
        seed_table(run["folds"], fold_statuses([m[threshold_key] for m in run["folds"]], rules), threshold_key)
        for run in (before, after)
    ]
    columns = list(tables[0].columns)
    lines = [f"Threshold: {threshold_key}", "", "| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for (_, b), (_, a) in zip(tables[0].iterrows(), tables[1].iterrows()):
        cells = [str(a["Fold"])] + [_arrow(b[column], a[column]) for column in columns[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for label, key in (
        ("AUC", "auc"),
        ("F1", f"{threshold_key}/f1"),
        ("Accuracy", f"{threshold_key}/accuracy"),
        ("Balanced accuracy", f"{threshold_key}/balanced_accuracy"),
    ):
        b, a = before["summary"]["folds_mean_std"][key], after["summary"]["folds_mean_std"][key]
        lines.append(f"- {label}: {b['mean']:.4f} ± {b['std']:.4f} -> {a['mean']:.4f} ± {a['std']:.4f}")
    b, a = before["summary"]["pooled"], after["summary"]["pooled"]
    lines.append(
        f"- Pooled out-of-fold AUC: {b['auc']:.4f} [{b['ci_low']:.3f}, {b['ci_high']:.3f}] -> "
        f"{a['auc']:.4f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}]"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# Per-patient predictions: pairing, paired and unpaired analysis (pure functions, no DVC)
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedComparison:
    """Paired analysis of two runs' predictions for the same patients; every difference is after - before.

    delong: the primary endpoint. mcnemar: exact McNemar tests at 0.5 keyed by endpoint (accuracy, HGG recall,
    LGG recall at 0.5). bootstrap: paired stratified bootstrap intervals keyed by endpoint, with each run's value
    in ``values_before`` / ``values_after``. holm: Holm-adjusted p of the DeLong test ("AUC") and the McNemar
    tests, over that family. verdicts: one plain-words line per endpoint, primary first.
    """

    split: str
    n_rows: int
    n_patients: int
    n_hgg: int
    n_lgg: int
    folds: list[int]
    delong: DeLongResult
    mcnemar: dict[str, McNemarResult]
    bootstrap: dict[str, BootstrapResult]
    values_before: dict[str, float]
    values_after: dict[str, float]
    holm: dict[str, float]
    verdicts: list[str]
    n_resamples: int
    seed: int


@dataclass(frozen=True)
class UnpairedComparison:
    """Unpaired analysis when the runs cannot be paired (``reason`` says why); differences are after - before.

    auc: the primary endpoint. proportions: Fisher / chi-square tests at 0.5 keyed by endpoint. holm:
    Holm-adjusted p of the AUC test and the Fisher tests, over that family.
    """

    split: str
    reason: str
    n_before: int
    n_after: int
    auc: UnpairedAucTest
    proportions: dict[str, ProportionTest]
    holm: dict[str, float]
    verdicts: list[str]


def _check_predictions(table: pd.DataFrame, name: str) -> pd.DataFrame:
    missing = [c for c in PREDICTION_COLUMNS if c not in table.columns]
    if missing:
        raise GliomilError(f"the {name} predictions lack the columns {missing}")
    table = table.loc[:, list(PREDICTION_COLUMNS)].copy()
    if table[["label", "probability", "predicted_at_0.5", "predicted_at_youden"]].isna().any().any():
        raise GliomilError(f"the {name} predictions have missing values")
    for column in ("label", "predicted_at_0.5", "predicted_at_youden"):
        if not table[column].isin((0, 1)).all():
            raise GliomilError(f"the {name} predictions' {column} must be 0 (LGG) or 1 (HGG)")
        table[column] = table[column].astype(int)
    repeated = table.duplicated(["subject_id", "fold"]).sum()
    if repeated:
        raise GliomilError(f"the {name} predictions list {repeated} patients more than once in a fold")
    # A fixed order makes the bootstrap independent of the order of the rows in the files.
    return table.sort_values(["fold", "subject_id"], kind="stable").reset_index(drop=True)


def _patients(n: int) -> str:
    return f"{n} patient" if n == 1 else f"{n} patients"


def pairing_problem(before: pd.DataFrame, after: pd.DataFrame) -> str | None:
    """Why two prediction tables cannot be paired on (subject_id, fold), or None when they can.

    Different patients (another cohort or split), the same patients in other folds (a changed split) or the same
    patient with another label (another cohort or labelling) each make a paired test meaningless.
    """
    subjects_before, subjects_after = set(before["subject_id"]), set(after["subject_id"])
    differ = len(subjects_before ^ subjects_after)
    if differ:
        return f"{_patients(differ)} differ between the runs (another cohort or split)"
    keys_before = set(zip(before["subject_id"], before["fold"]))
    keys_after = set(zip(after["subject_id"], after["fold"]))
    moved = {subject for subject, _ in keys_before ^ keys_after}
    if moved:
        return f"{_patients(len(moved))} are in another fold in the other run (a changed split)"
    merged = before.merge(after, on=["subject_id", "fold"], suffixes=("_before", "_after"))
    relabelled = int((merged["label_before"] != merged["label_after"]).sum())
    if relabelled:
        return f"{_patients(relabelled)} have another label in the other run (another cohort or labelling)"
    return None


def _bootstrap_statistics() -> dict:
    """Endpoint -> (column, statistic(labels, values), higher_is_better).

    At a threshold the statistics are evaluated on the run's decisions (0/1 columns) with a cut at 0.5, which
    returns the decisions unchanged: the Youden threshold differs per fold and per run, and the decision columns
    are what each fold decided. The Brier score needs no threshold and uses the probabilities.
    """
    statistics = {}
    for threshold, column in THRESHOLDS.items():
        for name, statistic in (
            ("balanced accuracy", balanced_accuracy),
            ("HGG recall", sensitivity),
            ("LGG recall", specificity),
        ):
            statistics[f"{name} at {threshold}"] = (column, partial(statistic, threshold=0.5), True)
    statistics["Brier score"] = ("probability", brier_score, False)
    return statistics


def _analysis_error(split: str, exc: ValueError) -> GliomilError:
    return GliomilError(f"{split}: cannot analyse the predictions: {exc}")


def paired_comparison(
    before: pd.DataFrame,
    after: pd.DataFrame,
    split: str = SPLITS["held_out"],
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> PairedComparison:
    """Paired analysis of two checked prediction tables with the same (subject_id, fold) rows and labels."""
    merged = before.merge(after, on=["subject_id", "fold"], suffixes=("_before", "_after"), validate="one_to_one")
    labels = merged["label_before"].to_numpy()
    try:
        delong = delong_test(labels, merged["probability_before"].to_numpy(), merged["probability_after"].to_numpy())
        right = {
            run: merged[f"predicted_at_0.5_{run}"].to_numpy() == merged[f"label_{run}"].to_numpy()
            for run in ("before", "after")
        }
        mcnemar = {}
        for name, keep in ((ACCURACY, slice(None)), (HGG_RECALL, labels == 1), (LGG_RECALL, labels == 0)):
            mcnemar[name] = mcnemar_exact(right["before"][keep], right["after"][keep])
        bootstrap, values_before, values_after = {}, {}, {}
        for name, (column, statistic, _) in _bootstrap_statistics().items():
            b, a = merged[f"{column}_before"].to_numpy(float), merged[f"{column}_after"].to_numpy(float)
            values_before[name], values_after[name] = statistic(labels, b), statistic(labels, a)
            bootstrap[name] = paired_bootstrap_ci(labels, b, a, statistic, n_resamples=n_resamples, seed=seed)
    except ValueError as exc:
        raise _analysis_error(split, exc) from None
    family = [PRIMARY, *mcnemar]
    adjusted = dict(zip(family, holm([delong.p] + [m.p for m in mcnemar.values()])))
    verdicts = [verdict(delong, p_adjusted=adjusted[PRIMARY], alpha=alpha)]
    verdicts += [verdict(m, endpoint=name, p_adjusted=adjusted[name], alpha=alpha) for name, m in mcnemar.items()]
    verdicts += [
        # Secondary and unadjusted: two runs of the same params on two hosts gave one "improved" line among these.
        verdict(bootstrap[name], endpoint=name, higher_is_better=higher, difference_label="difference")
        + "; secondary, not adjusted for multiplicity"
        for name, (_, _, higher) in _bootstrap_statistics().items()
    ]
    return PairedComparison(
        split=split,
        n_rows=len(merged),
        n_patients=int(merged["subject_id"].nunique()),
        n_hgg=int((labels == 1).sum()),
        n_lgg=int((labels == 0).sum()),
        folds=sorted(int(k) for k in merged["fold"].unique()),
        delong=delong,
        mcnemar=mcnemar,
        bootstrap=bootstrap,
        values_before=values_before,
        values_after=values_after,
        holm=adjusted,
        verdicts=verdicts,
        n_resamples=int(n_resamples),
        seed=int(seed),
    )


def _proportion_verdict(name: str, test: ProportionTest, p_adjusted: float, alpha: float) -> str:
    counts = f"{test.right_before}/{test.n_before} -> {test.right_after}/{test.n_after}"
    words = p_text("Fisher", test.fisher_p, p_adjusted)
    if p_adjusted < alpha:
        direction = "improved" if test.difference > 0 else "worsened"
        return f"{name} {direction} {counts} ({words})"
    return f"no evidence of a difference in {name} ({counts}, {words})"


def unpaired_comparison(
    before: pd.DataFrame, after: pd.DataFrame, reason: str, split: str = SPLITS["held_out"], alpha: float = 0.05
) -> UnpairedComparison:
    """Unpaired analysis of two checked prediction tables of different patients (``reason`` says why)."""
    try:
        auc = unpaired_auc_test(before["label"], before["probability"], after["label"], after["probability"])
        proportions = {}
        for name, keep in ((ACCURACY, None), (HGG_RECALL, 1), (LGG_RECALL, 0)):
            counts = []
            for run in (before, after):
                rows = run if keep is None else run[run["label"] == keep]
                counts += [int((rows["predicted_at_0.5"] == rows["label"]).sum()), len(rows)]
            proportions[name] = proportion_test(*counts)
    except ValueError as exc:
        raise _analysis_error(split, exc) from None
    family = [PRIMARY, *proportions]
    adjusted = dict(zip(family, holm([auc.p] + [t.fisher_p for t in proportions.values()])))
    verdicts = [verdict(auc, p_adjusted=adjusted[PRIMARY], alpha=alpha)]
    verdicts += [_proportion_verdict(name, t, adjusted[name], alpha) for name, t in proportions.items()]
    return UnpairedComparison(
        split=split,
        reason=reason,
        n_before=len(before),
        n_after=len(after),
        auc=auc,
        proportions=proportions,
        holm=adjusted,
        verdicts=verdicts,
    )


def compare_predictions(
    before: pd.DataFrame,
    after: pd.DataFrame,
    split: str = SPLITS["held_out"],
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> PairedComparison | UnpairedComparison:
    """Paired analysis of two runs' per-patient predictions, or the unpaired one when they cannot be paired.

    before, after: tables with the columns of ``plots/cv/pooled_predictions.csv`` (subject_id, label 1 = HGG,
    probability, predicted_at_0.5, predicted_at_youden, fold; others are ignored). Rows are paired on
    (subject_id, fold) and sorted, so the result does not depend on the row order.
    """
    before, after = _check_predictions(before, "before"), _check_predictions(after, "after")
    reason = pairing_problem(before, after)
    if reason is None:
        return paired_comparison(before, after, split, n_resamples, seed, alpha)
    return unpaired_comparison(before, after, reason, split, alpha)


def _p(p: float) -> str:
    return format_p(p, digits=4)


def _ci(low: float, high: float) -> str:
    return f"[{low:.4f}, {high:.4f}]"


def _counts(m: McNemarResult, run: str) -> str:
    return f"{m.n_right_before if run == 'before' else m.n_right_after}/{m.n}"


def _render_paired(r: PairedComparison) -> list[str]:
    d = r.delong
    cohort = f"{_patients(r.n_rows)} ({r.n_hgg} HGG, {r.n_lgg} LGG), folds {', '.join(map(str, r.folds))}"
    if r.n_patients != r.n_rows:
        cohort += (
            f"; {r.n_patients} distinct patients: a patient in several folds' inner validation counts once per "
            "fold, so the tests lean optimistic"
        )
    lines = [
        f"Paired on subject and fold: {cohort}.",
        f"Primary endpoint: the difference in ROC AUC (DeLong's test). Holm's correction runs over the "
        f"{len(r.holm)} p-values (DeLong and the exact McNemar tests at 0.5); the bootstrap intervals "
        f"({r.n_resamples} paired resamples within grade, seed {r.seed}) are not adjusted. "
        "At Youden: each fold's inner-validation threshold, evaluated on the decisions.",
        "",
        "| Endpoint | Test | Before | After | After - before [95% CI] | p | Holm p |",
        "|---|---|---|---|---|---|---|",
        f"| AUC (primary) | DeLong z = {d.z:.4f} | {d.auc_before:.4f} | {d.auc_after:.4f} | "
        f"{d.difference:+.4f} {_ci(d.ci_low, d.ci_high)} | {_p(d.p)} | {_p(r.holm[PRIMARY])} |",
    ]
    for name, m in r.mcnemar.items():
        lines.append(
            f"| {name[0].upper() + name[1:]} | exact McNemar, b = {m.b}, c = {m.c} | {_counts(m, 'before')} | "
            f"{_counts(m, 'after')} | {m.n_right_after - m.n_right_before:+d} patients | {_p(m.p)} | "
            f"{_p(r.holm[name])} |"
        )
    for name, b in r.bootstrap.items():
        lines.append(
            f"| {name[0].upper() + name[1:]} | paired bootstrap | {r.values_before[name]:.4f} | "
            f"{r.values_after[name]:.4f} | {b.observed:+.4f} {_ci(b.ci_low, b.ci_high)} | | |"
        )
    return lines


def _render_unpaired(r: UnpairedComparison) -> list[str]:
    a = r.auc
    lines = [
        f"cannot pair: {r.reason}; unpaired tests follow",
        "",
        f"Unpaired: {_patients(r.n_before)} before, {_patients(r.n_after)} after. Primary endpoint: the difference "
        f"in ROC AUC (z-test of two independent AUCs with DeLong variances). Holm's correction runs over the "
        f"{len(r.holm)} p-values (the AUC test and Fisher's exact tests at 0.5).",
        "",
        "| Endpoint | Test | Before | After | After - before [95% CI] | p | Holm p |",
        "|---|---|---|---|---|---|---|",
        f"| AUC (primary) | unpaired z = {a.z:.4f} | {a.before.auc:.4f} {_ci(a.before.ci_low, a.before.ci_high)} | "
        f"{a.after.auc:.4f} {_ci(a.after.ci_low, a.after.ci_high)} | {a.difference:+.4f} {_ci(a.ci_low, a.ci_high)} "
        f"| {_p(a.p)} | {_p(r.holm[PRIMARY])} |",
    ]
    for name, t in r.proportions.items():
        lines.append(
            f"| {name[0].upper() + name[1:]} | Fisher exact (chi-square p = {_p(t.chi2_p)}) | "
            f"{t.right_before}/{t.n_before} | {t.right_after}/{t.n_after} | {t.difference:+.4f} | "
            f"{_p(t.fisher_p)} | {_p(r.holm[name])} |"
        )
    return lines


def render_comparison(result: PairedComparison | UnpairedComparison) -> str:
    """Markdown: a heading naming the split, the endpoint table and the verdict block (one line per endpoint)."""
    lines = [f"## {result.split}", ""]
    if isinstance(result, PairedComparison):
        lines += _render_paired(result)
    else:
        lines += _render_unpaired(result)
    lines += ["", "Verdict:", *(f"- {line}" for line in result.verdicts)]
    return "\n".join(lines)


def comparison_json(result: PairedComparison | UnpairedComparison) -> dict:
    """The full-precision result as plain JSON-ready data, with ``paired`` saying which analysis it is."""
    return {"paired": isinstance(result, PairedComparison), **asdict(result)}


# --------------------------------------------------------------------------------------------------------------
# I/O and command line
# --------------------------------------------------------------------------------------------------------------


def prediction_files(split: str, folds: list[int]) -> list[tuple[str, int | None]]:
    """(path, fold) of the prediction tables of a split; fold None when the file has its own fold column."""
    if split == "held_out":
        return [((paths.CV_PLOTS / "pooled_predictions.csv").as_posix(), None)]
    return [((paths.fold_eval_plots(k) / "inner_val_predictions.csv").as_posix(), k) for k in folds]


def external_as_fold_table(table: pd.DataFrame) -> pd.DataFrame:
    """The external stage's predictions (``subject_id, label, probability, decision``, one row per patient) as a
    prediction table of one "fold" 0: decisions at 0.5 from the probability, and the bundle's own decisions (at its
    threshold, chosen on the pooled inner-validation predictions) in the Youden column."""
    return pd.DataFrame(
        {
            "subject_id": table["subject_id"],
            "label": table["label"],
            "probability": table["probability"],
            "predicted_at_0.5": (table["probability"] >= 0.5).astype(int),
            "predicted_at_youden": (table["decision"] == GRADES[1]).astype(int),
            "fold": 0,
        }
    )


def read_predictions(rev: str, split: str, folds: list[int]) -> pd.DataFrame:
    """One run's predictions of a split (held_out, inner_val or external), with a fold column, read through
    dvc.api."""
    what = "predictions (--split names the predictions to compare)"
    if split == "external":
        return external_as_fold_table(read_csv((paths.EXTERNAL_PLOTS / "predictions.csv").as_posix(), rev, what))
    tables = []
    for path, fold in prediction_files(split, folds):
        table = read_csv(path, rev, what)
        tables.append(table if fold is None else table.assign(fold=fold))
    return pd.concat(tables, ignore_index=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Before -> after comparison of two runs (revisions or experiments).")
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--threshold", choices=("at_0.5", "at_youden_inner_val"), default="at_0.5")
    parser.add_argument(
        "--split",
        choices=(*SPLITS, "all"),
        default="all",
        help="which per-patient predictions to test: held_out (to report), inner_val (to tune on), external (the "
        "external site) or all",
    )
    parser.add_argument("--n-resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the full-precision results here")
    args = parser.parse_args(argv)
    before, after = read_run(args.before), read_run(args.after)
    if len(before["folds"]) != len(after["folds"]):
        raise GliomilError(
            f"'{args.before}' has {len(before['folds'])} folds and '{args.after}' "
            f"{len(after['folds'])}: the runs are not comparable fold by fold"
        )
    print(f"{args.before} -> {args.after}")
    print(comparison_table(before, after, args.threshold))
    splits = list(SPLITS) if args.split == "all" else [args.split]
    results = {}
    for split in splits:
        try:
            tables = [
                read_predictions(rev, split, run["params"]["folds"])
                for rev, run in ((args.before, before), (args.after, after))
            ]
        except GliomilError as exc:
            if split != "external" or args.split == "external":
                raise
            print(f"\n## {SPLITS[split]}\n\nnot compared: {exc}")
            continue
        results[split] = compare_predictions(*tables, SPLITS[split], args.n_resamples, args.seed)
        print()
        print(render_comparison(results[split]))
    if args.json is not None:
        document = {
            "before": args.before,
            "after": args.after,
            "splits": {k: comparison_json(r) for k, r in results.items()},
        }
        write_text(args.json, json.dumps(document, indent=1) + "\n")


if __name__ == "__main__":
    run_command(lambda: main(sys.argv[1:]))
