"""Turn each subject's four MRI volumes into a bag of normalised, resized axial slices.

Per subject (all arrays in canonical RAS voxel order, axial slices along the last axis):

1. per modality, clip to percentiles and z-score using only brain voxels (background stays 0);
2. crop to the brain's bounding box, padded to a square in-plane so anatomy keeps its aspect;
3. keep axial slices whose brain covers at least ``min_brain_fraction`` of the square;
4. resize the kept slices to ``image_size`` x ``image_size`` (antialiased bilinear);
5. record each kept slice's tumour fraction from the segmentation, for diagnostics only
   (the model never sees the segmentation).

The cohort is written to one folder: ``slices/<subject>.npy`` (float16, shape
(n_slices, 4, image_size, image_size), memory-mappable), ``manifest.csv`` (one row per
subject) and ``slices.csv`` (one row per kept slice).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from .brats import MODALITIES, Subject, Volumes, load_subject
from .errors import GliomilError, InputError

MANIFEST = "manifest.csv"
SLICE_TABLE = "slices.csv"
SLICE_DIR = "slices"
GRADE_LABELS = {"LGG": 0, "HGG": 1}


@dataclass(frozen=True)
class PreprocessSettings:
    image_size: int = 64
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    min_brain_fraction: float = 0.1


@dataclass
class SliceBag:
    """One subject's kept slices and what is known about each of them (S = number of kept slices)."""

    slices: np.ndarray           # float16 (S, 4, image_size, image_size)
    z_index: np.ndarray          # int (S,) axial index in the canonical volume
    position: np.ndarray         # float (S,) relative axial position within the brain, 0 = lowest brain slice
    brain_fraction: np.ndarray   # float (S,) share of the square crop that is brain
    tumour_fraction: np.ndarray  # float (S,) share of the slice's brain that is tumour (seg > 0)


def brain_mask(images: np.ndarray) -> np.ndarray:
    """Brain voxels of skull-stripped images (4, X, Y, Z): any modality non-zero. Returns bool (X, Y, Z)."""
    return np.any(images != 0, axis=0)


def clip_and_zscore(volume: np.ndarray, mask: np.ndarray, percentiles=(0.5, 99.5)) -> np.ndarray:
    """Clip ``volume`` to the given percentiles of its brain voxels, then z-score with their mean and std.

    Statistics come from voxels where ``mask`` is true only, so the amount of background does not
    change them. Voxels outside the mask become 0. Returns float32 of the same shape.
    """
    brain = volume[mask].astype(np.float64)
    low, high = np.percentile(brain, percentiles)
    brain = np.clip(brain, low, high)
    std = brain.std()
    out = np.zeros(volume.shape, dtype=np.float32)
    # A constant modality has no contrast to standardise; centring it at 0 keeps it harmless.
    out[mask] = (brain - brain.mean()) / (std if std > 0 else 1.0)
    return out


def square_bounding_box(mask: np.ndarray) -> tuple[int, int, int]:
    """Smallest in-plane square holding every true voxel of ``mask`` (X, Y, Z).

    Returns (x0, y0, side): the square spans [x0, x0 + side) x [y0, y0 + side) and may reach
    outside the volume, where :func:`crop_square` pads with zeros.
    """
    xs = np.flatnonzero(mask.any(axis=(1, 2)))
    ys = np.flatnonzero(mask.any(axis=(0, 2)))
    x0, x1 = xs[0], xs[-1] + 1
    y0, y1 = ys[0], ys[-1] + 1
    side = int(max(x1 - x0, y1 - y0))
    # Centre the shorter extent inside the square.
    x0 -= (side - (x1 - x0)) // 2
    y0 -= (side - (y1 - y0)) // 2
    return int(x0), int(y0), side


def crop_square(array: np.ndarray, x0: int, y0: int, side: int) -> np.ndarray:
    """Crop the in-plane axes of ``array`` (..., X, Y, Z) to [x0, x0+side) x [y0, y0+side).

    Parts of the square outside the array are zero-filled. Returns (..., side, side, Z).
    """
    size_x, size_y = array.shape[-3], array.shape[-2]
    out = np.zeros(array.shape[:-3] + (side, side, array.shape[-1]), dtype=array.dtype)
    sx0, sx1 = max(x0, 0), min(x0 + side, size_x)
    sy0, sy1 = max(y0, 0), min(y0 + side, size_y)
    out[..., sx0 - x0:sx1 - x0, sy0 - y0:sy1 - y0, :] = array[..., sx0:sx1, sy0:sy1, :]
    return out


def resize_slices(stack: np.ndarray, size: int) -> np.ndarray:
    """Resize slices (S, C, H, W) to (S, C, size, size) with antialiased bilinear interpolation (float32)."""
    import torch
    import torch.nn.functional as F

    if stack.shape[-2:] == (size, size):
        return stack.astype(np.float32, copy=False)
    tensor = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))
    resized = F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.numpy()


def preprocess_volumes(volumes: Volumes, settings: PreprocessSettings) -> SliceBag:
    """Normalise, crop, select and resize one subject's volumes. See the module docstring for the steps."""
    images, seg = volumes.images, volumes.seg
    mask = brain_mask(images)
    normalised = np.stack([clip_and_zscore(images[m], mask, settings.clip_percentiles) for m in range(len(images))])
    x0, y0, side = square_bounding_box(mask)
    mask_crop = crop_square(mask, x0, y0, side)
    tumour_crop = crop_square(seg > 0, x0, y0, side) & mask_crop

    brain_pixels = mask_crop.sum(axis=(0, 1))
    brain_fraction = brain_pixels / float(side * side)
    keep = np.flatnonzero(brain_fraction >= settings.min_brain_fraction)
    if keep.size == 0:
        raise ValueError(f"no axial slice has a brain fraction >= {settings.min_brain_fraction}")
    tumour_fraction = tumour_crop.sum(axis=(0, 1))[keep] / np.maximum(brain_pixels[keep], 1)

    brain_z = np.flatnonzero(brain_pixels)
    extent = max(int(brain_z[-1] - brain_z[0]), 1)
    position = (keep - brain_z[0]) / extent

    # Only kept slices are cropped and resized: (C, side, side, S) -> (S, C, side, side).
    kept = crop_square(normalised[..., keep], x0, y0, side).transpose(3, 0, 1, 2)
    slices = resize_slices(kept, settings.image_size).astype(np.float16)
    return SliceBag(slices, keep, position, brain_fraction[keep], tumour_fraction)


