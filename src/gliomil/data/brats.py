"""Find BraTS-style subjects on disk and load one subject's checked, co-registered volumes.

Layouts understood by :func:`find_subjects`:

* ``brats2018`` (BraTS 2018/2019): ``<root>/{HGG,LGG}/<case>/<case>_<suffix>.nii[.gz]``.
* ``brats2020``: flat ``<root>/<case>/`` folders plus ``<root>/name_mapping.csv``, whose
  cross-year ID columns tie repeated scans of one patient together.
* ``csv``: ``<root>/labels.csv`` (``subject_id,grade[,patient_id][,site]``) plus ``<root>/<subject_id>/``.

Every subject gets its contributing site (:mod:`gliomil.data.sites`): from the ``site`` column, the id, or BraTS
2020's ``name_mapping.csv``; ``unknown`` where none says.

:func:`find_cases` also accepts cases whose grade is unknown (what ``gliomil predict`` scores): one case
folder, a folder of case folders, or a folder of loose ``<case>_<suffix>.nii[.gz]`` files.

:func:`load_subject` returns the four modalities and the segmentation in canonical RAS
orientation, or raises :class:`~gliomil.errors.InputError` naming the subject, the file and
the first problem found.
"""

from __future__ import annotations

import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError

from gliomil.data.sites import UNKNOWN_SITE, check_site, site_from_id, site_from_name_mapping
from gliomil.errors import GliomilError, InputError
from gliomil.vocabulary import GRADES, LAYOUTS, MODALITIES, SEGMENTATION

# The files of a subject: one per modality plus the segmentation, each found by its file-name suffix.
SUFFIX_KEYS = (*MODALITIES, SEGMENTATION)
DEFAULT_SUFFIXES = {key: key for key in SUFFIX_KEYS}
SEG_LABELS = (0, 1, 2, 4)

NAME_MAPPING = "name_mapping.csv"
LABELS_FILE = "labels.csv"
BRATS2020_ID_COLUMN = "BraTS_2020_subject_ID"
CROSS_YEAR_ID_COLUMNS = (
    "BraTS_2017_subject_ID",
    "BraTS_2018_subject_ID",
    "TCGA_TCIA_subject_ID",
    "BraTS_2019_subject_ID",
)

AFFINE_TOLERANCE_MM = 1e-3
# Seg values within this distance of a whole number are float noise from scl_slope/inter.
LABEL_ROUNDING_TOLERANCE = 1e-3
# numpy dtype kinds of stored data that are whole numbers: bool, signed and unsigned integers.
_INTEGER_KINDS = "biu"
# Everything nibabel, gzip and numpy raise for a file that is not a readable NIfTI image
# (wrong format, bad gzip stream, truncated data, inconsistent header).
_UNREADABLE_ERRORS = (ImageFileError, HeaderDataError, OSError, EOFError, ValueError, zlib.error)


@dataclass(frozen=True)
class Subject:
    """One imaging case: ``directory`` holds its ``<subject_id>_<suffix>.nii[.gz]`` files."""

    subject_id: str
    grade: str | None  # "HGG" or "LGG"; None for a case to predict whose grade is unknown
    patient_id: str  # subjects sharing it are the same patient; defaults to subject_id
    directory: Path
    site: str = UNKNOWN_SITE  # the contributing site (gliomil.data.sites), "unknown" where nothing names it


@dataclass
class Volumes:
    """One subject's checked volumes, all on the same voxel grid in canonical RAS orientation.

    images: float32 (4, X, Y, Z), channels in MODALITIES order, scanner intensities.
    seg:    uint8 (X, Y, Z), labels within {0, 1, 2, 4}; None when the case has no segmentation.
    Each channel and the seg are stored x-fastest (Fortran order), as NIfTI stores voxels: reading
    needs no transposing copy, and every axial slice [:, :, z] is one contiguous block.
    affine: float64 (4, 4), voxel -> world (mm), RAS+ axes.
    files:  the source file of each key in flair, t1, t1ce, t2 and seg (when there is one).
    orientation: int (3, 2), nibabel's orientation of the stored voxel axes: row i says which RAS axis
        stored axis i became and whether it was flipped (-1).
    stored_shape: (3,) voxels of the files as stored.
    """

    images: np.ndarray
    seg: np.ndarray | None
    affine: np.ndarray
    files: dict[str, Path]
    orientation: np.ndarray
    stored_shape: tuple[int, int, int]

    def stored_axial_index(self, z) -> np.ndarray:
        """Canonical axial indices ``z`` (int array) as indices along the stored volume's voxel axis that runs
        inferior-superior: the slice numbers a viewer of the original file shows (0-based)."""
        axis = int(np.flatnonzero(self.orientation[:, 0] == 2)[0])
        z = np.asarray(z)
        return z if self.orientation[axis, 1] > 0 else self.stored_shape[axis] - 1 - z


