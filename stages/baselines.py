"""Stage baselines: logistic regressions on hand-made features, fitted per fold and scored on the fold's held-out
patients (the same as evaluate@k) -> plots/baselines/predictions.csv and metrics/baselines.json.

``whole_brain`` sees the images alone (no segmentation): the yardstick an image-only model must beat.
``seg_statistics`` sees the tumour mask at test time too: an upper reference, not a competitor.
"""

import _src  # noqa: F401  (first: gliomil from this checkout, see stages/_src.py)

# isort: split

import pandas as pd

from gliomil import params as P
from gliomil import paths
from gliomil.baselines.logistic import BASELINES, fold_predictions
from gliomil.data.folds import FoldSplit
from gliomil.evaluation.metrics import pooled_auc_with_ci
from gliomil.runtime.files import write_json, write_text
from gliomil.runtime.stage import run_stage


def main():
    params = P.load_params()
    folds, seed = P.value(params, "folds"), P.value(params, "seed")
    splits = [FoldSplit.read(paths.fold_split(k)) for k in folds]
    predictions = fold_predictions(pd.read_csv(paths.BASELINE_FEATURES, dtype={"subject_id": str}), splits)
    write_text(paths.BASELINE_PREDICTIONS, predictions.to_csv(index=False))
    metrics = {}
    for name, (_, what) in BASELINES.items():
        rows = predictions[predictions["baseline"] == name]
        pooled = pooled_auc_with_ci(
            rows["label"].to_numpy(), rows["probability"].to_numpy(), P.value(params, "aggregate.n_bootstrap"), seed
        )
        metrics[name] = {"uses": what, **pooled}
        print(
            f"{name} ({what}): pooled held-out AUC {pooled['auc']:.3f} ({pooled['ci_low']:.3f}-{pooled['ci_high']:.3f})"
        )
    write_json(paths.BASELINE_METRICS, metrics)


if __name__ == "__main__":
    run_stage(main)
