"""How hard the built-in cohort's grading task is, measured on its files without any deep learning.

    python benchmarks/cohort_baseline.py [--data data/synthetic] [--repeats 5]

For every subject (loaded as the pipeline loads it: :func:`gliomil.data.brats.load_subject`, canonical RAS):

- features of the segmentation-based baseline (:func:`tumour_features`, the pipeline's ``seg_statistics``): per
  modality the mean, standard deviation and 10/50/90th percentiles of the brain-z-scored intensities inside the
  tumour (seg > 0), the shares of labels 1, 2 and 4 in the tumour and its log volume. A standardised logistic
  regression on them,
  cross-validated with stratified 5-fold splits (``--repeats`` shuffles), gives the baseline AUC; the
  built-in cohort is designed to put it between 0.85 and 0.95 (learnable, not trivial).
- the share of the brain's axial slices that hold tumour (the MIL character: a bag is mostly normal slices).

``tests/test_synthetic.py`` checks the same band on a smaller cohort generated in memory with the same features.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def tumour_features(images: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Features (24,) of one subject: the baselines stage's segmentation statistics
    (:func:`gliomil.baselines.features.seg_statistics`, the one implementation)."""
    from gliomil.baselines.features import seg_statistics

    return seg_statistics(images, seg)


def baseline_auc(features: np.ndarray, is_hgg: np.ndarray, repeats: int = 5) -> list[float]:
    """Cross-validated AUC (stratified 5-fold, one per shuffle seed 0..repeats-1) of a standardised logistic
    regression of the grade on ``features`` (N, F)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    aucs = []
    for seed in range(repeats):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
        scores = cross_val_predict(model, features, is_hgg, cv=folds, method="predict_proba")[:, 1]
        aucs.append(float(roc_auc_score(is_hgg, scores)))
    return aucs


def tumour_slice_share(images: np.ndarray, seg: np.ndarray) -> float:
    """Share of the axial slices holding brain that also hold tumour."""
    brain_z = np.flatnonzero((images[0] > 0).any(axis=(0, 1)))
    tumour_z = np.flatnonzero((seg > 0).any(axis=(0, 1)))
    return len(tumour_z) / len(brain_z)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from gliomil.data.brats import find_subjects, load_subject

    features, is_hgg, shares = [], [], []
    subjects = find_subjects(args.data)
    for subject in subjects:
        volumes = load_subject(subject)
        features.append(tumour_features(volumes.images, volumes.seg))
        is_hgg.append(subject.grade == "HGG")
        shares.append(tumour_slice_share(volumes.images, volumes.seg))
    aucs = baseline_auc(np.array(features), np.array(is_hgg), args.repeats)
    shares = np.array(shares)
    print(f"{args.data}: {len(subjects)} subjects ({sum(is_hgg)} HGG)")
    print(
        f"segmentation-based logistic baseline, 5-fold CV AUC over {args.repeats} shuffles: "
        f"mean {np.mean(aucs):.3f} (min {min(aucs):.3f}, max {max(aucs):.3f})"
    )
    print(
        f"axial slices with tumour, share of the brain's slices: mean {shares.mean():.3f}, "
        f"min {shares.min():.3f}, max {shares.max():.3f}"
    )
    return {"auc": aucs, "tumour_slice_share": shares.tolist()}


if __name__ == "__main__":
    main()
