"""Before -> after table of two runs, in the audit's format, read through DVC's API.

    python -m gliomil.compare BEFORE AFTER [--threshold at_0.5|at_youden_inner_val]

BEFORE and AFTER are git revisions or experiment names (as `dvc exp show` lists them), or
"workspace" for the files as they are now.
"""

from __future__ import annotations

import argparse
import sys

import dvc.api

from .aggregate import StatusRules, fold_statuses
from .errors import GliomilError
from .stage import run_stage


def read_run(rev: str) -> dict:
    """Params, per-fold held-out metrics and the CV summary of one revision or experiment."""
    rev_arg = None if rev == "workspace" else rev
    try:
        params = dvc.api.params_show(rev=rev_arg)
        folds = [dvc.api.metrics_show(f"metrics/eval/fold_{k}.json", rev=rev_arg) for k in params["folds"]]
        summary = dvc.api.metrics_show("metrics/cv_summary.json", rev=rev_arg)
    except Exception as exc:  # DVC raises many types for an unknown rev or missing metrics
        raise GliomilError(f"cannot read the metrics of '{rev}': {type(exc).__name__}: {exc}") from None
    return {"params": params, "folds": folds, "summary": summary}


def _arrow(before, after, digits: int = 4) -> str:
    if isinstance(before, float):
        return f"{before:.{digits}f} -> {after:.{digits}f}"
    return f"{before} -> {after}"


def comparison_table(before: dict, after: dict, threshold_key: str = "at_0.5") -> str:
    """Markdown: per fold AUC, F1, Acc, class balance and status before -> after, then CV mean and std."""
    rules = StatusRules(min_recall=after["params"]["aggregate"]["min_recall"])
    status = {name: fold_statuses([m[threshold_key] for m in run["folds"]], rules)
              for name, run in (("before", before), ("after", after))}
    lines = [f"Threshold: {threshold_key}", "",
             "| Fold | AUC | F1 | Acc | Class balance | Status |", "|---|---|---|---|---|---|"]
    for i, (b, a) in enumerate(zip(before["folds"], after["folds"])):
        lines.append("| {} | {} | {} | {} | {} | {} |".format(
            a["fold"], _arrow(b["auc"], a["auc"]), _arrow(b[threshold_key]["f1"], a[threshold_key]["f1"]),
            _arrow(b[threshold_key]["accuracy"], a[threshold_key]["accuracy"]),
            _arrow(b[threshold_key]["hgg_detected"], a[threshold_key]["hgg_detected"]),
            _arrow(status["before"][i], status["after"][i])))
    lines.append("")
    for label, key in (("AUC", "auc"), ("F1", f"{threshold_key}/f1"), ("Accuracy", f"{threshold_key}/accuracy"),
                       ("Balanced accuracy", f"{threshold_key}/balanced_accuracy")):
        b, a = before["summary"]["folds_mean_std"][key], after["summary"]["folds_mean_std"][key]
        lines.append(f"- {label}: {b['mean']:.4f} ± {b['std']:.4f} -> {a['mean']:.4f} ± {a['std']:.4f}")
    b, a = before["summary"]["pooled"], after["summary"]["pooled"]
    lines.append(f"- Pooled out-of-fold AUC: {b['auc']:.4f} [{b['ci_low']:.3f}, {b['ci_high']:.3f}] -> "
                 f"{a['auc']:.4f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}]")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Before -> after table of two runs (revisions or experiments).")
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--threshold", choices=("at_0.5", "at_youden_inner_val"), default="at_0.5")
    args = parser.parse_args(argv)
    before, after = read_run(args.before), read_run(args.after)
    if len(before["folds"]) != len(after["folds"]):
        raise GliomilError(f"'{args.before}' has {len(before['folds'])} folds and '{args.after}' "
                           f"{len(after['folds'])}: the runs are not comparable fold by fold")
    print(f"{args.before} -> {args.after}")
    print(comparison_table(before, after, args.threshold))


if __name__ == "__main__":
    run_stage(lambda: main(sys.argv[1:]))
