"""The cohort's fingerprint: what each subject's files say about how it was acquired, and a look at each one.

In the spirit of nnU-Net's dataset fingerprint: one row per subject (:func:`fingerprint_row`) with its grid
(shape, voxel size, stored orientation), its brain (volume, per-modality intensity percentiles in the scanner's own
units) and its tumour (volume by label); and one small picture per subject (:func:`qc_thumbnail`: FLAIR and T1ce
on the axial slice with the most tumour) for the cohort's QC grid.

Preprocess measures both while each subject's volumes are in memory (:mod:`gliomil.data.preprocess`): reading a
cohort costs about what preprocessing it costs, so a second pass would double it. They are written beside the slice
store, not inside it, so a change here re-runs preprocess but leaves the slices, and so training, untouched.
"""

from __future__ import annotations


import nibabel as nib
import numpy as np

from gliomil.data.brats import Volumes
from gliomil.vocabulary import MODALITIES

__all__ = [
    "FINGERPRINT_PERCENTILES",
    "TUMOUR_LABELS",
    "THUMBNAIL_SIZE",
    "fingerprint_row",
    "qc_thumbnail",
    "pad_thumbnails",
]

#: Percentiles of each modality's raw intensities inside the brain (scanner units: what differs between sites).
FINGERPRINT_PERCENTILES = (1, 50, 99)
#: BraTS labels and their names in the table's columns.
TUMOUR_LABELS = {1: "necrotic", 2: "oedema", 4: "enhancing"}
#: Longest side of a QC thumbnail, in pixels (the cohort's grid holds hundreds of them).
THUMBNAIL_SIZE = 48


def fingerprint_row(volumes: Volumes, brain_voxels: int, brain_percentiles: np.ndarray) -> dict:
    """One subject's acquisition and anatomy (no ids: the caller adds them).

    ``brain_voxels``: the brain mask's size; ``brain_percentiles``: float (4, 3), each modality's raw brain
    intensities at :data:`FINGERPRINT_PERCENTILES` (preprocess reads both off work it does anyway).
    Keys: ``shape_x/y/z`` (voxels, RAS order), ``voxel_x/y/z_mm``, ``orientation`` (the stored axes' codes, e.g.
    ``LPS``), ``brain_ml``, ``<modality>_p1/_p50/_p99``, ``tumour_ml`` and ``tumour_<name>_ml`` per label (NaN
    without a segmentation).
    """
    zooms = np.sqrt((volumes.affine[:3, :3] ** 2).sum(axis=0))  # mm per voxel along each RAS axis
    voxel_ml = float(np.prod(zooms)) / 1000.0
    stored = nib.orientations.ornt2axcodes(volumes.orientation)  # the axes as the files store them
    row: dict = {
        **{f"shape_{axis}": int(n) for axis, n in zip("xyz", volumes.images.shape[1:])},
        **{f"voxel_{axis}_mm": round(float(z), 4) for axis, z in zip("xyz", zooms)},
        "orientation": "".join(stored),
        "brain_ml": round(brain_voxels * voxel_ml, 3),
    }
    for modality, values in zip(MODALITIES, brain_percentiles):
        row.update({f"{modality}_p{p}": round(float(v), 4) for p, v in zip(FINGERPRINT_PERCENTILES, values)})
    if volumes.seg is None:
        row["tumour_ml"] = np.nan
        row.update({f"tumour_{name}_ml": np.nan for name in TUMOUR_LABELS.values()})
    else:
        # Comparisons, not np.bincount: bincount widens the uint8 volume to int64 first (8x slower at 96x96x64).
        row["tumour_ml"] = round(np.count_nonzero(volumes.seg) * voxel_ml, 3)
        for label, name in TUMOUR_LABELS.items():
            row[f"tumour_{name}_ml"] = round(np.count_nonzero(volumes.seg == label) * voxel_ml, 3)
    return row


def qc_thumbnail(
    volumes: Volumes, brain_percentiles: np.ndarray, fallback_z: int, size: int = THUMBNAIL_SIZE
) -> tuple[np.ndarray, int]:
    """FLAIR and T1ce of the axial slice with the most tumour (``fallback_z``, say the middle kept slice, without a
    segmentation or tumour), side by side, each scaled to [0, 1] by its brain's 1st-99th percentiles
    (``brain_percentiles`` as in :func:`fingerprint_row`) and shrunk by striding to at most ``size`` pixels a side.
    Returns float16 (rows, 2 * columns) with anterior up, and the slice's canonical axial index."""
    z = fallback_z
    if volumes.seg is not None:
        per_slice = np.count_nonzero(volumes.seg, axis=(0, 1))
        if per_slice.any():
            z = int(np.argmax(per_slice))
    step = max(1, int(np.ceil(max(volumes.images.shape[1:3]) / size)))
    low_column, high_column = FINGERPRINT_PERCENTILES.index(1), FINGERPRINT_PERCENTILES.index(99)
    panels = []
    for channel in (MODALITIES.index("flair"), MODALITIES.index("t1ce")):
        low, high = brain_percentiles[channel, low_column], brain_percentiles[channel, high_column]
        plane = np.clip((volumes.images[channel, ::step, ::step, z] - low) / max(high - low, 1e-6), 0, 1)
        panels.append(plane.T[::-1])  # rows = y from anterior (top) to posterior, columns = x (RAS: left to right)
    return np.concatenate(panels, axis=1).astype(np.float16), z


def pad_thumbnails(thumbnails: list[np.ndarray], size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """Thumbnails of up to ``size`` x ``2 * size`` pixels as one float16 array (N, size, 2 * size), NaN-padded at
    the bottom and right: one ``.npy`` file, byte-identical run after run (unlike a zip archive's timestamps)."""
    stack = np.full((len(thumbnails), size, 2 * size), np.nan, dtype=np.float16)
    for k, image in enumerate(thumbnails):
        stack[k, : image.shape[0], : image.shape[1]] = image
    return stack
