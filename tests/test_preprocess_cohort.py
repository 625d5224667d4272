"""preprocess_cohort on real NIfTI files: outputs, determinism, fail/skip behaviour."""

import filecmp

import numpy as np
import pytest

from gliomil.data.brats import find_subjects
from gliomil.data.preprocess import PreprocessSettings, preprocess_cohort
from gliomil.data.slices import load_bag, load_verified_tumour_map, read_manifest, read_slice_table
from gliomil.errors import GliomilError

SETTINGS = PreprocessSettings(image_size=16)
SUFFIXES = {"flair": "flair", "t1": "t1", "t1ce": "t1ce", "t2": "t2", "seg": "seg"}


@pytest.fixture(scope="module")
def preprocessed(tiny_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "preprocessed"
    report = preprocess_cohort(find_subjects(tiny_cohort), out, SETTINGS, SUFFIXES, workers=2, progress=False)
    return out, report


def test_manifest_and_slices_describe_every_subject(preprocessed, tiny_cohort):
    out, report = preprocessed
    manifest = read_manifest(out)
    assert report.subjects_found == 14 and report.skipped == []
    assert list(manifest.columns) == [
        "subject_id",
        "patient_id",
        "grade",
        "site",
        "label",
        "n_slices",
        "slices_file",
        "content_sha256",
        "tumour_map_sha256",
        "source_files",
    ]
    assert (manifest["label"] == (manifest["grade"] == "HGG").astype(int)).all()
    assert set(manifest["site"]) == {"unknown"}  # the built-in cohort's ids name no site
    # the fingerprint measured on the way: one row and one thumbnail per kept subject, in manifest order
    assert report.fingerprint["subject_id"].tolist() == manifest["subject_id"].tolist()
    assert (report.fingerprint["n_slices"] == manifest["n_slices"]).all()
    assert report.fingerprint["brain_ml"].gt(0).all() and report.thumbnails.shape[0] == len(manifest)
    slices = read_slice_table(out)
    for row in manifest.itertuples():
        bag = load_bag(out, row.subject_id)
        assert isinstance(bag, np.memmap) and bag.dtype == np.float16
        assert bag.shape == (row.n_slices, 4, 16, 16)
        assert np.isfinite(bag).all()
        rows = slices[slices["subject_id"] == row.subject_id]
        assert rows["slice"].tolist() == list(range(row.n_slices))
        assert rows["tumour_fraction"].between(0, 1).all()
        assert (rows["tumour_fraction"] > 0).any(), "every synthetic subject has a tumour"
        # the tumour maps: each region of the segmentation resized like the slices, 255 x each pixel's share
        tumour_map = load_verified_tumour_map(out, row.subject_id, row.tumour_map_sha256)
        assert tumour_map.shape == (row.n_slices, 3, 16, 16) and tumour_map.dtype == np.uint8
        has_tumour = rows["tumour_fraction"].to_numpy() > 0
        assert not tumour_map[~has_tumour].any(), "no tumour on a slice without tumour"
        assert tumour_map[has_tumour, 0].any(axis=(1, 2)).mean() > 0.9
        assert all(str(tiny_cohort) in f for f in row.source_files.split(";"))


def test_output_is_identical_for_one_and_two_workers(preprocessed, tiny_cohort, tmp_path):
    out, _ = preprocessed
    serial = tmp_path / "serial"
    preprocess_cohort(find_subjects(tiny_cohort), serial, SETTINGS, SUFFIXES, workers=1, progress=False)
    compare = filecmp.dircmp(out, serial)
    assert compare.left_only == compare.right_only == compare.diff_files == []
    slice_files = sorted(p.name for p in (out / "slices").iterdir())
    assert filecmp.cmpfiles(out / "slices", serial / "slices", slice_files, shallow=False)[0] == slice_files


def test_fail_mode_names_subject_and_file_and_leaves_nothing(copy_of_tiny_cohort, tmp_path):
    case = sorted((copy_of_tiny_cohort / "HGG").iterdir())[1]
    (case / f"{case.name}_t2.nii.gz").unlink()
    out = tmp_path / "preprocessed"
    with pytest.raises(GliomilError, match=f"{case.name}.*t2") as info:
        preprocess_cohort(find_subjects(copy_of_tiny_cohort), out, SETTINGS, SUFFIXES, workers=2, progress=False)
    message = str(info.value)
    assert case.name in message and "t2" in message and "\n" not in message
    assert [p.name for p in tmp_path.iterdir()] == [copy_of_tiny_cohort.name], "no output, no temporary folder"


def test_skip_mode_lists_the_bad_subject(copy_of_tiny_cohort, tmp_path):
    case = sorted((copy_of_tiny_cohort / "LGG").iterdir())[0]
    (case / f"{case.name}_flair.nii.gz").write_bytes(b"\x1f\x8b truncated")
    report = preprocess_cohort(
        find_subjects(copy_of_tiny_cohort),
        tmp_path / "pre",
        SETTINGS,
        SUFFIXES,
        on_error="skip",
        workers=1,
        progress=False,
    )
    assert [s for s, _ in report.skipped] == [case.name]
    assert f"{case.name}_flair.nii.gz" in report.skipped[0][1]
    assert case.name not in set(report.manifest["subject_id"]) and len(report.manifest) == 13


def test_incomplete_suffixes_fail_before_any_work_even_in_skip_mode(tiny_cohort, tmp_path):
    suffixes = {key: value for key, value in SUFFIXES.items() if key != "seg"}
    with pytest.raises(ValueError, match="missing: seg"):
        preprocess_cohort(
            find_subjects(tiny_cohort), tmp_path / "pre", SETTINGS, suffixes, on_error="skip", workers=2, progress=False
        )
    assert list(tmp_path.iterdir()) == []
