"""The image-only two-stage baseline ``predicted_mask``: segment, then measure.

Per fold, a per-pixel logistic regression learns the whole tumour from the fold's training patients' tumour maps
(:mod:`gliomil.data.preprocess`'s, on the slices the model reads: 64 x 64, clipped and z-scored inside the brain).
Each pixel is described by its four intensities and their means over its ``NEIGHBOURHOOD`` x ``NEIGHBOURHOOD``
in-plane neighbourhood. The regression then segments every patient of the fold from the images alone, and the
statistics of the four modalities inside that predicted mask (mean, SD, 10/50/90th percentiles, log size) feed the
baselines' logistic regression (:func:`gliomil.baselines.logistic.fit_predict`), fitted on the training patients
and scored on the held-out ones.

The masks teach the segmenter only: a held-out patient's score depends on its images alone, as ``evaluate``'s
does, so this is a competitor of the image-only model, where ``seg_statistics`` (the true mask at test time too)
is an upper reference. It is what "find the tumour, then describe it" gives without any deep learning.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from gliomil.baselines.logistic import fit_predict
from gliomil.data.bags import BagSet
from gliomil.data.folds import FoldSplit
from gliomil.errors import GliomilError
from gliomil.vocabulary import MODALITIES

NAME = "predicted_mask"
USES = "tumour statistics inside a mask segmented from the images (no segmentation at test time)"

#: In-plane side (pixels) of the neighbourhood whose mean intensities each pixel also carries.
NEIGHBOURHOOD = 5
#: Brain pixels per training patient the segmenter is fitted on (drawn at random, fixed seed per fold).
PIXEL_SAMPLES = 4000
#: A pixel is tumour where the segmenter's probability is at least this; where no pixel of a patient reaches it, the
#: ``MIN_PIXELS`` most probable brain pixels stand in, so that every patient has statistics.
THRESHOLD = 0.5
MIN_PIXELS = 10
#: A tumour map's pixel counts as tumour (the segmenter's target) when at least half of it is tumour.
MAP_TUMOUR = 128


def statistics_names() -> list[str]:
    """Names of :func:`mask_statistics`' values, in order."""
    return [f"{m}_mask_{s}" for m in MODALITIES for s in ("mean", "std", "p10", "p50", "p90")] + ["log_mask_pixels"]


def pixel_features(slices: np.ndarray) -> np.ndarray:
    """Slices (S, 4, H, W) -> float32 (S, H, W, 8): each pixel's four intensities, then their means over the
    ``NEIGHBOURHOOD`` x ``NEIGHBOURHOOD`` in-plane square around it (outside the slice counts as 0, the background)."""
    values = np.asarray(slices, dtype=np.float32)
    local = ndimage.uniform_filter(values, size=(1, 1, NEIGHBOURHOOD, NEIGHBOURHOOD), mode="constant", cval=0.0)
    return np.concatenate([values, local], axis=1).transpose(0, 2, 3, 1)


def brain_pixels(slices: np.ndarray) -> np.ndarray:
    """bool (S, H, W): pixels where any modality is non-zero (preprocess leaves the background exactly 0)."""
    return np.any(np.asarray(slices) != 0, axis=1)


def draw_pixels(bag: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted flat indices into (S, H, W) of up to ``PIXEL_SAMPLES`` brain pixels of ``bag`` (S, 4, H, W), drawn
    without replacement: the pixels of one training patient that its fold's segmenter is fitted on."""
    inside = np.flatnonzero(brain_pixels(bag))
    return np.sort(rng.choice(inside, size=min(PIXEL_SAMPLES, len(inside)), replace=False))


def fit_segmenter(features: np.ndarray, is_tumour: np.ndarray) -> Pipeline:
    """A standardised logistic regression from pixels' :func:`pixel_features` (n, 8) to "whole tumour" (n,) bool."""
    if is_tumour.all() or not is_tumour.any():
        raise GliomilError("baseline predicted_mask: the training patients' tumour maps hold only one class of pixel")
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=10_000)).fit(features, is_tumour)


