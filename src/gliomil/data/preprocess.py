"""Turn each subject's four MRI volumes into a bag of normalised, resized axial slices.

Per subject (all arrays in canonical RAS voxel order, axial slices along the last axis):

1. per modality, clip to percentiles and z-score using only brain voxels (background stays 0);
2. crop to the brain's bounding box, padded to a square in-plane so anatomy keeps its aspect;
3. keep axial slices whose brain covers at least ``min_brain_fraction`` of the square;
4. resize the kept slices to ``image_size`` x ``image_size`` (antialiased bilinear);
5. record each kept slice's tumour fraction from the segmentation, for diagnostics, and its tumour maps (each
   BraTS tumour region of the segmentation resized like the slices), for training-only supervision (the model
   never sees the segmentation).

The cohort is written to one folder: ``slices/<subject>.npy`` (float16, shape
(n_slices, 4, image_size, image_size), memory-mappable), ``tumour_maps/<subject>.npy`` (uint8, shape
(n_slices, 3, image_size, image_size): whole tumour, tumour core, enhancing tumour, the order of
:data:`gliomil.vocabulary.TUMOUR_REGIONS`; subjects with a segmentation only), ``manifest.csv`` (one row per
subject) and ``slices.csv`` (one row per kept slice).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from gliomil.data.brats import SUFFIX_KEYS, Subject, Volumes, check_suffixes, load_volumes, resolve_files
from gliomil.data.fingerprint import FINGERPRINT_PERCENTILES, fingerprint_row, pad_thumbnails, qc_thumbnail
from gliomil.data.slices import MANIFEST, SLICE_DIR, SLICE_TABLE, TUMOUR_MAP_DIR, content_hash
from gliomil.errors import GliomilError, InputError
from gliomil.runtime.files import atomic_directory, make_directory, write_text, write_with
from gliomil.runtime.workers import map_in_workers
from gliomil.vocabulary import LABELS, REGION_LABELS, TUMOUR_REGIONS


@dataclass(frozen=True)
class PreprocessSettings:
    image_size: int = 64
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    min_brain_fraction: float = 0.1


@dataclass(frozen=True)
class SliceGeometry:
    """Where a subject's kept slices lie in its canonical volume, and how they are resized (S = kept slices).

    keep: int (S,) axial indices of the kept slices. x_box, y_box: the brain's in-plane bounding box.
    weights_x, weights_y: float32 (image_size, box width) and (image_size, box height), the resampling
    weights of the box's columns within the enclosing square (:func:`resize_weights`).
    """

    keep: np.ndarray
    x_box: slice
    y_box: slice
    weights_x: np.ndarray
    weights_y: np.ndarray

    def planes(self, volume: np.ndarray) -> np.ndarray:
        """The kept axial planes of an (X, Y, Z) volume inside the box, axial planes first: (S, box Y, box X)."""
        return volume[self.x_box, self.y_box].T[self.keep]

    def resize(self, planes: np.ndarray) -> np.ndarray:
        """float32 planes (S, box Y, box X) -> (S, image_size, image_size), stored (S, X, Y) like the volumes."""
        return resample(planes, self.weights_y, self.weights_x).transpose(0, 2, 1)


@dataclass
class SliceBag:
    """One subject's kept slices and what is known about each of them (S = number of kept slices)."""

    slices: np.ndarray  # float16 (S, 4, image_size, image_size)
    z_index: np.ndarray  # int (S,) axial index in the canonical volume
    position: np.ndarray  # float (S,) relative axial position within the brain, 0 = lowest brain slice
    brain_fraction: np.ndarray  # float (S,) share of the square crop that is brain
    tumour_fraction: np.ndarray  # float (S,) share of the slice's brain that is tumour (seg > 0); NaN without seg
    # uint8 (S, 3, image_size, image_size): 255 x each pixel's share of each of TUMOUR_REGIONS (in the brain,
    # resized like the slices); None without seg. Training-only supervision (train.pixel_supervision)
    tumour_map: np.ndarray | None
    geometry: SliceGeometry
    brain_voxels: int = 0  # voxels of the brain mask
    # float64 (4, len(FINGERPRINT_PERCENTILES)): each modality's raw brain intensity percentiles, read off the sort
    # that the z-scoring does anyway (the cohort's fingerprint, gliomil.data.fingerprint, costs nothing extra)
    brain_percentiles: np.ndarray | None = None


