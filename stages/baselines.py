"""Stage baselines: logistic regressions on hand-made features, fitted per fold and scored on the fold's held-out
patients (the same as evaluate@k) -> plots/baselines/predictions.csv and metrics/baselines.json.

``whole_brain`` sees the images alone (no segmentation, no localisation): the yardstick an image-only model must
beat. ``predicted_mask`` segments the tumour from the images (a per-pixel regression fitted on the fold's training
masks) and describes it: image-only at test time, "find it, then measure it" without deep learning.
``seg_statistics`` sees the tumour mask at test time too: an upper reference, not a competitor.
"""

import _src  # noqa: F401  (first: gliomil from this checkout, see stages/_src.py)

# isort: split

import pandas as pd

from gliomil import params as P
from gliomil import paths
from gliomil.baselines import segmented
from gliomil.baselines.logistic import BASELINES, fold_predictions
from gliomil.data.bags import BagSet
from gliomil.data.folds import FoldSplit
from gliomil.evaluation.metrics import pooled_auc_with_ci
from gliomil.runtime.files import write_json, write_text
from gliomil.runtime.stage import run_stage


def main():
    params = P.load_params()
    folds, seed = P.value(params, "folds"), P.value(params, "seed")
    splits = [FoldSplit.read(paths.fold_split(k)) for k in folds]
    subjects = list(dict.fromkeys(s for split in splits for s in (*split.train, *split.inner_val, *split.test)))
    store = BagSet.load(paths.PREPROCESSED, subjects, tumour_maps=True)
    predictions = pd.concat(
        [
            fold_predictions(pd.read_csv(paths.BASELINE_FEATURES, dtype={"subject_id": str}), splits),
            segmented.fold_predictions(store, splits, seed),
        ],
        ignore_index=True,
    )
    write_text(paths.BASELINE_PREDICTIONS, predictions.to_csv(index=False))
    uses = {name: what for name, (_, what) in BASELINES.items()} | {segmented.NAME: segmented.USES}
    metrics = {}
    for name, what in uses.items():
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
