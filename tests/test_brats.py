"""Tests for gliomil.data.brats: subject discovery in each layout, file resolution and load checks."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from gliomil.data.brats import DEFAULT_SUFFIXES, Subject, find_subjects, load_subject, resolve_files
from gliomil.errors import GliomilError, InputError
from gliomil.vocabulary import MODALITIES

SHAPE = (12, 10, 8)
MAPPING_HEADER = (
    "Grade,BraTS_2017_subject_ID,BraTS_2018_subject_ID,TCGA_TCIA_subject_ID,BraTS_2019_subject_ID,BraTS_2020_subject_ID"
)


def brain(shape=SHAPE, value=100.0) -> np.ndarray:
    """A float32 volume, zero outside a central box (the 'brain')."""
    data = np.zeros(shape, dtype=np.float32)
    data[2:-2, 2:-2, 2:-2] = value
    return data


def tumour(shape=SHAPE) -> np.ndarray:
    """A uint8 seg with labels 1, 2 and 4 inside the brain box."""
    seg = np.zeros(shape, dtype=np.uint8)
    seg[4, 4, 4], seg[5, 4, 4], seg[6, 4, 4] = 1, 2, 4
    return seg


def save(data, path: Path, affine=None) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), path)
    return path


def write_case(directory: Path, case: str, ext=".nii.gz", suffixes=DEFAULT_SUFFIXES, with_seg=True) -> Path:
    """A case folder holding four distinct modalities (channel i is 100 * (i + 1)) and a seg."""
    folder = directory / case
    folder.mkdir(parents=True)
    for channel, key in enumerate(MODALITIES):
        save(brain(value=100.0 * (channel + 1)), folder / f"{case}_{suffixes[key]}{ext}")
    if with_seg:
        save(tumour(), folder / f"{case}_{suffixes['seg']}{ext}")
    return folder


def write_mapping(root: Path, rows: list[str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "name_mapping.csv").write_text("\n".join([MAPPING_HEADER, *rows]) + "\n")


def one_subject(tmp_path: Path, case="Brats18_X") -> Subject:
    return Subject(case, "HGG", case, write_case(tmp_path, case))


def expect_input_error(subject: Subject, path: Path, *problem_words: str) -> InputError:
    """load_subject's error, after checking it names the subject, the file and the problem."""
    with pytest.raises(InputError, match=f"^{re.escape(f'{subject.subject_id}: {path}: ')}") as caught:
        load_subject(subject)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{subject.subject_id}: {path}: ")
    for word in problem_words:
        assert word in caught.value.problem
    return caught.value


# ----------------------------------------------------------------------------- layouts


def test_brats2018_layout(tmp_path):
    write_case(tmp_path / "HGG", "Brats18_CBICA_AAB_1")
    write_case(tmp_path / "HGG", "Brats18_2013_2_1")
    write_case(tmp_path / "LGG", "Brats18_2013_0_1")
    (tmp_path / "HGG" / ".DS_Store").write_text("")

    subjects = find_subjects(tmp_path, layout="brats2018")

    assert [(s.subject_id, s.grade, s.patient_id) for s in subjects] == [
        ("Brats18_2013_0_1", "LGG", "Brats18_2013_0_1"),
        ("Brats18_2013_2_1", "HGG", "Brats18_2013_2_1"),
        ("Brats18_CBICA_AAB_1", "HGG", "Brats18_CBICA_AAB_1"),
    ]
    assert subjects[0].directory == tmp_path / "LGG" / "Brats18_2013_0_1"
    assert find_subjects(tmp_path) == subjects