def brain_mask(images: np.ndarray) -> np.ndarray:
    """Brain voxels of skull-stripped images (C, X, Y, Z): any modality non-zero. Returns bool (X, Y, Z).

    Built channel by channel into one buffer: np.any(images != 0, axis=0) would first make a
    (C, X, Y, Z) boolean temporary. The mask keeps the memory order of the channels.
    """
    mask = images[0] != 0
    nonzero = np.empty_like(mask)
    for channel in images[1:]:
        mask |= np.not_equal(channel, 0, out=nonzero)
    return mask


class ZScore(NamedTuple):
    """How one modality is normalised: clip to [low, high], then (value - mean) / std."""

    low: float
    high: float
    mean: float
    std: float


def zscore_parameters(brain: np.ndarray, percentiles=(0.5, 99.5), raw_percentiles=None) -> ZScore:
    """Clip range and z-score statistics of one modality from its brain voxels.

    brain: float32 (N,), N >= 1, the modality's values at the brain voxels; sorted and clipped in place.
    low and high are the given percentiles (0-100) of ``brain``, interpolated linearly as np.percentile
    does; mean and std (population) are those of ``brain`` clipped to [low, high], accumulated in float64
    without float64 copies. A constant modality gets std 1: it has no contrast to standardise, and
    centring it at 0 keeps it harmless. ``raw_percentiles``, a float64 array, receives the ``FINGERPRINT_PERCENTILES``
    of the unclipped values (read off the same sort).
    """
    # numpy's SIMD sort beats np.partition with the four ranks needed, and leaves every rank readable.
    brain.sort()
    if raw_percentiles is not None:
        raw_percentiles[:] = _sorted_percentiles(brain, FINGERPRINT_PERCENTILES)
    low, high = _sorted_percentiles(brain, percentiles)
    np.clip(brain, low, high, out=brain)
    mean = float(brain.mean(dtype=np.float64))
    # Deviations are rounded to float32 once; their squares are summed in float64.
    deviations = np.subtract(brain, mean, dtype=np.float64, out=np.empty_like(brain))
    std = float(np.sqrt(np.square(deviations, out=deviations).sum(dtype=np.float64) / brain.size))
    return ZScore(low, high, mean, std if std > 0 else 1.0)


def _sorted_percentiles(ascending: np.ndarray, percentiles) -> tuple[float, ...]:
    """np.percentile(ascending, percentiles) (method "linear", in float64) of an already sorted 1-D array."""
    position = np.asarray(percentiles, dtype=np.float64) / 100 * (ascending.size - 1)
    below = np.floor(position).astype(np.intp)
    above = np.minimum(below + 1, ascending.size - 1)
    lower, upper = ascending[below].astype(np.float64), ascending[above].astype(np.float64)
    return tuple(float(value) for value in lower + (upper - lower) * (position - below))


def clip_and_zscore(values: np.ndarray, mask: np.ndarray, zscore: ZScore) -> np.ndarray:
    """Normalise float32 ``values`` in place with ``zscore``; where bool ``mask`` (same shape) is false, 0.

    Returns ``values``. Python-float parameters keep the arithmetic in float32.
    """
    np.clip(values, zscore.low, zscore.high, out=values)
    values -= zscore.mean
    values /= zscore.std
    np.copyto(values, 0.0, where=~mask)
    return values


def bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """Smallest box holding every non-zero element of a non-empty N-d ``mask``: one slice per axis."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(other for other in range(mask.ndim) if other != axis)))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def enclosing_square(x_box: slice, y_box: slice) -> tuple[int, int, int]:
    """Smallest in-plane square holding the box x_box x y_box, the shorter extent centred inside it.

    Returns (x0, y0, side): the square spans [x0, x0 + side) x [y0, y0 + side) and may reach
    outside the volume.
    """
    width, height = x_box.stop - x_box.start, y_box.stop - y_box.start
    side = max(width, height)
    return x_box.start - (side - width) // 2, y_box.start - (side - height) // 2, side


def resize_weights(size_in: int, size_out: int) -> np.ndarray:
    """Antialiased linear resampling of one axis as a matrix: float32 (size_out, size_in), rows summing to 1.

    The weights of torch.nn.functional.interpolate(mode="bilinear", antialias=True, align_corners=False)
    along one axis: a triangle filter on each output pixel's centre, in input pixels, widened by the
    downscale factor when shrinking so that every input pixel counts (the antialiasing). Rows are
    normalised, so near the borders, where the filter is cut off, the remaining weights still sum to 1.
    Applying it to both axes of a plane P (size_in, size_in) gives W @ P @ W.T.
    """
    scale = size_in / size_out
    half_width = max(scale, 1.0)
    centres = scale * (np.arange(size_out) + 0.5)
    distance = (np.arange(size_in) + 0.5 - centres[:, None]) / half_width
    weights = np.maximum(1.0 - np.abs(distance), 0.0)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def resample(planes: np.ndarray, weights_rows: np.ndarray, weights_columns: np.ndarray) -> np.ndarray:
    """Resample every plane of float32 (S, A, B): returns (S, A', B'), weights_rows @ plane @ weights_columns.T.

    weights_rows: (A', A); weights_columns: (B', B). Two matrix products, each through BLAS; the
    weights (often strided views) are made contiguous first, which keeps numpy on its fastest path.
    """
    columns_resampled = planes @ np.ascontiguousarray(weights_columns.T)
    return np.ascontiguousarray(weights_rows) @ columns_resampled


def preprocess_volumes(volumes: Volumes, settings: PreprocessSettings) -> SliceBag:
    """Normalise, crop, select and resize one subject's volumes. See the module docstring for the steps.

    The output equals cropping the normalised volume to the square, zero-padded, and resizing it, but
    only the brain's bounding box is normalised and resampled: outside it every normalised voxel is 0,
    so the square's columns outside the box are simply dropped from the resampling weights.
    """
    images, seg = volumes.images, volumes.seg
    mask = brain_mask(images)
    # The box comes from two projections, each one pass over the mask: brain pixels per axial
    # slice (the square holds all of each slice's brain) and the brain's in-plane footprint.
    brain_pixels = np.count_nonzero(mask, axis=(0, 1))  # (Z,)
    (z_box,) = bounding_box(brain_pixels)
    x_box, y_box = bounding_box(mask.any(axis=2))
    x0, y0, side = enclosing_square(x_box, y_box)

    brain_fraction = brain_pixels / float(side * side)
    keep = np.flatnonzero(brain_fraction >= settings.min_brain_fraction)
    if keep.size == 0:
        raise ValueError(f"no axial slice has a brain fraction >= {settings.min_brain_fraction}")
    position = (keep - z_box.start) / max(z_box.stop - 1 - z_box.start, 1)
    weights = resize_weights(side, settings.image_size)
    weights_x, weights_y = (
        weights[:, x_box.start - x0 : x_box.stop - x0],
        weights[:, y_box.start - y0 : y_box.stop - y0],
    )
    geometry = SliceGeometry(keep, x_box, y_box, weights_x, weights_y)

    # In-plane box, axial planes first: (Z, box Y, box X) views. With x-fastest (NIfTI) data each
    # plane is contiguous, so selecting planes copies whole blocks. ``keep`` indexes Z directly
    # (with min_brain_fraction 0 it may hold slices without brain, which come out as zeros).
    mask_planes = mask[x_box, y_box].T
    brain_in_box, kept_mask = mask_planes[z_box], mask_planes[keep]
    if seg is None:
        tumour_fraction, tumour_map = np.full(keep.size, np.nan), None
    else:
        regions = tumour_maps(geometry, seg, kept_mask)
        whole_tumour = regions.region_pixels[:, 0]
        tumour_fraction = np.count_nonzero(whole_tumour, axis=(1, 2)) / np.maximum(brain_pixels[keep], 1)
        tumour_map = regions.resized

    slices = np.empty((keep.size, len(images), settings.image_size, settings.image_size), dtype=np.float16)
    raw = np.empty((len(images), len(FINGERPRINT_PERCENTILES)))
    for channel, volume in enumerate(images):
        planes = volume[x_box, y_box].T
        zscore = zscore_parameters(planes[z_box][brain_in_box], settings.clip_percentiles, raw[channel])
        slices[:, channel] = geometry.resize(clip_and_zscore(planes[keep], kept_mask, zscore))
    brain_voxels = int(brain_pixels.sum())
    return SliceBag(
        slices, keep, position, brain_fraction[keep], tumour_fraction, tumour_map, geometry, brain_voxels, raw
    )


class TumourMaps(NamedTuple):
    region_pixels: np.ndarray  # bool (S, 3, box Y, box X): each of TUMOUR_REGIONS on the kept planes, in the brain
    resized: np.ndarray  # uint8 (S, 3, image_size, image_size): 255 x each pixel's share of each region


def tumour_maps(geometry: SliceGeometry, seg: np.ndarray, kept_mask: np.ndarray) -> TumourMaps:
    """The BraTS tumour regions (:data:`gliomil.vocabulary.REGION_LABELS`) of the kept planes of ``seg`` (X, Y, Z),
    inside the brain (``kept_mask``, (S, box Y, box X)), and their maps resized like the slices."""
    labels = geometry.planes(seg)
    region_pixels = np.empty((len(labels), len(TUMOUR_REGIONS), *labels.shape[1:]), dtype=bool)
    for k, region in enumerate(TUMOUR_REGIONS):
        # One comparison per label (a region holds one to three): far cheaper than np.isin's sort or a gather.
        inside = labels == REGION_LABELS[region][0]
        for label in REGION_LABELS[region][1:]:
            inside |= labels == label
        np.logical_and(inside, kept_mask, out=region_pixels[:, k])
    size = geometry.weights_x.shape[0]
    resized = np.zeros((len(labels), len(TUMOUR_REGIONS), size, size), dtype=np.uint8)
    # Most planes hold no tumour, and an empty plane resizes to zeros: only the others are resampled.
    present = region_pixels.any(axis=(2, 3))
    if present.any():
        shares = geometry.resize(region_pixels[present].astype(np.float32))
        resized[present] = np.rint(255 * shares.clip(0, 1)).astype(np.uint8)
    return TumourMaps(region_pixels, resized)


# -- cohort ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    subject: Subject
    suffixes: dict
    settings: PreprocessSettings
    out_dir: Path


def preprocess_case(subject_id: str, files: dict[str, Path], settings: PreprocessSettings) -> tuple[Volumes, SliceBag]:
    """Load, check and preprocess one case: :func:`gliomil.data.brats.load_volumes`, then :func:`preprocess_volumes`.

    The one path from files to slices, for training and for prediction. Every problem is an InputError
    naming the case, the file (or folder) and what is wrong.
    """
    volumes = load_volumes(subject_id, files)
    try:
        return volumes, preprocess_volumes(volumes, settings)
    except ValueError as exc:
        raise InputError(subject_id, files["flair"], str(exc)) from exc


def _process_subject(job: _Job):
    """Worker: load, check and preprocess one subject, write its slices; return rows or the error message."""
    subject = job.subject
    try:
        volumes, bag = preprocess_case(subject.subject_id, resolve_files(subject, job.suffixes), job.settings)
    except InputError as exc:
        return subject, str(exc), None
    slices, tumour_map = bag.slices, bag.tumour_map
    write_with(job.out_dir / SLICE_DIR / f"{subject.subject_id}.npy", lambda f: np.save(f, slices))
    if tumour_map is not None:
        write_with(job.out_dir / TUMOUR_MAP_DIR / f"{subject.subject_id}.npy", lambda f: np.save(f, tumour_map))
    row = {
        "subject_id": subject.subject_id,
        "patient_id": subject.patient_id,
        "grade": subject.grade,
        "site": subject.site,
        "label": LABELS[subject.grade],
        "n_slices": len(bag.slices),
        "slices_file": f"{SLICE_DIR}/{subject.subject_id}.npy",
        "content_sha256": content_hash(bag.slices),
        "tumour_map_sha256": "" if tumour_map is None else content_hash(tumour_map),
        "source_files": ";".join(str(volumes.files[key]) for key in SUFFIX_KEYS),
    }
    # The fingerprint while the volumes are in memory (gliomil.data.fingerprint): a second read would cost as much.
    thumbnail, qc_slice = qc_thumbnail(volumes, bag.brain_percentiles, int(bag.z_index[len(bag.z_index) // 2]))
    fingerprint = {
        "subject_id": subject.subject_id,
        "grade": subject.grade,
        "site": subject.site,
        "n_slices": len(bag.slices),
        **fingerprint_row(volumes, bag.brain_voxels, bag.brain_percentiles),
        "qc_slice": qc_slice,
    }
    slice_rows = pd.DataFrame(
        {
            "subject_id": subject.subject_id,
            "slice": np.arange(len(bag.slices)),
            "z": bag.z_index,
            "position": bag.position.round(6),
            "brain_fraction": bag.brain_fraction.round(6),
            "tumour_fraction": bag.tumour_fraction.round(6),
        }
    )
    return subject, None, (row, slice_rows, fingerprint, thumbnail)


@dataclass
class CohortReport:
    subjects_found: int
    manifest: pd.DataFrame
    skipped: list[tuple[str, str]]  # (subject_id, reason)
    fingerprint: pd.DataFrame  # one row per kept subject, in manifest order (gliomil.data.fingerprint)
    thumbnails: np.ndarray  # float16 (kept subjects, size, 2 * size), NaN-padded QC thumbnails, in manifest order


def preprocess_cohort(
    subjects: list[Subject],
    out_dir: Path,
    settings: PreprocessSettings,
    suffixes: dict,
    on_error: str = "fail",
    workers: int = 1,
    progress: bool = True,
) -> CohortReport:
    """Preprocess ``subjects`` into ``out_dir`` (replaced only on success).

    Subjects stream through ``workers`` processes one at a time each, so peak memory does not grow
    with the cohort. The report carries the kept subjects' fingerprint and QC thumbnails for the caller to write. With ``on_error="fail"`` the first bad subject raises :class:`InputError` and
    nothing is left behind; with ``"skip"`` bad subjects are listed in the report instead.
    Output is identical for any number of workers. Raises ValueError for ``suffixes`` that do not name
    every file (before any work: in the workers it would read as a bad subject).
    """
    check_suffixes(suffixes)
    rows, slice_tables, fingerprints, thumbnails, skipped = [], [], [], [], []
    with atomic_directory(out_dir) as tmp_dir:
        make_directory(tmp_dir / SLICE_DIR)
        make_directory(tmp_dir / TUMOUR_MAP_DIR)
        jobs = [_Job(s, dict(suffixes), settings, tmp_dir) for s in subjects]
        for subject, error, result in map_in_workers(
            _process_subject, jobs, workers, progress="preprocess" if progress else None
        ):
            if error is not None:
                if on_error == "fail":
                    raise GliomilError(error)
                skipped.append((subject.subject_id, error))
                continue
            rows.append(result[0])
            slice_tables.append(result[1])
            fingerprints.append(result[2])
            thumbnails.append(result[3])
        if not rows:
            raise GliomilError(f"no usable subject among {len(subjects)} (all were skipped)")
        manifest = pd.DataFrame(rows)
        write_text(tmp_dir / MANIFEST, manifest.to_csv(index=False))
        write_text(tmp_dir / SLICE_TABLE, pd.concat(slice_tables, ignore_index=True).to_csv(index=False))
    return CohortReport(len(subjects), manifest, skipped, pd.DataFrame(fingerprints), pad_thumbnails(thumbnails))
