"""Tests of the synthetic BraTS-style cohort (gliomil.synthetic)."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gliomil import synthetic
from gliomil.errors import GliomilError
from gliomil.synthetic import (
    CONTRAST,
    FOV_MM,
    Acquisition,
    subject_seed,
    synthesize_cohort,
    synthesize_subject,
)
from gliomil.vocabulary import MODALITIES

# Small enough to keep the file fast; the generator is defined in millimetres, so its
# statistics at this size match the default 96 x 96 x 64 (checked when tuning).
BASELINE_SHAPE = (64, 64, 40)
BASELINE_N = 60  # per grade
TINY_SHAPE = (32, 32, 20)  # for file-level tests


def subject(grade: str, number: int, shape=BASELINE_SHAPE, seed: int = 7):
    return synthesize_subject(grade, shape, np.random.default_rng(subject_seed(seed, grade, number)))


def tumour_features(images: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Per modality: mean, std and 10/50/90th percentiles of the brain-z-scored intensities
    inside seg > 0; then the label 1 / 2 / 4 shares of the tumour and its log volume."""
    brain = images[0] > 0
    tumour = seg > 0
    features = []
    for image in images:
        z = (image[tumour] - image[brain].mean()) / image[brain].std()
        features += [z.mean(), z.std(), *np.percentile(z, [10, 50, 90])]
    n = tumour.sum()
    features += [(seg == label).sum() / n for label in (1, 2, 4)]
    features.append(np.log(n))
    return np.array(features)


@pytest.fixture(scope="module")
def baseline_cohort():
    """Features and per-subject summaries of 60 HGG + 60 LGG (arrays are not kept)."""
    rows = []
    for grade in ("HGG", "LGG"):
        for k in range(1, BASELINE_N + 1):
            images, seg = subject(grade, k)
            brain_z = np.flatnonzero((images[0] > 0).any(axis=(0, 1)))
            tumour_z = np.flatnonzero((seg > 0).any(axis=(0, 1)))
            t1, t1ce = (images[MODALITIES.index(m)] for m in ("t1", "t1ce"))
            brain = images[0] > 0
            enhancing = seg == 4
            rows.append(
                {
                    "hgg": grade == "HGG",
                    "features": tumour_features(images, seg),
                    "tumour_slice_share": len(tumour_z) / len(brain_z),
                    "enhancing": bool(enhancing.any()),
                    # Enhancement: label-4 voxels are brighter on T1ce than on T1, relative to each brain.
                    "t1ce_gain": (
                        t1ce[enhancing].mean() / t1ce[brain].mean() - t1[enhancing].mean() / t1[brain].mean()
                        if enhancing.any()
                        else np.nan
                    ),
                }
            )
    return rows


# -- grading difficulty ------------------------------------------------------------------------


def test_grade_is_learnable_but_not_trivial(baseline_cohort):
    x = np.array([row["features"] for row in baseline_cohort])
    y = np.array([row["hgg"] for row in baseline_cohort])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    scores = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
    auc = roc_auc_score(y, scores)
    assert 0.75 < auc < 0.98, auc


def test_hgg_enhances_more_often_but_not_always(baseline_cohort):
    hgg = np.mean([row["enhancing"] for row in baseline_cohort if row["hgg"]])
    lgg = np.mean([row["enhancing"] for row in baseline_cohort if not row["hgg"]])
    assert hgg > lgg + 0.4
    assert hgg < 1.0 and lgg > 0.0  # overlap, as in real cohorts
    gains = [row["t1ce_gain"] for row in baseline_cohort if row["enhancing"]]
    assert np.mean(np.array(gains) > 0) > 0.9


def test_tumour_spans_a_minority_of_brain_slices(baseline_cohort):
    shares = np.array([row["tumour_slice_share"] for row in baseline_cohort])
    assert shares.max() < 0.5
    assert 0.1 < shares.mean() < 0.4


# -- one subject -----------------------------------------------------------------------------


def test_subject_arrays_and_labels():
    for grade in ("HGG", "LGG"):
        images, seg = subject(grade, 1)
        assert images.shape == (4, *BASELINE_SHAPE) and images.dtype == np.float32
        assert seg.shape == BASELINE_SHAPE and seg.dtype == np.uint8
        assert set(np.unique(seg)) <= {0, 1, 2, 4}
        assert (seg > 0).any()