# ----------------------------------------------------------------------------- subjects


def find_subjects(root, layout: str = "auto") -> list[Subject]:
    """Subjects under ``root`` sorted by subject_id.

    layout: auto | brats2018 | brats2020 | csv (see the module docstring).
    Raises ValueError for a layout not in LAYOUTS, and GliomilError (one line) if root is missing,
    the layout cannot be recognised, there are no subjects, ids repeat, a grade is not HGG/LGG, or a
    labels file lacks columns.
    Subject folders are not opened here; :func:`resolve_files` reports missing ones.
    """
    readers = {"brats2018": _brats2018_subjects, "brats2020": _brats2020_subjects, "csv": _csv_subjects}
    if layout != "auto" and layout not in readers:
        raise ValueError(f"unknown data layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    root = Path(root)
    if not root.is_dir():
        raise GliomilError(f"data root {root} does not exist or is not a folder")
    if layout == "auto":
        layout = detect_layout(root)
    subjects, source = readers[layout](root)
    return _validated(subjects, source)


def detect_layout(root: Path) -> str:
    """The layout of an existing folder: brats2020, csv or brats2018, checked in that order."""
    if (root / NAME_MAPPING).is_file():
        return "brats2020"
    if (root / LABELS_FILE).is_file():
        return "csv"
    if any((root / grade).is_dir() for grade in GRADES):
        return "brats2018"
    raise GliomilError(
        f"cannot recognise the data layout of {root}: looked for {NAME_MAPPING} (BraTS 2020), "
        f"{LABELS_FILE} (generic) and HGG/ or LGG/ folders (BraTS 2018/2019)"
    )


def _brats2018_subjects(root: Path) -> tuple[list[Subject], Path]:
    grade_dirs = [root / grade for grade in GRADES if (root / grade).is_dir()]
    if not grade_dirs:
        raise GliomilError(f"brats2018 layout needs an HGG/ or LGG/ folder in {root}; found neither")
    subjects = [
        Subject(case.name, grade_dir.name, case.name, case, site_from_id(case.name))
        for grade_dir in grade_dirs
        for case in grade_dir.iterdir()
        # Hidden entries are OS clutter (.DS_Store, ._ AppleDouble files), never cases.
        if case.is_dir() and not case.name.startswith(".")
    ]
    return subjects, root


def _brats2020_subjects(root: Path) -> tuple[list[Subject], Path]:
    path = root / NAME_MAPPING
    table = _read_table(path, ("Grade", *CROSS_YEAR_ID_COLUMNS, BRATS2020_ID_COLUMN))
    subject_ids = table[BRATS2020_ID_COLUMN].tolist()
    patient_ids = _group_patients(subject_ids, table[list(CROSS_YEAR_ID_COLUMNS)].values.tolist())
    sites = [site_from_name_mapping(row) for row in table.to_dict("records")]
    subjects = [
        Subject(subject_id, grade, patient_id, root / subject_id, site)
        for subject_id, grade, patient_id, site in zip(subject_ids, table["Grade"], patient_ids, sites)
    ]
    return subjects, path


def _csv_subjects(root: Path) -> tuple[list[Subject], Path]:
    path = root / LABELS_FILE
    table = _read_table(path, ("subject_id", "grade"))
    subject_ids = table["subject_id"].tolist()
    patient_ids = table["patient_id"].tolist() if "patient_id" in table.columns else subject_ids
    # Row numbers as a spreadsheet shows them: the header is row 1.
    named = (
        [check_site(cell, f"{path}: row {row + 2} ({subject_ids[row]})") for row, cell in enumerate(table["site"])]
        if "site" in table.columns
        else [""] * len(subject_ids)
    )
    subjects = [
        Subject(subject_id, grade, patient_id or subject_id, root / subject_id, site or site_from_id(subject_id))
        for subject_id, grade, patient_id, site in zip(subject_ids, table["grade"], patient_ids, named)
    ]
    return subjects, path


def _read_table(path: Path, required_columns: tuple[str, ...]) -> pd.DataFrame:
    """A CSV file as stripped strings; missing cells (empty, NA, ...) become ""."""
    if not path.is_file():
        raise GliomilError(f"{path} does not exist")
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark.
        table = pd.read_csv(path, dtype=str, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as error:
        raise GliomilError(f"{path}: cannot read as CSV ({_one_line(error)})") from error
    table.columns = [str(column).strip() for column in table.columns]
    missing = [column for column in required_columns if column not in table.columns]
    if missing:
        raise GliomilError(f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(table.columns)})")
    return table.fillna("").apply(lambda column: column.str.strip())


def _group_patients(subject_ids: list[str], linking_ids: list[list[str]]) -> list[str]:
    """Patient id of each row.

    Rows sharing any non-empty linking id are one patient, transitively (union-find);
    a group's patient id is its smallest subject id.
    """
    parent = list(range(len(subject_ids)))

    def group_of(row: int) -> int:
        while parent[row] != row:
            parent[row] = parent[parent[row]]
            row = parent[row]
        return row

    first_row_with: dict[str, int] = {}
    for row, values in enumerate(linking_ids):
        for value in filter(None, values):
            parent[group_of(row)] = group_of(first_row_with.setdefault(value, row))

    smallest: dict[int, str] = {}
    for row, subject_id in enumerate(subject_ids):
        group = group_of(row)
        smallest[group] = min(smallest.get(group, subject_id), subject_id)
    return [smallest[group_of(row)] for row in range(len(subject_ids))]


def check_case_id(name: str, source) -> None:
    """A subject id becomes a file and folder name, so it must be a plain name that stays where it is put."""
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise GliomilError(f"{source}: subject id {name!r} is not a plain folder name")


def _validated(subjects: list[Subject], source: Path) -> list[Subject]:
    """``subjects`` sorted by id, after checking ids and grades; ``source`` names the origin."""
    if not subjects:
        raise GliomilError(f"no subjects found in {source}")
    for subject in subjects:
        name = subject.subject_id
        check_case_id(name, source)
        if subject.grade is not None and subject.grade not in GRADES:
            raise GliomilError(f"{source}: subject {name} has grade {subject.grade!r}; expected HGG or LGG")
    duplicates = sorted(name for name, count in Counter(s.subject_id for s in subjects).items() if count > 1)
    if duplicates:
        raise GliomilError(f"{source}: duplicate subject id(s): {_listed(duplicates)}")
    return sorted(subjects, key=lambda subject: subject.subject_id)


def find_cases(root, layout: str = "auto", suffixes: dict[str, str] = DEFAULT_SUFFIXES) -> list[Subject]:
    """Cases to score under ``root``, sorted by id; a grade only where the folder gives one.

    A labelled layout (see :func:`find_subjects`) is read as such; a ``labels.csv`` without a ``grade`` column
    lists cases whose grade is unknown. Otherwise, with layout auto: the
    ``<case>_<flair suffix>.nii[.gz]`` files directly in ``root`` name its cases (one case folder, or loose
    files of several cases); failing that, every non-hidden sub-folder of ``root`` is one case, named by
    its flair file (or by the folder when it has none, which :func:`resolve_files` then reports).
    """
    root = Path(root)
    if not root.is_dir():
        raise GliomilError(f"{root} does not exist or is not a folder")
    labels = root / LABELS_FILE
    if layout in ("auto", "csv") and labels.is_file():
        table = _read_table(labels, ("subject_id",))
        if "grade" not in table.columns:  # a list of cases to score, grades unknown
            return _validated([Subject(s, None, s, root / s) for s in table["subject_id"]], labels)
    if layout != "auto" or any((root / name).exists() for name in (NAME_MAPPING, LABELS_FILE, *GRADES)):
        return find_subjects(root, layout)
    check_suffixes(suffixes)
    loose = _case_ids(root, suffixes["flair"])
    if loose:
        subjects = [Subject(case, None, case, root) for case in loose]
    else:
        subjects = []
        for folder in root.iterdir():
            if folder.is_dir() and not folder.name.startswith("."):
                ids = _case_ids(folder, suffixes["flair"])
                case = ids[0] if len(ids) == 1 else folder.name
                subjects.append(Subject(case, None, case, folder))
    if not subjects:
        raise GliomilError(
            f"no cases in {root}: found no *_{suffixes['flair']}.nii[.gz] file, no case folders and no "
            f"{NAME_MAPPING}, {LABELS_FILE} or HGG/LGG folders"
        )
    return _validated(subjects, root)


def _case_ids(folder: Path, flair_suffix: str) -> list[str]:
    """The ``<case>`` of every ``<case>_<flair_suffix>.nii[.gz]`` file in ``folder``."""
    ids = set()
    for ending in (".nii", ".nii.gz"):
        tail = f"_{flair_suffix}{ending}"
        ids |= {p.name[: -len(tail)] for p in folder.glob(f"*{tail}") if p.is_file() and len(p.name) > len(tail)}
    return sorted(ids)


# ----------------------------------------------------------------------------- files


def resolve_files(
    subject: Subject, suffixes: dict[str, str] = DEFAULT_SUFFIXES, seg_required: bool = True
) -> dict[str, Path]:
    """Existing file for each key flair, t1, t1ce, t2, seg: ``<dir>/<id>_<suffix>.nii[.gz]``.

    A seg file named ``*Segm.nii[.gz]`` stands in when the standard seg name is absent
    (BraTS 2020 case 355 ships ``W39_1998.09.19_Segm.nii``). Without ``seg_required`` a missing seg is
    left out of the result.
    Raises InputError for a missing folder or file, or when both .nii and .nii.gz exist.
    """
    check_suffixes(suffixes)
    if not subject.directory.is_dir():
        raise InputError(subject.subject_id, subject.directory, "subject folder does not exist")
    files = {}
    for key in SUFFIX_KEYS:
        path = _resolve_file(subject, key, suffixes[key], required=seg_required or key != SEGMENTATION)
        if path is not None:
            files[key] = path
    return files


def check_suffixes(suffixes: dict[str, str]) -> None:
    """Raise ValueError unless ``suffixes`` maps exactly the SUFFIX_KEYS."""
    missing = [key for key in SUFFIX_KEYS if key not in suffixes]
    unknown = [key for key in suffixes if key not in SUFFIX_KEYS]
    if missing or unknown:
        raise ValueError(
            f"file suffixes need exactly the keys {', '.join(SUFFIX_KEYS)}; "
            f"missing: {', '.join(missing) or 'none'}; unknown: {', '.join(unknown) or 'none'}"
        )


def _resolve_file(subject: Subject, key: str, suffix: str, required: bool = True) -> Path | None:
    stem = subject.directory / f"{subject.subject_id}_{suffix}"
    compressed, plain = Path(f"{stem}.nii.gz"), Path(f"{stem}.nii")
    if compressed.is_file() and plain.is_file():
        raise InputError(subject.subject_id, compressed, f"{plain.name} also exists; keep only one of the two")
    for path in (compressed, plain):
        if path.is_file():
            return path
    if key == SEGMENTATION:
        stand_ins = sorted(
            path
            for pattern in ("*Segm.nii", "*Segm.nii.gz")
            for path in subject.directory.glob(pattern)
            if path.is_file()
        )
        if len(stand_ins) == 1:
            return stand_ins[0]
        if stand_ins:
            raise InputError(
                subject.subject_id,
                compressed,
                f"missing seg file, and several *Segm.nii[.gz] files could stand in: "
                f"{_listed([path.name for path in stand_ins])}",
            )
    if not required:
        return None
    raise InputError(subject.subject_id, compressed, f"missing {key} file (looked for .nii.gz and .nii)")


# ----------------------------------------------------------------------------- volumes


def load_subject(subject: Subject, suffixes: dict[str, str] = DEFAULT_SUFFIXES, seg_required: bool = True) -> Volumes:
    """Find and load one subject's files (:func:`resolve_files`, then :func:`load_volumes`)."""
    return load_volumes(subject.subject_id, resolve_files(subject, suffixes, seg_required))


def load_volumes(subject_id: str, files: dict[str, Path]) -> Volumes:
    """Load and check one case's files; raise InputError(subject_id, file, problem) on the first problem.

    files: a path for each of flair, t1, t1ce, t2, and optionally seg.
    Checks, in order, per file (flair, t1, t1ce, t2, seg): it is a readable 3D NIfTI image (trailing
    singleton dimensions are dropped) on flair's grid (shape, and affine within 1e-3 mm); then the seg
    holds whole numbers in {0, 1, 2, 4}; then every modality is finite and at least one is non-zero
    somewhere (the brain mask).
    """
    files = {key: Path(files[key]) for key in SUFFIX_KEYS if key in files}
    headers = {key: _open_image(subject_id, path) for key, path in files.items()}
    shape = _spatial_shape(subject_id, files["flair"], headers["flair"])
    affine = headers["flair"].affine
    _check_affine_usable(subject_id, files["flair"], affine)
    for key in list(files)[1:]:
        _check_same_grid(subject_id, files[key], headers[key], shape, affine)

    # Voxel axes -> RAS: io_orientation's transform flips/permutes the data, and
    # inv_ornt_aff gives the affine that keeps every voxel at the same world position.
    orientation = nib.io_orientation(affine)
    canonical_affine = affine @ nib.orientations.inv_ornt_aff(orientation, shape)
    canonical_shape = tuple(shape[axis] for axis in np.argsort(orientation[:, 0]))

    # The seg is checked before the 4-channel array exists, so its temporaries are freed
    # before the largest allocation (peak memory on 240x240x155 volumes).
    seg = None
    if SEGMENTATION in files:
        seg_file = files[SEGMENTATION]
        labels = _seg_labels(subject_id, seg_file, _read_stored(subject_id, seg_file, headers[SEGMENTATION], shape))
        # apply_orientation flips/transposes views; this copies only when it did either.
        seg = np.asfortranarray(nib.apply_orientation(labels, orientation))
        del labels

    images = _fortran_channels(len(MODALITIES), canonical_shape)
    for channel, key in enumerate(MODALITIES):
        data = _read_stored(subject_id, files[key], headers[key], shape)
        # One pass converts the stored dtype to float32 and reorients, straight into place.
        images[channel] = nib.apply_orientation(data, orientation)
        # Integers always convert to finite float32; floats are checked after the conversion,
        # which can overflow (float64 beyond float32's range becomes inf).
        if data.dtype.kind not in _INTEGER_KINDS:
            _check_finite(subject_id, files[key], images[channel])
        del data
    # any() stops at the first non-zero channel, normally flair.
    if not any(channel.any() for channel in images):
        raise InputError(subject_id, files["flair"], "all four modalities are zero everywhere (empty brain mask)")
    return Volumes(
        images=images,
        seg=seg,
        affine=canonical_affine,
        files=files,
        orientation=orientation.astype(int),
        stored_shape=shape,
    )


def _fortran_channels(count: int, shape: tuple) -> np.ndarray:
    """Uninitialised float32 (count, X, Y, Z) whose channels are each x-fastest, like NIfTI data."""
    return np.empty((count, *shape[::-1]), dtype=np.float32).transpose(0, 3, 2, 1)


def _open_image(subject_id: str, path: Path) -> nib.spatialimages.SpatialImage:
    """The image with its header parsed; voxel data stays on disk until read."""
    try:
        return nib.load(path)
    except _UNREADABLE_ERRORS as error:
        raise InputError(subject_id, path, f"cannot read as NIfTI ({_one_line(error)})") from error


def _spatial_shape(subject_id: str, path: Path, image) -> tuple[int, int, int]:
    """(X, Y, Z) of a 3D image, or of a 4D/5D one whose extra dimensions are all 1."""
    shape = tuple(int(size) for size in image.shape)
    if len(shape) < 3 or any(size != 1 for size in shape[3:]):
        raise InputError(subject_id, path, f"shape {shape} is not a 3D volume")
    return shape[:3]


def _check_affine_usable(subject_id: str, path: Path, affine: np.ndarray) -> None:
    """Reorientation needs a finite, invertible voxel-to-world matrix."""
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(subject_id, path, f"affine is not finite and invertible: {affine[:3].tolist()}")


def _check_same_grid(subject_id: str, path: Path, image, shape: tuple, affine: np.ndarray) -> None:
    """Same voxel grid as flair: equal (X, Y, Z) and affine within AFFINE_TOLERANCE_MM."""
    own_shape = _spatial_shape(subject_id, path, image)
    if own_shape != shape:
        raise InputError(subject_id, path, f"shape {own_shape} differs from flair's {shape}")
    difference = np.abs(image.affine - affine).max()
    if not difference <= AFFINE_TOLERANCE_MM:  # also true for NaN
        raise InputError(subject_id, path, f"affine differs from flair's (largest difference {difference:g} mm)")


def _read_stored(subject_id: str, path: Path, image, shape: tuple) -> np.ndarray:
    """Voxel values (X, Y, Z), x-fastest, in the stored dtype; floating point where scl_slope/scl_inter apply.

    Unlike get_fdata(dtype=float32) this makes no float copy of integer data: the caller converts
    once, while copying into place. The image object keeps no cached copy either.
    """
    try:
        data = np.asanyarray(image.dataobj)
    except _UNREADABLE_ERRORS as error:
        raise InputError(subject_id, path, f"cannot read image data ({_one_line(error)})") from error
    return data.reshape(shape)


def _check_finite(subject_id: str, path: Path, data: np.ndarray) -> None:
    """Raise InputError if any value of float ``data`` is NaN or infinite.

    min and max propagate NaN and reach +-inf when present, so two reductions without temporaries
    decide; voxels are counted only for the message. initial=0 covers empty arrays.
    """
    if not (np.isfinite(data.min(initial=0)) and np.isfinite(data.max(initial=0))):
        bad = data.size - np.count_nonzero(np.isfinite(data))
        raise InputError(subject_id, path, f"{bad} voxel(s) are NaN or infinite")


def _seg_labels(subject_id: str, path: Path, data: np.ndarray) -> np.ndarray:
    """Seg values (any shape and dtype) as uint8 labels, checked to be whole numbers in SEG_LABELS.

    Stored integers are whole numbers already. Other values (a float seg, or one rescaled by
    scl_slope/scl_inter) are read as float32, then must be finite and round to whole numbers.
    """
    if data.dtype.kind not in _INTEGER_KINDS:
        data = _whole_numbers(subject_id, path, np.asarray(data, dtype=np.float32))
    if not _only_seg_labels(data):
        unexpected = np.unique(data[~np.isin(data, SEG_LABELS)])
        raise InputError(subject_id, path, f"seg has labels {_listed(unexpected)} outside {{{_listed(SEG_LABELS)}}}")
    return data.astype(np.uint8)


def _whole_numbers(subject_id: str, path: Path, data: np.ndarray) -> np.ndarray:
    """float32 ``data`` rounded to whole numbers; InputError if any is not finite or not near one."""
    _check_finite(subject_id, path, data)
    labels = np.rint(data)
    fractional = np.abs(data - labels) > LABEL_ROUNDING_TOLERANCE
    if fractional.any():
        raise InputError(
            subject_id,
            path,
            f"seg has non-integer values {_listed(np.unique(data[fractional]))}; expected labels {_listed(SEG_LABELS)}",
        )
    return labels


def _only_seg_labels(labels: np.ndarray) -> bool:
    """Whether whole-number ``labels`` all lie in SEG_LABELS.

    A min, a max and one comparison per value missing from SEG_LABELS between them: much cheaper
    than np.isin or np.unique on a full volume, which are kept for the error message.
    initial=0 (a valid label) covers empty arrays.
    """
    low, high = labels.min(initial=0), labels.max(initial=0)
    if low < min(SEG_LABELS) or high > max(SEG_LABELS):
        return False
    gaps = [value for value in range(int(low), int(high) + 1) if value not in SEG_LABELS]
    return not any((labels == gap).any() for gap in gaps)


# ----------------------------------------------------------------------------- messages


def _listed(values, limit: int = 10) -> str:
    """'a, b, c' for messages; numbers in shortest form, long lists cut at ``limit``."""
    items = [f"{value:g}" if isinstance(value, (float, np.floating)) else str(value) for value in values]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _one_line(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())