def test_brats2020_layout_groups_patients_and_finds_segm_quirk(tmp_path):
    write_mapping(
        tmp_path,
        [
            "HGG,Brats17_A,Brats18_A,NA,BraTS19_A,BraTS20_Training_001",
            # 002 and 003 share a TCGA id; 003 and 004 share a 2019 id: one patient, transitively.
            "HGG,NA,NA,TCGA-02-0001,BraTS19_B,BraTS20_Training_003",
            "LGG,,,TCGA-02-0001,,BraTS20_Training_002",
            "HGG,NA,Brats18_C,,BraTS19_B,BraTS20_Training_004",
            "LGG,NA,NA,NA,NA,BraTS20_Training_355",
        ],
    )
    for case in ("BraTS20_Training_001", "BraTS20_Training_002"):
        write_case(tmp_path, case)
    quirk = write_case(tmp_path, "BraTS20_Training_355", ext=".nii", with_seg=False)
    save(tumour(), quirk / "W39_1998.09.19_Segm.nii")

    subjects = find_subjects(tmp_path)

    assert [(s.subject_id, s.grade, s.patient_id) for s in subjects] == [
        ("BraTS20_Training_001", "HGG", "BraTS20_Training_001"),
        ("BraTS20_Training_002", "LGG", "BraTS20_Training_002"),
        ("BraTS20_Training_003", "HGG", "BraTS20_Training_002"),
        ("BraTS20_Training_004", "HGG", "BraTS20_Training_002"),
        ("BraTS20_Training_355", "LGG", "BraTS20_Training_355"),
    ]
    files = resolve_files(subjects[-1])
    assert files["seg"] == quirk / "W39_1998.09.19_Segm.nii"
    assert files["flair"] == quirk / "BraTS20_Training_355_flair.nii"
    np.testing.assert_array_equal(load_subject(subjects[-1]).seg, tumour())


def test_csv_layout_with_and_without_patient_id(tmp_path):
    with_patients, without = tmp_path / "a", tmp_path / "b"
    with_patients.mkdir()
    (with_patients / "labels.csv").write_text("subject_id,grade,patient_id\ns2,LGG,p1\ns1,HGG,p1\ns3,HGG,\n")
    without.mkdir()
    (without / "labels.csv").write_text("subject_id,grade\ns1,HGG\ns2,LGG\n")

    assert [(s.subject_id, s.grade, s.patient_id) for s in find_subjects(with_patients, "csv")] == [
        ("s1", "HGG", "p1"),
        ("s2", "LGG", "p1"),
        ("s3", "HGG", "s3"),
    ]
    subjects = find_subjects(without)
    assert [(s.subject_id, s.patient_id, s.directory) for s in subjects] == [
        ("s1", "s1", without / "s1"),
        ("s2", "s2", without / "s2"),
    ]


def test_uncompressed_files_and_custom_suffixes_load(tmp_path):
    suffixes = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w", "seg": "seg"}
    (tmp_path / "labels.csv").write_text("subject_id,grade\nBraTS-GLI-00000-000,HGG\n")
    write_case(tmp_path, "BraTS-GLI-00000-000", ext=".nii", suffixes=suffixes)

    (subject,) = find_subjects(tmp_path)
    volumes = load_subject(subject, suffixes)

    assert volumes.files["t1ce"].name == "BraTS-GLI-00000-000_t1c.nii"
    assert volumes.images.shape == (4, *SHAPE) and volumes.images.dtype == np.float32
    assert volumes.seg.dtype == np.uint8
    # Channels follow MODALITIES order, whatever the suffixes are called.
    assert [float(volumes.images[c].max()) for c in range(4)] == [100.0, 200.0, 300.0, 400.0]
    with pytest.raises(InputError, match="missing flair file"):
        resolve_files(subject)


def test_load_subject_returns_checked_volumes(tmp_path):
    volumes = load_subject(one_subject(tmp_path))

    assert volumes.images.shape == (4, *SHAPE)
    np.testing.assert_array_equal(volumes.images[2], brain(value=300.0))
    np.testing.assert_array_equal(volumes.seg, tumour())
    np.testing.assert_array_equal(volumes.affine, np.eye(4))
    assert set(volumes.files) == {*MODALITIES, "seg"}
    # NIfTI's x-fastest order is kept: no transposing copies, contiguous axial slices.
    assert volumes.seg.flags.f_contiguous
    assert all(channel.flags.f_contiguous for channel in volumes.images)


