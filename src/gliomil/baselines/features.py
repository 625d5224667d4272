"""Hand-made features of one case, from its volumes as :func:`gliomil.data.brats.load_volumes` returns them.

Two sets, one per baseline:

- :func:`seg_statistics` uses the tumour segmentation, at training *and* at test time: an upper reference of what
  the mask gives, not a competitor of an image-only model;
- :func:`whole_brain` uses no segmentation and no localisation: intensity percentiles of the whole brain, what a
  model gets from the images' histograms alone.

Intensities are z-scored inside the brain (any modality non-zero, :func:`gliomil.data.preprocess.brain_mask`'s
rule, the same function), per modality, so a scanner's gain does not enter either baseline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gliomil.data.brats import SUFFIX_KEYS, load_volumes
from gliomil.data.preprocess import brain_mask
from gliomil.errors import InputError
from gliomil.runtime.workers import map_in_workers
from gliomil.vocabulary import MODALITIES, SEGMENTATION

#: Brain percentiles of :func:`whole_brain`, per modality.
PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9)
#: Share of the brain above these many standard deviations, per modality.
TAILS = (2.0, 3.0)


def _zscored(image: np.ndarray, brain: np.ndarray, where: np.ndarray) -> np.ndarray:
    inside = image[brain].astype(np.float64)
    return (image[where].astype(np.float64) - inside.mean()) / inside.std()


def seg_statistics_names() -> list[str]:
    names = [f"{m}_tumour_{s}" for m in MODALITIES for s in ("mean", "std", "p10", "p50", "p90")]
    return names + ["share_label_1", "share_label_2", "share_label_4", "log_tumour_voxels"]


def seg_statistics(images: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Features (24,) of one case: per modality (images (4, X, Y, Z)) the mean, standard deviation and 10/50/90th
    percentiles of the brain-z-scored intensities inside the tumour (seg > 0); then the shares of labels 1, 2 and
    4 in the tumour and its log volume in voxels. Raises ValueError when the segmentation holds no tumour."""
    brain, tumour = brain_mask(images), seg > 0
    n = int(tumour.sum())
    if n == 0:
        raise ValueError("the segmentation holds no tumour voxel")
    features = []
    for image in images:
        z = _zscored(image, brain, tumour)
        features += [z.mean(), z.std(), *np.percentile(z, [10, 50, 90])]
    features += [(seg == label).sum() / n for label in (1, 2, 4)]
    features.append(np.log(n))
    return np.array(features, dtype=np.float64)


def whole_brain_names() -> list[str]:
    names = [f"{m}_p{p:g}" for m in MODALITIES for p in PERCENTILES]
    names += [f"{m}_above_{t:g}sd" for m in MODALITIES for t in TAILS]
    return names + ["log_brain_voxels"]


def whole_brain(images: np.ndarray) -> np.ndarray:
    """Features (49,) of one case from its images alone (4, X, Y, Z): per modality the brain-z-scored
    intensity percentiles :data:`PERCENTILES`, then per modality the shares of the brain above :data:`TAILS`
    standard deviations, then the log brain volume in voxels."""
    brain = brain_mask(images)
    z = [_zscored(image, brain, brain) for image in images]
    features = [p for values in z for p in np.percentile(values, PERCENTILES)]
    features += [float((values > tail).mean()) for values in z for tail in TAILS]
    features.append(np.log(int(brain.sum())))
    return np.array(features, dtype=np.float64)


# -- a cohort's table ----------------------------------------------------------------------------------------------


def _case_features(job: tuple[str, dict]) -> dict:
    """Worker: one case's features as a row (load errors are raised as InputError, one line naming the file)."""
    subject_id, files = job
    volumes = load_volumes(subject_id, files)
    row = {"subject_id": subject_id}
    row.update(zip(whole_brain_names(), whole_brain(volumes.images)))
    try:
        row.update(zip(seg_statistics_names(), seg_statistics(volumes.images, volumes.seg)))
    except ValueError as exc:
        raise InputError(subject_id, files[SEGMENTATION], str(exc)) from None
    return row


def feature_table(manifest: pd.DataFrame, workers: int = 1) -> pd.DataFrame:
    """Both feature sets of every subject of a preprocess manifest (its ``source_files``, in
    :data:`gliomil.data.brats.SUFFIX_KEYS` order), one row per subject in manifest order, with ``label``."""
    jobs = [
        (row.subject_id, dict(zip(SUFFIX_KEYS, row.source_files.split(";"))))
        for row in manifest.itertuples(index=False)
    ]
    rows = list(map_in_workers(_case_features, jobs, workers, progress="baseline features"))
    table = pd.DataFrame(rows)
    table.insert(1, "label", manifest["label"].to_numpy())
    return table
