"""Bags of preprocessed slices held in memory, and the random bags drawn from them for training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gliomil.runtime import interrupts
from gliomil.errors import GliomilError
from gliomil.data.slices import load_verified_bag, read_manifest, read_slice_table


@dataclass
class BagSet:
    """The slices of a list of subjects, in that order.

    ``bags[i]`` is float16 (S_i, 4, H, W); ``tumour_fraction[i]`` and ``position[i]`` are
    float (S_i,) per slice (see :mod:`gliomil.data.preprocess`); ``labels`` is int (n,), 1 = HGG.
    """

    subject_ids: list[str]
    labels: np.ndarray
    bags: list[np.ndarray]
    tumour_fraction: list[np.ndarray]
    position: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.subject_ids)

    @classmethod
    def load(
        cls,
        preprocessed_dir: str | Path,
        subject_ids: list[str],
        manifest: pd.DataFrame | None = None,
        slice_table: pd.DataFrame | None = None,
    ) -> BagSet:
        """Read the subjects' slices fully into memory (a fold's training set is a few hundred MB at most).

        Each subject's array is checked against the manifest's SHA-256 before it is used: a corrupted or
        truncated slice file raises :class:`GliomilError` naming the subject and the file
        (:func:`gliomil.data.slices.load_verified_bag`)."""
        manifest = read_manifest(preprocessed_dir) if manifest is None else manifest
        slice_table = read_slice_table(preprocessed_dir) if slice_table is None else slice_table
        by_id = manifest.set_index("subject_id")
        missing = [s for s in subject_ids if s not in by_id.index]
        if missing:
            raise GliomilError(
                f"{preprocessed_dir}: subjects {missing[:5]} of the split are not in the manifest; "
                f"re-run the split stage"
            )
        per_slice = {sid: rows for sid, rows in slice_table.groupby("subject_id", sort=False)}
        bags, tumour, position = [], [], []
        for sid in subject_ids:
            interrupts.check("while loading slices")
            bags.append(load_verified_bag(preprocessed_dir, sid, by_id.loc[sid, "content_sha256"]))
            rows = per_slice[sid].sort_values("slice")
            tumour.append(rows["tumour_fraction"].to_numpy(dtype=np.float64))
            position.append(rows["position"].to_numpy(dtype=np.float64))
        labels = np.array(by_id.loc[subject_ids, "label"], dtype=np.int64)
        return cls(list(subject_ids), labels, bags, tumour, position)

    def without_tumour_slices(self) -> BagSet:
        """The tumour-blind view of these bags (``train.tumour_blind``, the confound audit's control): each bag
        keeps only its slices without a tumour voxel (tumour fraction 0 on the full-resolution plane, before any
        resizing could blur a tumour into a neighbour), so no tumour voxel reaches the model.

        Dropping whole slices rather than blanking the tumour inside them: a blanked hole has the tumour's shape
        and place, which the model could learn from. What remains is the brain away from the tumour, where only
        mass effect and the acquisition can tell the grades apart. Raises :class:`GliomilError` naming the subject
        when a bag has no segmentation (unknown fractions) or no slice without tumour.
        """
        bags, tumour, position = [], [], []
        for sid, bag, fractions, where in zip(self.subject_ids, self.bags, self.tumour_fraction, self.position):
            if np.isnan(fractions).any():
                raise GliomilError(
                    f"train.tumour_blind needs every subject's segmentation; {sid} has none "
                    "(set train.tumour_blind: false)"
                )
            keep = np.flatnonzero(fractions == 0)
            if keep.size == 0:
                raise GliomilError(f"train.tumour_blind: every kept slice of {sid} holds tumour; nothing is left")
            bags.append(bag[keep])
            tumour.append(fractions[keep])
            position.append(where[keep])
        return BagSet(list(self.subject_ids), self.labels.copy(), bags, tumour, position)

    def class_counts(self) -> tuple[int, int]:
        """(n_lgg, n_hgg)."""
        n_hgg = int(self.labels.sum())
        return len(self.labels) - n_hgg, n_hgg


def sample_slices(n_slices: int, bag_size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``bag_size`` distinct slices drawn at random (all of them if fewer), in axial order."""
    if n_slices <= bag_size:
        return np.arange(n_slices)
    return np.sort(rng.choice(n_slices, size=bag_size, replace=False))


def epoch_order(labels: np.ndarray, rng: np.random.Generator, weighted_sampler: bool) -> np.ndarray:
    """The subjects seen in one epoch, as indices into ``labels``.

    Without the sampler: every subject once, shuffled. With it (the pre-audit balancing): as many
    draws with replacement, each class drawn with probability 1/2, like a
    ``WeightedRandomSampler`` with weights 1 / class count.
    """
    n = len(labels)
    if not weighted_sampler:
        return rng.permutation(n)
    counts = np.bincount(labels, minlength=2).astype(float)
    weights = 1.0 / counts[labels]
    return rng.choice(n, size=n, replace=True, p=weights / weights.sum())


def augment_bag(
    slices: np.ndarray,
    rng: np.random.Generator,
    gain_sigma: float = 0.1,
    out: np.ndarray | None = None,
    geometry: bool = False,
) -> np.ndarray:
    """Random left-right flip and per-modality gain of one bag's slices (S, 4, H, W), applied to the whole bag.

    The same transform for every slice of a bag keeps the volume consistent. A gain (multiplying
    the z-scored intensities by ``exp(N(0, gain_sigma))``) mimics scanner-to-scanner contrast
    differences and keeps the background at 0. Axis -2 is the patient's left-right axis (RAS).
    ``geometry`` (``train.augment_geometry``) adds a random in-plane rotation by 0, 90, 180 or 270 degrees and a
    random anterior-posterior flip (square slices only): the eight symmetries of the square, drawn after the
    flip and gain so that ``geometry=False`` draws exactly what it always drew.
    Returns float32 (S, 4, H, W), written into ``out`` when given.
    """
    gains = np.exp(rng.normal(0.0, gain_sigma, size=(1, slices.shape[1], 1, 1))).astype(np.float32)
    if rng.random() < 0.5:
        slices = slices[..., ::-1, :]
    if geometry:
        if slices.shape[-1] != slices.shape[-2]:
            raise ValueError(f"geometric augmentation needs square slices, got {slices.shape[-2:]}")
        slices = np.rot90(slices, k=int(rng.integers(4)), axes=(-2, -1))
        if rng.random() < 0.5:
            slices = slices[..., ::-1]
    return np.multiply(slices, gains, out=out)


def draw_bags(
    bag_set: BagSet,
    indices: np.ndarray,
    bag_size: int,
    rng: np.random.Generator,
    augment: bool,
    geometry: bool = False,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The slices of one training step: a random bag of each chosen subject, concatenated.

    Returns float32 (sum N_b, 4, H, W) and, per bag, the indices of its slices within the subject.
    Each bag is converted (and augmented, :func:`augment_bag` with ``geometry``) straight into its part of the
    output: one pass over the data.
    """
    picks = [sample_slices(len(bag_set.bags[i]), bag_size, rng) for i in indices]
    slices = np.empty((sum(len(p) for p in picks), *bag_set.bags[indices[0]].shape[1:]), dtype=np.float32)
    start = 0
    for i, p in zip(indices, picks):
        part = slices[start : start + len(p)]
        if augment:
            augment_bag(bag_set.bags[i][p], rng, out=part, geometry=geometry)
        else:
            part[...] = bag_set.bags[i][p]
        start += len(p)
    return slices, picks