# ----------------------------------------------------------------------------- subject errors


def test_missing_root(tmp_path):
    with pytest.raises(GliomilError, match="does not exist"):
        find_subjects(tmp_path / "nowhere")


def test_unrecognised_layout_says_what_was_looked_for(tmp_path):
    with pytest.raises(GliomilError, match="name_mapping.csv.*labels.csv.*HGG/ or LGG/"):
        find_subjects(tmp_path)
    with pytest.raises(ValueError, match="unknown data layout"):
        find_subjects(tmp_path, layout="brats2015")


def test_unknown_grade_in_labels_file(tmp_path):
    (tmp_path / "labels.csv").write_text("subject_id,grade\ns1,HGG\ns2,GBM\n")
    with pytest.raises(GliomilError, match=r"labels.csv: subject s2 has grade 'GBM'; expected HGG or LGG"):
        find_subjects(tmp_path)


def test_labels_file_missing_columns(tmp_path):
    (tmp_path / "labels.csv").write_text("case,grade\ns1,HGG\n")
    with pytest.raises(GliomilError, match="missing column\\(s\\) subject_id"):
        find_subjects(tmp_path)
    write_mapping(tmp_path / "b", [])
    (tmp_path / "b" / "name_mapping.csv").write_text("Grade,BraTS_2020_subject_ID\nHGG,x\n")
    with pytest.raises(GliomilError, match="missing column\\(s\\) BraTS_2017_subject_ID"):
        find_subjects(tmp_path / "b")


def test_duplicate_ids_and_empty_layouts(tmp_path):
    write_case(tmp_path / "HGG", "case1")
    write_case(tmp_path / "LGG", "case1")
    with pytest.raises(GliomilError, match="duplicate subject id\\(s\\): case1"):
        find_subjects(tmp_path)
    (tmp_path / "empty" / "HGG").mkdir(parents=True)
    with pytest.raises(GliomilError, match="no subjects found"):
        find_subjects(tmp_path / "empty")


def test_subject_id_must_be_a_plain_folder_name(tmp_path):
    (tmp_path / "labels.csv").write_text("subject_id,grade\n../outside,HGG\n")
    with pytest.raises(GliomilError, match="not a plain folder name"):
        find_subjects(tmp_path)


# ----------------------------------------------------------------------------- file errors


def test_missing_folder_and_missing_modality(tmp_path):
    ghost = Subject("ghost", "HGG", "ghost", tmp_path / "ghost")
    expect_input_error(ghost, tmp_path / "ghost", "subject folder does not exist")

    subject = one_subject(tmp_path)
    (subject.directory / "Brats18_X_t1ce.nii.gz").unlink()
    expect_input_error(subject, subject.directory / "Brats18_X_t1ce.nii.gz", "missing t1ce file")


def test_both_compressed_and_plain_present(tmp_path):
    subject = one_subject(tmp_path)
    save(brain(), subject.directory / "Brats18_X_t2.nii")
    expect_input_error(subject, subject.directory / "Brats18_X_t2.nii.gz", "Brats18_X_t2.nii also exists")


def test_ambiguous_segm_stand_in(tmp_path):
    subject = one_subject(tmp_path)
    (subject.directory / "Brats18_X_seg.nii.gz").unlink()
    for name in ("a_Segm.nii", "bSegm.nii.gz"):
        save(tumour(), subject.directory / name)
    expect_input_error(subject, subject.directory / "Brats18_X_seg.nii.gz", "a_Segm.nii, bSegm.nii.gz")


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", ["cannot read as NIfTI"]),
        (b"this is not an image", ["cannot read as NIfTI"]),
        (None, ["cannot read image data"]),  # valid header, data cut short
    ],
)
def test_unreadable_file(tmp_path, content, words):
    subject = one_subject(tmp_path)
    path = subject.directory / "Brats18_X_t1.nii.gz"
    if content is None:
        save(np.random.default_rng(0).random(SHAPE).astype(np.float32), path)
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    expect_input_error(subject, path, *words)


