"""Bags of preprocessed slices held in memory, and the random bags drawn from them for training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from gliomil.runtime import interrupts
from gliomil.errors import GliomilError
from gliomil.data.slices import load_verified_bag, load_verified_tumour_map, read_manifest, read_slice_table
from gliomil.vocabulary import TUMOUR_REGIONS


@dataclass
class BagSet:
    """The slices of a list of subjects, in that order.

    ``bags[i]`` is float16 (S_i, 4, H, W); ``tumour_fraction[i]`` and ``position[i]`` are
    float (S_i,) per slice (see :mod:`gliomil.data.preprocess`); ``labels`` is int (n,), 1 = HGG.
    ``tumour_maps``, only when asked for (training-only supervision): ``tumour_maps[i]`` uint8 (S_i, 3, H, W),
    255 x each pixel's share of each tumour region (:data:`gliomil.vocabulary.TUMOUR_REGIONS`), or None for a
    subject without a segmentation.
    """

    subject_ids: list[str]
    labels: np.ndarray
    bags: list[np.ndarray]
    tumour_fraction: list[np.ndarray]
    position: list[np.ndarray]
    tumour_maps: list[np.ndarray | None] | None = None

    def __len__(self) -> int:
        return len(self.subject_ids)

    @classmethod
    def load(
        cls,
        preprocessed_dir: str | Path,
        subject_ids: list[str],
        manifest: pd.DataFrame | None = None,
        slice_table: pd.DataFrame | None = None,
        tumour_maps: bool = False,
    ) -> BagSet:
        """Read the subjects' slices fully into memory (a fold's training set is a few hundred MB at most), and
        with ``tumour_maps`` their tumour maps too.

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
        maps = None
        if tumour_maps:
            if "tumour_map_sha256" not in by_id.columns:
                raise GliomilError(f"{preprocessed_dir}: written before tumour maps existed; re-run the preprocess stage")
            maps = []
            for sid in subject_ids:
                sha = by_id.loc[sid, "tumour_map_sha256"]
                maps.append(None if pd.isna(sha) or not sha else load_verified_tumour_map(preprocessed_dir, sid, sha))
        return cls(list(subject_ids), labels, bags, tumour, position, maps)

    def without_tumour_slices(self) -> BagSet:
        """The tumour-blind view of these bags (``train.tumour_blind``, the confound audit's control): each bag
        keeps only its slices without a tumour voxel (tumour fraction 0 on the full-resolution plane, before any
        resizing could blur a tumour into a neighbour), so no tumour voxel reaches the model.

        Dropping whole slices rather than blanking the tumour inside them: a blanked hole has the tumour's shape
        and place, which the model could learn from. What remains is the brain away from the tumour, where only
        mass effect and the acquisition can tell the grades apart. Raises :class:`GliomilError` naming the subject
        when a bag has no segmentation (unknown fractions) or no slice without tumour.
        """
        bags, tumour, position, maps = [], [], [], []
        tumour_maps = self.tumour_maps or [None] * len(self)
        for sid, bag, fractions, where, tumour_map in zip(
            self.subject_ids, self.bags, self.tumour_fraction, self.position, tumour_maps
        ):
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
            maps.append(None if tumour_map is None else tumour_map[keep])
        return BagSet(
            list(self.subject_ids), self.labels.copy(), bags, tumour, position, None if self.tumour_maps is None else maps
        )

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