def content_hash(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes: equal hashes mean identical stored slices."""
    digest = hashlib.sha256()
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


# -- cohort ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Job:
    subject: Subject
    suffixes: dict
    settings: PreprocessSettings
    out_dir: Path


def _process_subject(job: _Job):
    """Worker: load, check and preprocess one subject, write its slices; return rows or the error message."""
    subject = job.subject
    try:
        volumes = load_subject(subject, job.suffixes)
        bag = preprocess_volumes(volumes, job.settings)
    except InputError as exc:
        return subject, str(exc), None
    except ValueError as exc:
        return subject, str(InputError(subject.subject_id, subject.directory, str(exc))), None
    np.save(job.out_dir / SLICE_DIR / f"{subject.subject_id}.npy", bag.slices)
    row = {
        "subject_id": subject.subject_id,
        "patient_id": subject.patient_id,
        "grade": subject.grade,
        "label": GRADE_LABELS[subject.grade],
        "n_slices": len(bag.slices),
        "slices_file": f"{SLICE_DIR}/{subject.subject_id}.npy",
        "content_sha256": content_hash(bag.slices),
        "source_files": ";".join(str(volumes.files[key]) for key in (*MODALITIES, "seg")),
    }
    slice_rows = pd.DataFrame({
        "subject_id": subject.subject_id,
        "slice": np.arange(len(bag.slices)),
        "z": bag.z_index,
        "position": bag.position.round(6),
        "brain_fraction": bag.brain_fraction.round(6),
        "tumour_fraction": bag.tumour_fraction.round(6),
    })
    return subject, None, (row, slice_rows)


def _init_worker():
    import torch

    # Processes, not threads, give the parallelism; more threads per worker would oversubscribe.
    torch.set_num_threads(1)


@dataclass
class CohortReport:
    subjects_found: int
    manifest: pd.DataFrame
    skipped: list[tuple[str, str]]  # (subject_id, reason)


def preprocess_cohort(subjects: list[Subject], out_dir: Path, settings: PreprocessSettings,
                      suffixes: dict, on_error: str = "fail", workers: int = 1,
                      progress: bool = True) -> CohortReport:
    """Preprocess ``subjects`` into ``out_dir`` (replaced only on success).

    Subjects stream through ``workers`` processes one at a time each, so peak memory does not grow
    with the cohort. With ``on_error="fail"`` the first bad subject raises :class:`InputError` and
    nothing is left behind; with ``"skip"`` bad subjects are listed in the report instead.
    Output is identical for any number of workers.
    """
    out_dir = Path(out_dir)
    tmp_dir = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    (tmp_dir / SLICE_DIR).mkdir(parents=True)
    jobs = [_Job(s, dict(suffixes), settings, tmp_dir) for s in subjects]
    rows, slice_tables, skipped = [], [], []
    try:
        with _pool(workers) as pool:
            results = pool.imap(_process_subject, jobs) if pool else map(_process_subject, jobs)
            for subject, error, result in tqdm(results, total=len(jobs), desc="preprocess",
                                               unit="subject", disable=not progress):
                if error is not None:
                    if on_error == "fail":
                        raise GliomilError(error)
                    skipped.append((subject.subject_id, error))
                    continue
                rows.append(result[0])
                slice_tables.append(result[1])
        if not rows:
            raise GliomilError(f"no usable subject among {len(subjects)} (all were skipped)")
        manifest = pd.DataFrame(rows)
        manifest.to_csv(tmp_dir / MANIFEST, index=False)
        pd.concat(slice_tables, ignore_index=True).to_csv(tmp_dir / SLICE_TABLE, index=False)
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp_dir.rename(out_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return CohortReport(len(subjects), manifest, skipped)


class _pool:
    """A process pool for workers > 1, or nothing (run inline) for one worker."""

    def __init__(self, workers: int):
        self.workers = workers
        self.pool = None

    def __enter__(self):
        if self.workers > 1:
            self.pool = multiprocessing.get_context("fork").Pool(self.workers, initializer=_init_worker)
        return self.pool

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
        return False


# -- reading ----------------------------------------------------------------------------------

def read_manifest(preprocessed_dir: str | Path) -> pd.DataFrame:
    """The per-subject manifest written by :func:`preprocess_cohort`."""
    return pd.read_csv(Path(preprocessed_dir) / MANIFEST, dtype={"subject_id": str, "patient_id": str})


def read_slice_table(preprocessed_dir: str | Path) -> pd.DataFrame:
    """The per-slice table (subject_id, slice, z, position, brain_fraction, tumour_fraction)."""
    return pd.read_csv(Path(preprocessed_dir) / SLICE_TABLE, dtype={"subject_id": str})


def load_bag(preprocessed_dir: str | Path, subject_id: str, mmap: bool = True) -> np.ndarray:
    """A subject's slices, float16 (S, 4, H, W); memory-mapped by default so reads touch only what is used."""
    return np.load(Path(preprocessed_dir) / SLICE_DIR / f"{subject_id}.npy", mmap_mode="r" if mmap else None)