def test_truncated_uncompressed_file(tmp_path):
    subject = one_subject(tmp_path)
    (subject.directory / "Brats18_X_flair.nii.gz").unlink()
    path = save(brain(), subject.directory / "Brats18_X_flair.nii")
    path.write_bytes(path.read_bytes()[:400])
    expect_input_error(subject, path, "cannot read image data")


def test_real_4d_image_is_an_error_but_singleton_4th_dim_is_squeezed(tmp_path):
    subject = one_subject(tmp_path)
    path = subject.directory / "Brats18_X_t2.nii.gz"
    save(brain()[..., None], path)
    assert load_subject(subject).images.shape == (4, *SHAPE)

    save(np.stack([brain(), brain()], axis=-1), path)
    expect_input_error(subject, path, "shape (12, 10, 8, 2) is not a 3D volume")


def test_shape_mismatch(tmp_path):
    subject = one_subject(tmp_path)
    path = save(brain((12, 10, 7)), subject.directory / "Brats18_X_t1ce.nii.gz")
    error = expect_input_error(subject, path)
    assert error.problem == "shape (12, 10, 7) differs from flair's (12, 10, 8)"


def test_affine_mismatch(tmp_path):
    subject = one_subject(tmp_path)
    shifted = np.eye(4)
    shifted[0, 3] = 1.0
    path = save(tumour(), subject.directory / "Brats18_X_seg.nii.gz", affine=shifted)
    expect_input_error(subject, path, "affine differs from flair's", "1 mm")

    # Sub-micrometre differences (float32 header rounding) are the same grid.
    shifted[0, 3] = 1e-4
    save(tumour(), path, affine=shifted)
    load_subject(subject)


def test_nan_values(tmp_path):
    subject = one_subject(tmp_path)
    data = brain()
    data[0, 0, :3] = [np.nan, np.inf, -np.inf]
    path = save(data, subject.directory / "Brats18_X_t2.nii.gz")
    expect_input_error(subject, path, "3 voxel(s) are NaN or infinite")


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_float64_values_beyond_float32_are_not_finite(tmp_path):
    subject = one_subject(tmp_path)
    data = brain().astype(np.float64)
    data[0, 0, 0] = 1e300  # becomes inf in the float32 volumes
    path = save(data, subject.directory / "Brats18_X_t1.nii.gz")
    expect_input_error(subject, path, "1 voxel(s) are NaN or infinite")


def test_empty_brain(tmp_path):
    subject = one_subject(tmp_path)
    for key in MODALITIES:
        save(np.zeros(SHAPE, np.float32), subject.directory / f"Brats18_X_{key}.nii.gz")
    expect_input_error(subject, subject.directory / "Brats18_X_flair.nii.gz", "empty brain mask")


@pytest.mark.parametrize(
    "dtype, bad_labels, listed",
    [
        (np.uint8, (3,), "3"),
        (np.uint8, (7, 3), "3, 7"),
        (np.int16, (5, -1), "-1, 5"),
        (np.float32, (3,), "3"),  # float seg: rounded first, then the same check
    ],
)
def test_unexpected_seg_labels(tmp_path, dtype, bad_labels, listed):
    subject = one_subject(tmp_path)
    seg = tumour().astype(dtype)
    seg[0, 0, : len(bad_labels)] = bad_labels
    path = save(seg, subject.directory / "Brats18_X_seg.nii.gz")
    error = expect_input_error(subject, path)
    assert error.problem == f"seg has labels {listed} outside {{0, 1, 2, 4}}"


def test_non_integer_seg_values(tmp_path):
    subject = one_subject(tmp_path)
    seg = tumour().astype(np.float32)
    seg[0, 0, 0] = 1.5
    path = save(seg, subject.directory / "Brats18_X_seg.nii.gz")
    expect_input_error(subject, path, "non-integer values 1.5")


