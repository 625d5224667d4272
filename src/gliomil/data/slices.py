"""The slice store: what the preprocess stage writes and the stages after it read.

``<dir>/manifest.csv`` (one row per subject, with the SHA-256 of its slices and of its tumour map), ``<dir>/slices.csv``
(one row per kept slice), ``<dir>/slices/<subject>.npy`` (float16, (S, 4, H, W)) and, for a subject with a
segmentation, ``<dir>/tumour_maps/<subject>.npy`` (uint8, (S, 3, H, W): 255 x the share of each pixel in each of
:data:`gliomil.vocabulary.TUMOUR_REGIONS`, for training-only supervision). Reading it needs none of the
preprocessing maths, so training does not re-run when that maths' code changes without changing its output.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from gliomil.errors import InputError
from gliomil.vocabulary import TUMOUR_REGIONS

MANIFEST = "manifest.csv"
SLICE_TABLE = "slices.csv"
SLICE_DIR = "slices"
TUMOUR_MAP_DIR = "tumour_maps"


def content_hash(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes: equal hashes mean identical stored slices."""
    digest = hashlib.sha256()
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def read_manifest(preprocessed_dir: str | Path) -> pd.DataFrame:
    """The per-subject manifest written by :func:`preprocess_cohort`."""
    return pd.read_csv(Path(preprocessed_dir) / MANIFEST, dtype={"subject_id": str, "patient_id": str, "site": str})


def read_slice_table(preprocessed_dir: str | Path) -> pd.DataFrame:
    """The per-slice table (subject_id, slice, z, position, brain_fraction, tumour_fraction)."""
    return pd.read_csv(Path(preprocessed_dir) / SLICE_TABLE, dtype={"subject_id": str})


def load_bag(preprocessed_dir: str | Path, subject_id: str, mmap: bool = True) -> np.ndarray:
    """A subject's slices, float16 (S, 4, H, W); memory-mapped by default so reads touch only what is used.

    A missing, truncated or unreadable file raises :class:`InputError` naming the subject and the file."""
    return _load_array(Path(preprocessed_dir) / SLICE_DIR / f"{subject_id}.npy", subject_id, mmap)


def _load_array(path: Path, subject_id: str, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        problem = " ".join(str(exc).split())[:160]
        raise InputError(subject_id, path, f"cannot read ({problem}); `dvc checkout` restores it") from None


def load_verified_bag(preprocessed_dir: str | Path, subject_id: str, sha256: str) -> np.ndarray:
    """A subject's slices read into memory and checked against the manifest's ``sha256`` (:func:`content_hash`).

    Silent corruption (a bad disk, a restore from backup: same size, same timestamp) raises :class:`InputError`
    instead of being trained on. Costs one SHA-256 pass over the bytes read (``benchmarks/verify_benchmark.py``).
    """
    bag = np.ascontiguousarray(load_bag(preprocessed_dir, subject_id, mmap=False))
    if content_hash(bag) != sha256:
        path = Path(preprocessed_dir) / SLICE_DIR / f"{subject_id}.npy"
        raise InputError(
            subject_id, path, "slices differ from the manifest's SHA-256 (corrupted); `dvc checkout` restores them"
        )
    return bag


def load_verified_tumour_map(preprocessed_dir: str | Path, subject_id: str, sha256: str) -> np.ndarray:
    """A subject's tumour maps, uint8 (S, 3, H, W) (one per tumour region, 255 = all of the pixel), checked against
    the manifest's ``sha256`` like :func:`load_verified_bag`. A missing, unreadable or corrupted file raises
    :class:`InputError`; so does a map of another shape (a store written before the tumour regions)."""
    path = Path(preprocessed_dir) / TUMOUR_MAP_DIR / f"{subject_id}.npy"
    tumour_map = np.ascontiguousarray(_load_array(path, subject_id, mmap=False))
    if content_hash(tumour_map) != sha256:
        raise InputError(
            subject_id, path, "tumour map differs from the manifest's SHA-256 (corrupted); `dvc checkout` restores it"
        )
    if tumour_map.ndim != 4 or tumour_map.shape[1] != len(TUMOUR_REGIONS):
        raise InputError(
            subject_id,
            path,
            f"tumour map has shape {tumour_map.shape}, not (slices, {len(TUMOUR_REGIONS)}, H, W): written before "
            "the tumour regions; re-run the preprocess stage",
        )
    return tumour_map