def test_skull_stripped_brain_in_the_middle_of_the_volume():
    images, seg = subject("HGG", 2, shape=(96, 96, 64))
    brain = images[0] != 0
    for image in images:  # every modality has the same zero background
        assert np.array_equal(image != 0, brain)
        assert image[brain].min() >= 1.0
    assert 0.08 < brain.mean() < 0.4
    assert not (seg[~brain] > 0).any()
    z = np.flatnonzero(brain.any(axis=(0, 1)))
    assert z.min() > 0 and z.max() < brain.shape[2] - 1  # not every slice holds brain
    assert 0.55 < len(z) / brain.shape[2] < 0.95
    for axis in (0, 1):  # in-plane, the brain sits inside the field of view too
        extent = np.flatnonzero(brain.any(axis=tuple(a for a in (0, 1, 2) if a != axis)))
        assert extent.min() > 0 and extent.max() < brain.shape[axis] - 1


def test_tissue_contrast_per_modality():
    def column(modality):
        return {tissue: values[MODALITIES.index(modality)] for tissue, values in CONTRAST.items()}

    flair, t1, t1ce, t2 = (column(m) for m in MODALITIES)
    assert t1["wm"] > t1["gm"] > t1["csf"]
    assert t2["csf"] > max(t2["gm"], t2["wm"], t2["edema"], t2["solid"])
    assert flair["csf"] < min(flair["gm"], flair["wm"])
    assert min(flair["edema"], flair["solid"]) > max(flair["gm"], flair["wm"])
    assert t1ce["enhancing"] > t1ce["wm"] > t1["enhancing"]
    assert all(abs(t1ce[t] - t1[t]) < 0.05 for t in CONTRAST if t != "enhancing")


def test_acquisition_of_another_site():
    assert Acquisition().tissue_contrast() is CONTRAST  # the built-in site is the table itself
    flat = Acquisition(contrast=0.5).tissue_contrast()
    for m in range(4):
        mean = np.mean([values[m] for values in CONTRAST.values()])
        for tissue, values in CONTRAST.items():
            assert flat[tissue][m] == pytest.approx(mean + 0.5 * (values[m] - mean))
    # Another site: the same patient (anatomy and tumour), other intensities.
    rng = lambda: np.random.default_rng(subject_seed(7, "HGG", 2))  # noqa: E731
    here, seg_here = synthesize_subject("HGG", TINY_SHAPE, rng())
    there, seg_there = synthesize_subject("HGG", TINY_SHAPE, rng(), Acquisition(0.8, (0.2, 0.3), (0.05, 0.06)))
    assert np.array_equal(seg_here, seg_there) and not np.array_equal(here, there)


def test_lesion_is_bright_on_flair():
    images, seg = subject("LGG", 3)
    flair = images[MODALITIES.index("flair")]
    normal = (flair > 0) & (seg == 0)
    assert np.median(flair[seg > 0]) > np.percentile(flair[normal], 75)


def test_same_patient_at_any_resolution():
    """Anatomy is drawn in millimetres: only sampling and noise depend on the shape."""
    centres = []
    for shape in ((64, 64, 40), (96, 96, 64)):
        _, seg = subject("HGG", 5, shape=shape)
        voxel = np.array(FOV_MM) / np.array(shape)
        centres.append((np.argwhere(seg > 0).mean(axis=0) + 0.5) * voxel)
    assert np.abs(centres[0] - centres[1]).max() < 3.0


def test_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        synthesize_subject("GBM", BASELINE_SHAPE, rng)
    with pytest.raises(ValueError):
        synthesize_subject("HGG", (8, 64, 40), rng)
    with pytest.raises(ValueError):
        synthesize_subject("HGG", (64, 64), rng)


# -- files -----------------------------------------------------------------------------------


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort") / "synthetic"
    cases = synthesize_cohort(out, n_hgg=3, n_lgg=2, shape=TINY_SHAPE, seed=11)
    return out, cases


def test_layout_and_names(tiny_cohort):
    out, cases = tiny_cohort
    assert cases == ["SynBraTS_HGG_001", "SynBraTS_HGG_002", "SynBraTS_HGG_003", "SynBraTS_LGG_001", "SynBraTS_LGG_002"]
    assert sorted(p.name for p in out.iterdir()) == ["HGG", "LGG"]
    for case in cases:
        grade = case.split("_")[1]
        case_dir = out / grade / case
        assert sorted(p.name for p in case_dir.iterdir()) == sorted(f"{case}_{m}.nii.gz" for m in (*MODALITIES, "seg"))
    # Nothing left beside the output (the temporary build folder was renamed).
    assert [p.name for p in out.parent.iterdir()] == ["synthetic"]