# ----------------------------------------------------------------------------- orientation and scaling


def test_seg_with_scl_slope_is_scaled_then_rounded(tmp_path):
    subject = one_subject(tmp_path)
    stored = (tumour() * 10).astype(np.float32)  # 10, 20, 40 on disk
    image = nib.Nifti1Image(stored, np.eye(4))
    image.header.set_slope_inter(0.1, 0.0)  # float32(0.1) * 40 = 4.0000001: rounding needed
    nib.save(image, subject.directory / "Brats18_X_seg.nii.gz")

    volumes = load_subject(subject)

    assert volumes.seg.dtype == np.uint8
    np.testing.assert_array_equal(volumes.seg, tumour())


def test_modality_with_scl_slope_and_inter_is_rescaled(tmp_path):
    subject = one_subject(tmp_path)
    image = nib.Nifti1Image((brain() / 100).astype(np.int16), np.eye(4))  # 1 in the brain box
    image.header.set_slope_inter(2.5, 10.0)
    nib.save(image, subject.directory / "Brats18_X_t1ce.nii.gz")

    volumes = load_subject(subject)

    np.testing.assert_array_equal(volumes.images[2], np.where(brain() > 0, 12.5, 10.0))
    assert volumes.images.dtype == np.float32


def test_las_image_comes_back_flipped_to_ras(tmp_path):
    subject = one_subject(tmp_path)
    las = np.diag([-2.0, 2.0, 3.0, 1.0])
    las[:3, 3] = [30.0, -20.0, 5.0]
    for key in (*MODALITIES, "seg"):
        path = subject.directory / f"Brats18_X_{key}.nii.gz"
        original = np.asanyarray(nib.load(path).dataobj)
        save(original, path, affine=las)

    volumes = load_subject(subject)

    assert nib.aff2axcodes(volumes.affine) == ("R", "A", "S")
    np.testing.assert_array_equal(volumes.images[0], brain(value=100.0)[::-1])
    np.testing.assert_array_equal(volumes.seg, tumour()[::-1])
    # Voxel (0, 0, 0) now sits where the last x voxel used to be.
    np.testing.assert_allclose(volumes.affine @ [0, 0, 0, 1], las @ [SHAPE[0] - 1, 0, 0, 1])


def test_nibabel_anatomical_loads_as_ras_float32(tmp_path):
    source = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
    if not source.is_file():
        pytest.skip("nibabel's test data is not installed")
    anatomical = nib.load(source)
    assert nib.aff2axcodes(anatomical.affine) == ("L", "A", "S")
    folder = tmp_path / "anat"
    folder.mkdir()
    for key in MODALITIES:
        (folder / f"anat_{key}.nii").write_bytes(source.read_bytes())
    zero_seg = np.zeros(anatomical.shape, dtype=anatomical.get_data_dtype())
    nib.save(nib.Nifti1Image(zero_seg, anatomical.affine, anatomical.header), folder / "anat_seg.nii")

    volumes = load_subject(Subject("anat", "LGG", "anat", folder))

    canonical = nib.as_closest_canonical(anatomical)
    assert nib.aff2axcodes(volumes.affine) == ("R", "A", "S")
    np.testing.assert_allclose(volumes.affine, canonical.affine)
    assert volumes.images.dtype == np.float32 and volumes.images.shape == (4, 33, 41, 25)
    for channel in range(4):
        np.testing.assert_array_equal(volumes.images[channel], canonical.get_fdata())
    assert volumes.seg.shape == (33, 41, 25) and not volumes.seg.any()


def test_suffixes_must_name_exactly_the_five_files(tmp_path):
    subject = Subject("s1", "HGG", "s1", write_case(tmp_path, "s1"))
    with pytest.raises(ValueError, match="missing: seg; unknown: mask"):
        resolve_files(subject, {**{key: key for key in MODALITIES}, "mask": "seg"})
