"""Stage evaluate@<fold>: score the fold's held-out patients with its best checkpoint.

Writes metrics/eval/fold_<k>.json (at threshold 0.5 and at the Youden threshold of the inner-validation
patients) and plots/eval/fold_<k>/ (per-patient predictions of the held-out and the inner-validation
patients, ROC, precision-recall, calibration data).

Usage: python stages/evaluate.py <fold>
"""

import _src  # noqa: F401  (first: gliomil from this checkout, see stages/_src.py)

# isort: split

import sys

from gliomil import params as P
from gliomil import paths
from gliomil.data.bags import BagSet
from gliomil.data.folds import FoldSplit
from gliomil.evaluation.metrics import curve_tables, fold_metrics, youden_threshold
from gliomil.evaluation.scoring import patient_predictions, score_bags, whole_bag_summary
from gliomil.model.checkpoint import load_checkpoint
from gliomil.runtime.device import autocast_dtype, default_device, make_deterministic, set_threads
from gliomil.runtime.files import write_json, write_text
from gliomil.runtime.stage import fold_argument, run_stage


def main():
    params = P.load_params()
    fold = fold_argument(sys.argv[1:], P.value(params, "folds"), "evaluate.py")
    chunk, top_k = P.value(params, "train.eval_chunk"), P.value(params, "train.diagnostics.top_k")
    make_deterministic()
    set_threads(P.value(params, "train.threads"))

    device = default_device()
    dtype = autocast_dtype(device, P.value(params, "train.amp"))
    model, checkpoint = load_checkpoint(paths.fold_model(fold) / "best.pt", device)
    split = FoldSplit.read(paths.fold_split(fold))
    val_set = BagSet.load(paths.PREPROCESSED, split.inner_val)
    test_set = BagSet.load(paths.PREPROCESSED, split.test)
    if P.value(params, "train.tumour_blind"):  # the confound control is scored as it was trained
        val_set, test_set = val_set.without_tumour_slices(), test_set.without_tumour_slices()

    val_scores = score_bags(model, val_set.bags, device, chunk, dtype)
    youden = youden_threshold(val_set.labels, val_scores.probabilities)
    test_scores = score_bags(model, test_set.bags, device, chunk, dtype)
    probabilities = test_scores.probabilities

    metrics = {
        "fold": fold,
        "best_epoch": checkpoint["epoch"],
        "n_test": len(test_set),
        **fold_metrics(test_set.labels, probabilities, youden),
    }
    metrics["mil"] = whole_bag_summary(test_scores, test_set, top_k)
    write_json(paths.fold_eval_metrics(fold), metrics)
    out_dir = paths.fold_eval_plots(fold)
    write_text(out_dir / "predictions.csv", patient_predictions(test_set, test_scores, youden).to_csv(index=False))
    # The inner-validation predictions let tuning compare runs without looking at the held-out patients.
    write_text(
        out_dir / "inner_val_predictions.csv", patient_predictions(val_set, val_scores, youden).to_csv(index=False)
    )
    for name, table in curve_tables(test_set.labels, probabilities).items():
        write_text(out_dir / f"{name}.csv", table.to_csv(index=False))
    fixed, tuned = metrics["at_0.5"], metrics["at_youden_inner_val"]
    print(
        f"fold {fold}: held-out AUC {metrics['auc']:.3f}; at 0.5: F1 {fixed['f1']:.3f}, {fixed['hgg_detected']}; "
        f"at Youden {youden:.3f} (inner validation): F1 {tuned['f1']:.3f}, {tuned['hgg_detected']}"
    )


if __name__ == "__main__":
    run_stage(main)
