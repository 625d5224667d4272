"""Where the tumour-mask regression's lead comes from: the baselines' regression on parts of its features, and on
the statistics of the 64 x 64 slices inside the true and the predicted tumour mask, on the pipeline's folds.

    python benchmarks/baseline_ablation.py [--preprocessed data/preprocessed] [--splits data/splits]
        [--features data/baseline_features.csv] [--params params.yaml]

Run after ``dvc repro`` (or ``dvc exp apply``): it reads the workspace's folds, baseline features and slice store.
Every row is the pooled held-out AUC of :func:`gliomil.baselines.logistic.fit_predict` fitted per fold on the
fold's training and inner-validation patients, as the ``baselines`` stage fits it:

- ``seg_statistics`` and parts of it (the label shares alone; the intensity statistics alone; their SDs alone; the
  nine numbers the tumour-moments stream measures, :mod:`gliomil.model.moments`: each modality's mean and SD, and the
  log size);
- ``true mask, 64 px``: :func:`gliomil.baselines.segmented.mask_statistics` of the slices the model reads, inside
  the preprocessed whole-tumour map (the mask at test time: what resolution costs the statistics);
- ``predicted_mask``: the same inside the mask the per-pixel segmenter predicts (image-only): the baselines stage's
  ``predicted_mask``, the same number as its ``metrics/baselines.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from gliomil import params as P
from gliomil.baselines import segmented
from gliomil.baselines.features import seg_statistics_names
from gliomil.baselines.logistic import fit_predict
from gliomil.data.bags import BagSet
from gliomil.data.folds import FoldSplit


def pooled_auc(table: pd.DataFrame, columns: list[str], splits: list[FoldSplit]) -> float:
    """Pooled held-out AUC of the baselines' regression on ``columns`` of ``table`` (indexed by subject, with
    ``label``), fitted per fold on its training and inner-validation patients."""
    labels, scores = [], []
    for split in splits:
        fit_on = [*split.train, *split.inner_val]
        x = table[columns]
        train_x, test_x = x.loc[fit_on].to_numpy(), x.loc[split.test].to_numpy()
        scores.append(fit_predict(train_x, table.loc[fit_on, "label"].to_numpy(), test_x))
        labels.append(table.loc[split.test, "label"].to_numpy())
    return float(roc_auc_score(np.concatenate(labels), np.concatenate(scores)))


def true_tumour(maps: np.ndarray) -> np.ndarray:
    """bool (S, H, W): the pixels at least half tumour in a subject's maps (S, 3, H, W), as the segmenter is taught;
    where none is, every pixel with some tumour (a small tumour on small slices)."""
    mask = maps[:, 0] >= segmented.MAP_TUMOUR
    return mask if mask.any() else maps[:, 0] > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preprocessed", default="data/preprocessed")
    parser.add_argument("--splits", default="data/splits")
    parser.add_argument("--features", default="data/baseline_features.csv")
    parser.add_argument("--params", default="params.yaml", help="its top-level seed draws the segmenter's pixels")
    args = parser.parse_args()
    seed = P.value(P.load_params(args.params), "seed")
    splits = [FoldSplit.read(path) for path in sorted(Path(args.splits).glob("fold_*.json"))]
    features = pd.read_csv(args.features, dtype={"subject_id": str}).set_index("subject_id")
    names = seg_statistics_names()
    shares = [n for n in names if n.startswith("share_label")]
    intensities = [n for n in names if "_tumour_" in n]
    groups = {
        "seg_statistics (all 24)": names,
        "label shares alone (3)": shares,
        "intensity statistics alone (20)": intensities,
        "their SDs alone (4)": [n for n in intensities if n.endswith("_std")],
        "moments: means, SDs, log size (9)": [
            *(n for n in intensities if n.endswith(("_mean", "_std"))),
            "log_tumour_voxels",
        ],
    }
    print(f"{len(splits)} folds, {sum(len(s.test) for s in splits)} held-out patients")
    for name, columns in groups.items():
        print(f"{name:40s} {pooled_auc(features, columns, splits):.3f}")

    subjects = list(features.index)
    store = BagSet.load(args.preprocessed, subjects, tumour_maps=True)
    true_mask = pd.DataFrame(
        [segmented.mask_statistics(bag, true_tumour(maps)) for bag, maps in zip(store.bags, store.tumour_maps)],
        index=subjects,
        columns=segmented.statistics_names(),
    ).assign(label=store.labels)
    print(f"{'true mask, 64 px (21)':40s} {pooled_auc(true_mask, segmented.statistics_names(), splits):.3f}")
    predicted = segmented.fold_predictions(store, splits, seed)
    auc = roc_auc_score(predicted["label"], predicted["probability"])
    print(f"{'predicted_mask, 64 px (21, image-only)':40s} {auc:.3f}")


if __name__ == "__main__":
    main()
