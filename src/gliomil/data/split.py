"""Patient-level cross-validation splits.

Every subject lands in exactly one held-out (test) fold; inside each fold's training part a
stratified inner-validation set is held back for model selection and threshold choice, so the
held-out fold is never used for either. Subjects that are the same patient (same
``patient_id``) always stay on the same side of every split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from gliomil.errors import GliomilError
from gliomil.vocabulary import GRADES


@dataclass(frozen=True)
class FoldSplit:
    """Subject ids of one fold: ``train`` fits the model, ``inner_val`` selects it, ``test`` is held out."""

    fold: int
    train: list[str]
    inner_val: list[str]
    test: list[str]

    def to_json(self) -> str:
        return (
            json.dumps(
                {"fold": self.fold, "train": self.train, "inner_val": self.inner_val, "test": self.test}, indent=1
            )
            + "\n"
        )

    @classmethod
    def read(cls, path: str | Path) -> FoldSplit:
        data = json.loads(Path(path).read_text())
        return cls(int(data["fold"]), list(data["train"]), list(data["inner_val"]), list(data["test"]))


def _check_enough_patients(labels: np.ndarray, groups: np.ndarray, n_splits: int, where: str) -> None:
    for label, grade in enumerate(GRADES):
        n_patients = len(np.unique(groups[labels == label]))
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


def make_splits(manifest: pd.DataFrame, n_folds: int, inner_val_fraction: float, seed: int) -> list[FoldSplit]:
    """Split the subjects of ``manifest`` (columns subject_id, patient_id, label) into ``n_folds`` folds.

    The inner-validation set of each fold is one part of a stratified, grouped split of that fold's
    training subjects into ``round(1 / inner_val_fraction)`` parts (at least 2), so its realised share
    is close to ``inner_val_fraction``. Ids are listed in manifest order.
    """
    ids = manifest["subject_id"].to_numpy(dtype=str)
    labels = manifest["label"].to_numpy(dtype=int)
    groups = manifest["patient_id"].to_numpy(dtype=str)
    _check_enough_patients(labels, groups, n_folds, f"split into {n_folds} folds")
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
