"""The baselines' model: a standardised logistic regression, fitted per cross-validation fold.

For fold k it is fitted on the fold's training and inner-validation patients (the patients ``train@k``'s model
saw: it has nothing to select, so it uses both) and scores the fold's held-out patients, the same ones
``evaluate@k`` scores. L2 penalty with scikit-learn's default C = 1 and the lbfgs solver: no tuning, so no
second look at the held-out patients. Deterministic: same features, same folds, same probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gliomil.baselines.features import seg_statistics_names, whole_brain_names
from gliomil.data.folds import FoldSplit
from gliomil.errors import GliomilError

#: name -> (feature columns, what it is, in a few words). The order is the report's.
BASELINES = {
    "whole_brain": (whole_brain_names, "brain intensity percentiles, no segmentation"),
    "seg_statistics": (seg_statistics_names, "tumour-mask statistics, the mask also at test time"),
}


def fit_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    """HGG probability (n_test,) of a standardised logistic regression fitted on ``train_x`` (n, F), ``train_y``."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=10_000))
    model.fit(train_x, train_y)
    return model.predict_proba(test_x)[:, 1]


def fold_predictions(features: pd.DataFrame, splits: Sequence[FoldSplit]) -> pd.DataFrame:
    """Held-out predictions of every baseline on every fold: one row per (baseline, fold, patient), columns
    ``baseline, fold, subject_id, label, probability``, patients in the split's test order.

    ``features``: :func:`gliomil.baselines.features.feature_table`'s table, indexed by nothing in particular;
    every subject of the splits must be in it."""
    table = features.set_index("subject_id")
    wanted = [s for split in splits for s in (*split.train, *split.inner_val, *split.test)]
    missing = sorted(set(wanted) - set(table.index))
    if missing:
        raise GliomilError(f"baseline features: subjects {missing[:5]} of the split have no features; re-run them")
    rows = []
    for name, (columns, _) in BASELINES.items():
        x = table[columns()]
        for split in splits:
            fit_on = [*split.train, *split.inner_val]
            probability = fit_predict(
                x.loc[fit_on].to_numpy(), table.loc[fit_on, "label"].to_numpy(), x.loc[split.test].to_numpy()
            )
            rows.append(
                pd.DataFrame(
                    {
                        "baseline": name,
                        "fold": split.fold,
                        "subject_id": split.test,
                        "label": table.loc[split.test, "label"].to_numpy(),
                        "probability": probability.round(6),
                    }
                )
            )
    return pd.concat(rows, ignore_index=True)
