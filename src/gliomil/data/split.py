"""Patient-level cross-validation splits.

Every subject lands in exactly one held-out (test) fold; inside each fold's training part a
stratified inner-validation set is held back for model selection and threshold choice, so the
held-out fold is never used for either. Subjects that are the same patient (same
``patient_id``) always stay on the same side of every split.

With ``group_by="site"`` (``split.group_by``) the held-out folds are leave-site-out: each site's patients are held
out together, so a fold's model is always scored on sites it never trained on, and grades are stratified as far as
the sites allow. A cohort whose sites cannot give every held-out fold both grades, or whose seeded assignment of
whole sites leaves a held-out fold one grade, is refused in one line.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from gliomil.data.folds import FoldSplit
from gliomil.errors import GliomilError
from gliomil.vocabulary import GRADES, SPLIT_GROUPS, UNKNOWN_SITE


def _per_grade(labels: np.ndarray, groups: np.ndarray) -> dict[str, int]:
    """The number of distinct ``groups`` (patients, sites) among each grade's subjects."""
    return {grade: len(np.unique(groups[labels == label])) for label, grade in enumerate(GRADES)}


def _check_enough_patients(labels: np.ndarray, groups: np.ndarray, n_splits: int, where: str) -> None:
    for grade, n_patients in _per_grade(labels, groups).items():
        if n_patients < n_splits:
            raise GliomilError(
                f"{where}: {grade} has {n_patients} patients, fewer than the {n_splits} "
                f"parts needed; use fewer folds, a smaller split.inner_val_fraction or more data"
            )


def _stratified_group_parts(labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """Part index (0..n_splits-1) of every subject: stratified by label, grouped by patient, seeded."""
    part = np.empty(len(labels), dtype=int)
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for index, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        part[held_out] = index
    return part


def _site_groups(manifest: pd.DataFrame, labels: np.ndarray, n_folds: int) -> np.ndarray:
    """The site of every subject, for leave-site-out folds; GliomilError (one line) when a site is unknown, a
    patient spans sites, or a grade comes from fewer sites than there are folds."""
    sites = manifest["site"].fillna(UNKNOWN_SITE).to_numpy(dtype=str)
    unknown = manifest["subject_id"][sites == UNKNOWN_SITE].tolist()
    if unknown:
        raise GliomilError(
            f"split.group_by site needs every subject's site; {len(unknown)} are unknown (first: {unknown[0]}); "
            "name them in a site column of labels.csv or set split.group_by: none"
        )
    per_patient = manifest.assign(site=sites).groupby("patient_id")["site"].nunique()
    if (per_patient > 1).any():
        raise GliomilError(f"split.group_by site: patient {per_patient[per_patient > 1].index[0]} spans several sites")
    for grade, n_sites in _per_grade(labels, sites).items():
        if n_sites < n_folds:
            raise GliomilError(
                f"split.group_by site: the {grade} patients come from {n_sites} site(s), fewer than the {n_folds} "
                f"folds that each need both grades held out; use fewer folds or split.group_by: none"
            )
    return sites


def make_splits(
    manifest: pd.DataFrame, n_folds: int, inner_val_fraction: float, seed: int, group_by: str = "none"
) -> list[FoldSplit]:
    """Split the subjects of ``manifest`` (columns subject_id, patient_id, label; ``site`` for
    ``group_by="site"``) into ``n_folds`` folds.

    The held-out folds are grouped by patient (``group_by="none"``) or by site (leave-site-out, see the module
    docstring). The inner-validation set of each fold is one part of a stratified, patient-grouped split of that
    fold's training subjects into ``round(1 / inner_val_fraction)`` parts (at least 2), so its realised share
    is close to ``inner_val_fraction``. Ids are listed in manifest order.
    """
    if group_by not in SPLIT_GROUPS:
        raise ValueError(f"group_by must be one of {SPLIT_GROUPS}, got {group_by!r}")
    ids = manifest["subject_id"].to_numpy(dtype=str)
    labels = manifest["label"].to_numpy(dtype=int)
    groups = manifest["patient_id"].to_numpy(dtype=str)
    _check_enough_patients(labels, groups, n_folds, f"split into {n_folds} folds")
    if group_by == "site":
        sites = _site_groups(manifest, labels, n_folds)
        test_fold = _stratified_group_parts(labels, sites, n_folds, seed)
        for fold in range(n_folds):
            held_out = set(labels[test_fold == fold].tolist())
            if len(held_out) < 2:
                # StratifiedGroupKFold assigns whole sites greedily from the seed: another seed may succeed
                holds = f"with {GRADES[held_out.pop()]} patients only" if held_out else "empty"
                raise GliomilError(
                    f"split.group_by site: seed {seed}'s assignment of whole sites leaves held-out fold {fold} "
                    f"{holds}; try another seed, fewer folds or split.group_by: none"
                )
    else:
        test_fold = _stratified_group_parts(labels, groups, n_folds, seed)

    n_inner = max(2, round(1.0 / inner_val_fraction))
    splits = []
    for fold in range(n_folds):
        train_idx = np.flatnonzero(test_fold != fold)
        where = f"fold {fold}: inner validation split into {n_inner} parts"
        _check_enough_patients(labels[train_idx], groups[train_idx], n_inner, where)
        inner_part = _stratified_group_parts(labels[train_idx], groups[train_idx], n_inner, seed + 1 + fold)
        inner_val = train_idx[inner_part == 0]
        fit = train_idx[inner_part != 0]
        splits.append(FoldSplit(fold, ids[fit].tolist(), ids[inner_val].tolist(), ids[test_fold == fold].tolist()))
    return splits


def class_counts(splits: list[FoldSplit], manifest: pd.DataFrame) -> dict:
    """Per fold, the number of HGG and LGG subjects in train, inner_val and test."""
    grade_by_id = dict(zip(manifest["subject_id"].astype(str), manifest["grade"]))
    counts = {}
    for split in splits:
        fold_counts = {}
        for role in ("train", "inner_val", "test"):
            grades = [grade_by_id[s] for s in getattr(split, role)]
            for grade in sorted(GRADES):  # alphabetical: the key order metrics files have always had
                fold_counts[f"{role}_{grade.lower()}"] = grades.count(grade)
        counts[f"fold_{split.fold}"] = fold_counts
    return counts