class BagTransform(NamedTuple):
    """One bag's random augmentation (:func:`draw_transform`): applied alike to every slice of the bag and to its
    tumour map."""

    gains: np.ndarray  # float32 (1, C, 1, 1): exp(N(0, gain_sigma)) per modality
    flip_left_right: bool
    quarter_turns: int  # in-plane rotation by quarter_turns x 90 degrees (0 without geometry)
    flip_anterior_posterior: bool

    def move(self, planes: np.ndarray) -> np.ndarray:
        """The spatial part on (..., H, W) planes (slices or a tumour map): a view, no copy."""
        if self.flip_left_right:
            planes = planes[..., ::-1, :]
        if self.quarter_turns:
            planes = np.rot90(planes, k=self.quarter_turns, axes=(-2, -1))
        if self.flip_anterior_posterior:
            planes = planes[..., ::-1]
        return planes

    def apply(self, slices: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The whole transform on slices (S, C, H, W): float32, written into ``out`` when given."""
        return np.multiply(self.move(slices), self.gains, out=out)


def draw_transform(rng: np.random.Generator, shape: tuple[int, ...], gain_sigma: float = 0.1, geometry: bool = False):
    """A random left-right flip and per-modality gain of a bag of slices of ``shape`` (S, C, H, W), and with
    ``geometry`` (``train.augment_geometry``, square slices only) a random in-plane rotation by 0, 90, 180 or 270
    degrees and a random anterior-posterior flip: the eight symmetries of the square, drawn after the flip and gain
    so that ``geometry=False`` draws exactly what it always drew. Returns a :class:`BagTransform`."""
    if geometry and shape[-1] != shape[-2]:
        raise ValueError(f"geometric augmentation needs square slices, got {tuple(shape[-2:])}")
    gains = np.exp(rng.normal(0.0, gain_sigma, size=(1, shape[-3], 1, 1))).astype(np.float32)
    flip_left_right = bool(rng.random() < 0.5)
    turns, flip_anterior_posterior = 0, False
    if geometry:
        turns = int(rng.integers(4))
        flip_anterior_posterior = bool(rng.random() < 0.5)
    return BagTransform(gains, flip_left_right, turns, flip_anterior_posterior)


def augment_bag(
    slices: np.ndarray,
    rng: np.random.Generator,
    gain_sigma: float = 0.1,
    out: np.ndarray | None = None,
    geometry: bool = False,
) -> np.ndarray:
    """Random left-right flip and per-modality gain of one bag's slices (S, 4, H, W), applied to the whole bag
    (:func:`draw_transform`).

    The same transform for every slice of a bag keeps the volume consistent. A gain (multiplying
    the z-scored intensities by ``exp(N(0, gain_sigma))``) mimics scanner-to-scanner contrast
    differences and keeps the background at 0. Axis -2 is the patient's left-right axis (RAS).
    ``geometry`` needs square slices. Returns float32 (S, 4, H, W), written into ``out`` when given.
    """
    return draw_transform(rng, slices.shape, gain_sigma, geometry).apply(slices, out)


def neighbour_indices(centres: np.ndarray, n_slices: int, context: int) -> np.ndarray:
    """Indices (n, 2 * context + 1) of each centre slice's neighbours within a bag of ``n_slices``, from ``context``
    slices below to ``context`` above, the centre in the middle; past either end of the bag the end slice repeats.

    The 2.5D input of ``train.model.context_slices``: a bag's slices are stored in axial order
    (:mod:`gliomil.data.preprocess`), so slice i's neighbours are i - k .. i + k; stacked as channels, they let a 2D
    encoder see a lesion's extent across slices at the cost of its first convolution only.
    """
    if context < 0:
        raise ValueError(f"context must be >= 0, got {context}")
    offsets = np.arange(-context, context + 1)
    return np.clip(np.asarray(centres, dtype=np.int64)[:, None] + offsets, 0, n_slices - 1)


def with_neighbours(bag: np.ndarray, context: int) -> np.ndarray:
    """A whole bag (S, C, H, W) in axial order -> (S, (2 context + 1) C, H, W): each slice with its ``context``
    neighbours on either side as channels, neighbour by neighbour from below (:func:`neighbour_indices`); the bag
    itself when ``context`` is 0."""
    if context == 0:
        return bag
    picks = neighbour_indices(np.arange(len(bag)), len(bag), context).ravel()
    return bag[picks].reshape(len(bag), -1, *bag.shape[2:])


class DrawnBags(NamedTuple):
    """The bags of one training step (:func:`draw_bags`)."""

    slices: np.ndarray  # float32 (sum N_b, 4 (2 context + 1), H, W): each slice and its neighbours
    picks: list[np.ndarray]  # per bag, the indices of its slices within the subject
    # float32 (sum N_b, M, H, W) in [0, 1], the first M tumour regions' maps, moved as the slices; None without maps
    tumour_maps: np.ndarray | None


def draw_bags(
    bag_set: BagSet,
    indices: np.ndarray,
    bag_size: int,
    rng: np.random.Generator,
    augment: bool,
    geometry: bool = False,
    context: int = 0,
    maps: int = len(TUMOUR_REGIONS),
) -> DrawnBags:
    """The slices of one training step: a random bag of each chosen subject, concatenated, and when ``bag_set``
    holds tumour maps, the first ``maps`` of :data:`TUMOUR_REGIONS` (transformed with the slices; 1 = the whole
    tumour's, what ``train.pixel_target: tumour`` teaches).

    Each bag is converted (and augmented, :func:`draw_transform` with ``geometry``) straight into its part of the
    output: one pass over the data. With ``context`` k (``train.model.context_slices``) each drawn slice comes with
    its k neighbours on either side as channels (:func:`neighbour_indices`), augmented alike. Raises
    :class:`GliomilError` when a chosen subject has no tumour map.
    """
    picks = [sample_slices(len(bag_set.bags[i]), bag_size, rng) for i in indices]
    total = sum(len(p) for p in picks)
    channels, height, width = bag_set.bags[indices[0]].shape[1:]
    slices = np.empty((total, (2 * context + 1) * channels, height, width), dtype=np.float32)
    if not 1 <= maps <= len(TUMOUR_REGIONS):
        raise ValueError(f"maps must be 1 to {len(TUMOUR_REGIONS)}, got {maps}")
    drawn_maps = None
    if bag_set.tumour_maps is not None:
        drawn_maps = np.empty((total, maps, *slices.shape[2:]), dtype=np.float32)
    start = 0
    for i, p in zip(indices, picks):
        end = start + len(p)
        shape = (len(p) * (2 * context + 1), channels, height, width)
        transform = draw_transform(rng, shape, geometry=geometry) if augment else None
        bag = bag_set.bags[i][p if context == 0 else neighbour_indices(p, len(bag_set.bags[i]), context).ravel()]
        out = slices[start:end].reshape(shape)  # a view: neighbour by neighbour, as the encoder reads them
        if transform is None:
            out[...] = bag
        else:
            transform.apply(bag, out=out)
        if drawn_maps is not None:
            tumour_map = bag_set.tumour_maps[i]
            if tumour_map is None:
                raise GliomilError(f"{bag_set.subject_ids[i]} has no tumour map (no segmentation)")
            part = tumour_map[p, :maps]
            scale = np.float32(1 / 255)
            np.multiply(part if transform is None else transform.move(part), scale, out=drawn_maps[start:end])
        start = end
    return DrawnBags(slices, picks, drawn_maps)
