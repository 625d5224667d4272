"""Where the tumour-mask regression's lead comes from: the baselines' regression on parts of its features, and on
the statistics of the 64 x 64 slices inside the true and the predicted tumour mask, on the pipeline's folds; then
what more the tumour-moments stream could measure.

    python benchmarks/baseline_ablation.py [--preprocessed data/preprocessed] [--splits data/splits]
        [--features data/baseline_features.csv] [--params params.yaml] [--seed N ...]

Run after ``dvc repro`` (or ``dvc exp apply``): it reads the workspace's folds, baseline features and slice store.
``--seed N`` (repeatable) instead scores each row on the folds the ``split`` stage draws at seed N (its function and
the params' ``split`` settings; the segmenters' pixels drawn with N too): the rows of other seeds' runs, without
training them. ``--seed`` of the run's own seed prints what the run's folds give.
Every row is the pooled held-out AUC of :func:`gliomil.baselines.logistic.fit_predict` fitted per fold on the
fold's training and inner-validation patients, as the ``baselines`` stage fits it:

- ``seg_statistics`` and parts of it (the label shares alone; the intensity statistics alone; their SDs alone; the
  nine numbers the tumour-moments stream measures, :mod:`gliomil.model.moments`: each modality's mean and SD, and the
  log size);
- ``true mask, 64 px``: :func:`gliomil.baselines.segmented.mask_statistics` of the slices the model reads, inside
  the preprocessed whole-tumour map (the mask at test time: what resolution costs the statistics);
- ``predicted_mask``: the same inside the mask the per-pixel segmenter predicts (image-only): the baselines stage's
  ``predicted_mask``, the same number as its ``metrics/baselines.json``;
- ``stream:`` rows, what the tumour-moments stream measures and could (:mod:`gliomil.model.moments`): its nine
  numbers of the 64 x 64 slices inside the true interior it is taught (pixels at least ``INTERIOR`` tumour), and
  with four more numbers of the true maps, the tumour core's and the enhancing tumour's pixels as shares of the
  interior's and the log of their mean areas per slice (what ``seg_statistics``' label shares say); then the same inside
  what per-pixel linear segmenters of the stream's form (:func:`gliomil.baselines.segmented.fit_segmenter` on the
  eight numbers a pixel, fitted per fold on its training and inner-validation patients' maps) predict: the nine
  numbers; the same with the logs of the SDs; with the predicted core's and enhancing tumour's four numbers; with
  the true maps' four (do the regions add to a predicted interior at all, or only to the true one?); the nine
  numbers and the outline of the true interior and of the linear segmenter's (``train.model.tumour_shape``: how far
  the mask's outline is from a disc's, slice by slice).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from moments_ceiling import true_moments  # benchmarks/moments_ceiling.py: the stream's nine numbers, the true maps
from moments_ceiling import true_tumour as true_share
from sklearn.metrics import roc_auc_score

from gliomil import params as P
from gliomil.baselines import segmented
from gliomil.baselines.features import seg_statistics_names
from gliomil.baselines.logistic import fit_predict
from gliomil.data.bags import BagSet
from gliomil.data.folds import FoldSplit
from gliomil.data.slices import read_manifest
from gliomil.data.split import make_splits
from gliomil.model.moments import INTERIOR


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


def region_numbers(interior: np.ndarray, core: np.ndarray, enhancing: np.ndarray) -> np.ndarray:
    """(4,) the core's and the enhancing tumour's pixels as shares of the interior's, then ``log(1 + pixels /
    slices)`` of each: masks (S, H, W) bool of one bag."""
    pixels = max(int(interior.sum()), 1)
    areas = [core.sum() / pixels, enhancing.sum() / pixels]
    return np.array([*areas, np.log1p(core.sum() / len(core)), np.log1p(enhancing.sum() / len(core))])


def predicted_region(segmenter, features: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """bool (S, H, W): the brain pixels whose probability under ``segmenter`` is at least
    ``segmented.THRESHOLD``, from their :func:`gliomil.baselines.segmented.pixel_features` (S, H, W, 8); may be
    empty (a bag without enhancing tumour)."""
    mask = np.zeros(brain.shape, dtype=bool)
    mask[brain] = segmenter.predict_proba(features[brain])[:, 1] >= segmented.THRESHOLD
    return mask


#: The stream rows' pixel targets from a subject's maps (S, 3, H, W) uint8: the interior the stream's segmenter is
#: taught, the tumour core and the enhancing tumour (the last two as ``predicted_mask``'s: at least half).
TARGETS = {
    "interior": lambda maps: maps[:, 0] / 255 >= INTERIOR,
    "core": lambda maps: maps[:, 1] >= segmented.MAP_TUMOUR,
    "enhancing": lambda maps: maps[:, 2] >= segmented.MAP_TUMOUR,
}


def stream_rows(store: BagSet, splits: list[FoldSplit], seed: int) -> dict[str, float]:
    """Pooled held-out AUC of each ``stream:`` row (the module's docstring) on ``splits`` of ``store`` (every
    subject, with its tumour maps); fold k's segmenters fitted on pixels drawn with ``[seed, k]``."""
    index = {subject: i for i, subject in enumerate(store.subject_ids)}
    brains = [segmented.brain_pixels(bag) for bag in store.bags]
    truth = [
        {name: rule(maps) & brain for name, rule in TARGETS.items()} for maps, brain in zip(store.tumour_maps, brains)
    ]
    true_rows = {}
    for i, bag in enumerate(store.bags):
        interior = true_share(bag, store.tumour_maps[i], INTERIOR)  # with moments_ceiling's stand-in for a small one
        ten = true_moments(bag, interior, shape=True).astype(np.float64)  # the nine numbers, then the outline
        nine = ten[:9]
        true_rows[i] = (nine, np.r_[nine, region_numbers(interior, truth[i]["core"], truth[i]["enhancing"])], ten)
    features = [segmented.pixel_features(bag) for bag in store.bags]  # (S, H, W, 8) each; the same in every fold
    scores: dict[str, list[np.ndarray]] = {}
    labels = []
    for split in splits:
        fit_on = [index[s] for s in (*split.train, *split.inner_val)]
        test = [index[s] for s in split.test]
        rng = np.random.default_rng([seed, split.fold])
        draws = {i: segmented.draw_pixels(store.bags[i], rng) for i in fit_on}
        pixels = np.concatenate([features[i].reshape(-1, 8)[draws[i]] for i in fit_on])
        segmenters = {
            name: segmented.fit_segmenter(
                pixels, np.concatenate([truth[i][name].reshape(-1)[draws[i]] for i in fit_on])
            )
            for name in ("interior", "core", "enhancing")
        }
        tables: dict[str, dict[int, np.ndarray]] = {}
        for i in (*fit_on, *test):
            bag = store.bags[i]
            interior = segmented.segment(segmenters["interior"], bag, features[i])
            core, enhancing = (
                predicted_region(segmenters[name], features[i], brains[i]) for name in ("core", "enhancing")
            )
            ten = true_moments(bag, interior, shape=True).astype(np.float64)
            nine = ten[:9]
            logged = nine.copy()
            logged[4:8] = np.log(logged[4:8])
            rows = {
                "stream: true interior (9)": true_rows[i][0],
                "stream: + true core and enhancing (13)": true_rows[i][1],
                "stream: linear segmenter's interior (9)": nine,
                "stream: the same, log SDs (9)": logged,
                "stream: + its core and enhancing (13)": np.r_[nine, region_numbers(interior, core, enhancing)],
                "stream: its interior, true regions (13)": np.r_[nine, true_rows[i][1][9:]],
                "stream: true interior, outline (10)": true_rows[i][2],
                "stream: its interior, outline (10)": ten,
            }
            for name, numbers in rows.items():
                tables.setdefault(name, {})[i] = numbers
        for name, table in tables.items():
            train_x, test_x = np.stack([table[i] for i in fit_on]), np.stack([table[i] for i in test])
            scores.setdefault(name, []).append(fit_predict(train_x, store.labels[fit_on], test_x))
        labels.append(store.labels[test])
    truth_labels = np.concatenate(labels)
    return {name: float(roc_auc_score(truth_labels, np.concatenate(parts))) for name, parts in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preprocessed", default="data/preprocessed")
    parser.add_argument("--splits", default="data/splits")
    parser.add_argument("--features", default="data/baseline_features.csv")
    parser.add_argument("--params", default="params.yaml", help="its top-level seed draws the segmenter's pixels")
    parser.add_argument("--seed", type=int, action="append", default=[], help="the split stage's folds at this seed")
    args = parser.parse_args()
    params = P.load_params(args.params)
    features = pd.read_csv(args.features, dtype={"subject_id": str}).set_index("subject_id")
    store = BagSet.load(args.preprocessed, list(features.index), tumour_maps=True)
    if not args.seed:
        splits = [FoldSplit.read(path) for path in sorted(Path(args.splits).glob("fold_*.json"))]
        report(features, store, splits, P.value(params, "seed"))
    settings, manifest = P.section(params, "split"), read_manifest(args.preprocessed)
    for seed in args.seed:
        splits = make_splits(
            manifest, len(P.value(params, "folds")), settings["inner_val_fraction"], seed, settings["group_by"]
        )
        print(f"seed {seed}")
        report(features, store, splits, seed)


def report(features: pd.DataFrame, store: BagSet, splits: list[FoldSplit], seed: int) -> None:
    """Print every row's pooled held-out AUC on ``splits``."""
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

    true_mask = pd.DataFrame(
        [segmented.mask_statistics(bag, true_tumour(maps)) for bag, maps in zip(store.bags, store.tumour_maps)],
        index=list(store.subject_ids),
        columns=segmented.statistics_names(),
    ).assign(label=store.labels)
    print(f"{'true mask, 64 px (21)':40s} {pooled_auc(true_mask, segmented.statistics_names(), splits):.3f}")
    predicted = segmented.fold_predictions(store, splits, seed)
    auc = roc_auc_score(predicted["label"], predicted["probability"])
    print(f"{'predicted_mask, 64 px (21, image-only)':40s} {auc:.3f}")
    for name, auc in stream_rows(store, splits, seed).items():
        print(f"{name:40s} {auc:.3f}")


if __name__ == "__main__":
    main()