def test_nifti_headers(tiny_cohort):
    out, _ = tiny_cohort
    case_dir = out / "HGG" / "SynBraTS_HGG_001"
    voxel = np.array(FOV_MM) / np.array(TINY_SHAPE)
    for name in (*MODALITIES, "seg"):
        path = case_dir / f"SynBraTS_HGG_001_{name}.nii.gz"
        image = nib.load(path)
        assert image.shape == TINY_SHAPE
        assert image.get_data_dtype() == (np.uint8 if name == "seg" else np.int16)
        np.testing.assert_allclose(image.header.get_zooms(), voxel, rtol=1e-6)
        np.testing.assert_allclose(np.diag(image.affine)[:3], voxel)
        assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
        data = np.asanyarray(image.dataobj)
        if name == "seg":
            assert set(np.unique(data)) <= {0, 1, 2, 4}
        else:
            assert data.min() == 0 and data.max() > 100
        raw = path.read_bytes()
        assert raw[:2] == b"\x1f\x8b"
        assert raw[4:8] == b"\0\0\0\0"  # gzip mtime 0
        assert raw[3] & 0x08 == 0  # no file name stored
        assert len(gzip.decompress(raw)) > 0


def test_files_are_bit_identical_and_independent_of_workers(tiny_cohort, tmp_path):
    out, _ = tiny_cohort
    reference = files_of(out)
    synthesize_cohort(tmp_path / "again", n_hgg=3, n_lgg=2, shape=TINY_SHAPE, seed=11, workers=2)
    assert files_of(tmp_path / "again") == reference


def test_subject_does_not_depend_on_cohort_size(tiny_cohort, tmp_path):
    out, _ = tiny_cohort
    reference = files_of(out)
    synthesize_cohort(tmp_path / "smaller", n_hgg=1, n_lgg=1, shape=TINY_SHAPE, seed=11)
    smaller = files_of(tmp_path / "smaller")
    assert len(smaller) == 10
    assert all(reference[name] == data for name, data in smaller.items())


def test_other_seed_differs(tiny_cohort, tmp_path):
    out, _ = tiny_cohort
    reference = files_of(out)
    synthesize_cohort(tmp_path / "other", n_hgg=3, n_lgg=2, shape=TINY_SHAPE, seed=12)
    other = files_of(tmp_path / "other")
    assert other.keys() == reference.keys()
    assert all(other[name] != reference[name] for name in reference)


def test_case_prefix(tmp_path):
    cases = synthesize_cohort(tmp_path / "site", n_hgg=1, n_lgg=1, shape=TINY_SHAPE, seed=2, prefix="SynExt")
    assert cases == ["SynExt_HGG_001", "SynExt_LGG_001"]
    assert (tmp_path / "site/LGG/SynExt_LGG_001/SynExt_LGG_001_flair.nii.gz").is_file()


def test_existing_output(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert synthesize_cohort(empty, n_hgg=1, n_lgg=0, shape=TINY_SHAPE, seed=0) == ["SynBraTS_HGG_001"]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(GliomilError, match="not empty"):
        synthesize_cohort(busy, n_hgg=1, n_lgg=1, shape=TINY_SHAPE, seed=0)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("workers", [1, 2])
def test_failure_leaves_nothing_behind(tmp_path, monkeypatch, workers):
    real_write = synthetic.write_case

    def failing_write(case_dir, case, images, seg):
        if case == "SynBraTS_HGG_003":
            raise RuntimeError("disk full")
        real_write(case_dir, case, images, seg)

    # Forked workers inherit the patched module.
    monkeypatch.setattr(synthetic, "write_case", failing_write)
    with pytest.raises(RuntimeError, match="disk full"):
        synthesize_cohort(tmp_path / "synthetic", n_hgg=4, n_lgg=2, shape=TINY_SHAPE, seed=0, workers=workers)
    assert list(tmp_path.iterdir()) == []


def test_bad_cohort_params(tmp_path):
    with pytest.raises(ValueError):
        synthesize_cohort(tmp_path / "a", n_hgg=0, n_lgg=0, shape=TINY_SHAPE, seed=0)
    with pytest.raises(ValueError):
        synthesize_cohort(tmp_path / "b", n_hgg=1, n_lgg=1, shape=TINY_SHAPE, seed=0, workers=0)
    with pytest.raises(ValueError):
        synthesize_cohort(tmp_path / "c", n_hgg=1, n_lgg=1, shape=(32, 32, 8), seed=0)
    assert list(tmp_path.iterdir()) == []