def segment(segmenter: Pipeline, slices: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
    """bool (S, H, W): the brain pixels the segmenter gives a tumour probability >= ``THRESHOLD``, or its
    ``MIN_PIXELS`` most probable brain pixels when fewer reach it. ``features``: the slices' :func:`pixel_features`
    when already computed."""
    brain = brain_pixels(slices)
    features = pixel_features(slices) if features is None else features
    probability = np.zeros(brain.shape)
    probability[brain] = segmenter.predict_proba(features[brain])[:, 1]
    mask = probability >= THRESHOLD
    if mask.sum() < MIN_PIXELS:
        top = np.argsort(probability, axis=None, kind="stable")[-MIN_PIXELS:]
        mask = np.zeros(brain.shape, dtype=bool)
        mask.flat[top] = True
        mask &= brain
    return mask


def mask_statistics(slices: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """float64 (21,) in :func:`statistics_names`' order: per modality the mean, SD and 10/50/90th percentiles of the
    slices (S, 4, H, W) inside ``mask`` (S, H, W), then the log of its pixel count. Raises ValueError on an empty
    mask."""
    if not mask.any():
        raise ValueError("mask_statistics: the mask is empty")
    values = []
    for channel in range(len(MODALITIES)):
        inside = np.asarray(slices[:, channel], dtype=np.float64)[mask]
        values += [inside.mean(), inside.std(), *np.percentile(inside, [10, 50, 90])]
    return np.array([*values, np.log(mask.sum())])


def fold_predictions(bag_set: BagSet, splits: Sequence[FoldSplit], seed: int) -> pd.DataFrame:
    """Held-out predictions of ``predicted_mask`` on every fold, rows as
    :func:`gliomil.baselines.logistic.fold_predictions`' (``baseline, fold, subject_id, label, probability``).

    ``bag_set``: every subject of the splits, loaded with its tumour maps. Fold k's segmenter is fitted on the
    maps of its training and inner-validation patients (those with a segmentation; the draw of pixels seeded by
    ``seed`` and k); no held-out patient's map is read. Raises :class:`GliomilError` when none of a fold's
    training patients has a segmentation."""
    index = {subject: i for i, subject in enumerate(bag_set.subject_ids)}
    missing = sorted({s for split in splits for s in (*split.train, *split.inner_val, *split.test)} - set(index))
    if missing:
        raise GliomilError(f"baseline predicted_mask: subjects {missing[:5]} of the split are not in the slice store")
    # Each fold's draw of training pixels first (it needs only the brain), so that each subject's pixel features
    # are computed once for all the segmenters' training pixels, and once more for all its masks.
    folds = []  # per split: the patients it fits on, its held-out ones, and its draws {subject: pixel indices}
    for split in splits:
        fit_on = [index[s] for s in (*split.train, *split.inner_val)]
        with_map = [i for i in fit_on if bag_set.tumour_maps is not None and bag_set.tumour_maps[i] is not None]
        if not with_map:
            raise GliomilError(
                f"baseline predicted_mask: none of fold {split.fold}'s training patients has a segmentation "
                f"(e.g. {bag_set.subject_ids[fit_on[0]]}); it learns the tumour from them"
            )
        rng = np.random.default_rng([seed, split.fold])
        folds.append((fit_on, [index[s] for s in split.test], {i: draw_pixels(bag_set.bags[i], rng) for i in with_map}))
    samples: list[dict[int, tuple[np.ndarray, np.ndarray]]] = [{} for _ in folds]
    for i in sorted({i for _, _, draws in folds for i in draws}):
        features = pixel_features(bag_set.bags[i]).reshape(-1, 8)
        is_tumour = bag_set.tumour_maps[i][:, 0].reshape(-1) >= MAP_TUMOUR
        for (_, _, draws), drawn in zip(folds, samples):
            if i in draws:
                drawn[i] = features[draws[i]], is_tumour[draws[i]]
    segmenters = []
    for (_, _, draws), drawn in zip(folds, samples):  # the pixels in the order of the fold's patients
        segmenters.append(fit_segmenter(*(np.concatenate(part) for part in zip(*(drawn[i] for i in draws)))))
    statistics: list[dict[int, np.ndarray]] = [{} for _ in folds]
    for i in sorted({i for fit_on, test, _ in folds for i in (*fit_on, *test)}):
        features = pixel_features(bag_set.bags[i])
        for (fit_on, test, _), segmenter, table in zip(folds, segmenters, statistics):
            if i in fit_on or i in test:
                table[i] = mask_statistics(bag_set.bags[i], segment(segmenter, bag_set.bags[i], features))
    rows = []
    for split, (fit_on, test, _), table in zip(splits, folds, statistics):
        probability = fit_predict(
            np.stack([table[i] for i in fit_on]), bag_set.labels[fit_on], np.stack([table[i] for i in test])
        )
        rows.append(
            pd.DataFrame(
                {
                    "baseline": NAME,
                    "fold": split.fold,
                    "subject_id": split.test,
                    "label": bag_set.labels[test],
                    "probability": probability.round(6),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)
