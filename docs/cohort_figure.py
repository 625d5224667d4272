"""The README's cohort figure: what the model sees of one HGG and one LGG case.

For each case, one axial slice through the middle of the tumour:

* top row, "model input": the slice exactly as the model receives it, read from ``data/preprocessed``
  (per modality clipped and z-scored over the brain, cropped to the brain's square, resized to
  image_size x image_size; float16). All four modalities share one fixed grey window, -3..3 z units,
  so their contrasts compare; the background is 0, the brain's mean, hence mid-grey. The fifth panel
  overlays the tumour labels (1 necrotic / non-enhancing core, 2 oedema, 4 enhancing) on FLAIR, resampled
  onto the same grid with the preprocessing's own crop and weights; the model never sees them.
* bottom row, "stored file": the same axial slice of the stored int16 NIfTI files at full resolution,
  reoriented to RAS by the project's loader, each modality windowed to its own brain voxels' 0.5-99.5th
  percentiles of that slice; the dashed square is the crop the model input was resized from.

Every panel is in radiological convention: the patient's right on the image's left, anterior up.

Which slice: the kept slice with the largest tumour area, i.e. the most tumour voxels (``tumour_fraction x
brain_fraction`` in ``slices.csv``, both shares of the same slice; on a tie the lowest slice). Which cases:
``--hgg`` / ``--lgg``, or by default the first case of each grade in the manifest (sorted by id) whose
tumour covers at least ``MIN_TUMOUR_SHARE`` of the brain on that slice (failing that, the case whose tumour
covers the largest share).

Run from the repository root, after ``dvc repro preprocess``::

    python docs/cohort_figure.py [--preprocessed data/preprocessed] [--data data/synthetic] \\
        [--out docs/cohort.png] [--hgg CASE] [--lgg CASE]

README's ``docs/cohort.png`` was made with this script's defaults. The PNG is written atomically and is
byte-identical for the same inputs (no timestamp or version in its metadata).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's gliomil, as stages do

if "numpy" not in sys.modules:  # as a script: the preprocessing's BLAS kernels (after numpy it would raise)
    import gliomil.runtime.blas  # noqa: F401

# isort: split

import argparse  # noqa: E402
import dataclasses  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from gliomil import paths  # noqa: E402
from gliomil.data.brats import SUFFIX_KEYS, find_subjects  # noqa: E402
from gliomil.data.preprocess import PreprocessSettings, enclosing_square, preprocess_case
from gliomil.data.slices import MANIFEST, SLICE_TABLE, load_bag, read_manifest, read_slice_table
from gliomil.errors import GliomilError  # noqa: E402
from gliomil.runtime.files import write_with  # noqa: E402
from gliomil.runtime.stage import run_command  # noqa: E402
from gliomil.vocabulary import GRADES, MODALITIES  # noqa: E402

OUT = Path("docs/cohort.png")
MIN_TUMOUR_SHARE = 0.1  # a default case's tumour covers at least this share of the brain on its slice
Z_WINDOW = (-3.0, 3.0)  # grey window of the model input, z units
STORED_PERCENTILES = (0.5, 99.5)  # grey window of the stored slice, per modality, over its brain voxels
MODALITY_NAMES = {"flair": "FLAIR", "t1": "T1", "t1ce": "T1ce", "t2": "T2"}
# BraTS labels, drawn in Okabe-Ito colours (distinguishable with colour-blindness).
TUMOUR_LABELS = {1: ("necrotic / non-enh. core", "#D55E00"), 2: ("oedema", "#56B4E9"), 4: ("enhancing", "#F0E442")}
LABEL_ALPHA = 0.55
FIGSIZE = (10.0, 8.6)
DPI = 110


# -- choosing ---------------------------------------------------------------------------------------------


def mid_tumour_slice(slice_table: pd.DataFrame, subject_id: str) -> pd.Series:
    """The subject's row of ``slices.csv`` with the largest tumour area (tumour_fraction x brain_fraction, which
    is proportional to the slice's tumour voxels); on a tie the lowest slice. GliomilError if the subject has
    no slice with tumour."""
    rows = slice_table[slice_table["subject_id"] == subject_id].sort_values("slice")
    area = (rows["tumour_fraction"] * rows["brain_fraction"]).fillna(0.0).to_numpy()
    if not (area > 0).any():
        raise GliomilError(f"{subject_id}: no kept slice shows tumour (slices.csv); choose another case")
    return rows.iloc[int(np.argmax(area))]


def choose_cases(
    manifest: pd.DataFrame, slice_table: pd.DataFrame, chosen: dict[str, str | None]
) -> dict[str, tuple[str, pd.Series]]:
    """grade -> (subject_id, its mid-tumour slice row), HGG first.

    ``chosen``: grade -> subject_id, or None for the default: the first subject of that grade in the manifest
    (sorted by id) whose mid-tumour slice has tumour on at least MIN_TUMOUR_SHARE of its brain; failing
    that, the subject with the largest such share.
    """
    cases = {}
    for grade in reversed(GRADES):  # HGG, LGG
        subject_id = chosen.get(grade)
        if subject_id is not None:
            row = manifest[manifest["subject_id"] == subject_id]
            if row.empty:
                raise GliomilError(f"--{grade.lower()} {subject_id}: not in the preprocessed manifest")
            if row["grade"].iloc[0] != grade:
                raise GliomilError(f"--{grade.lower()} {subject_id}: is {row['grade'].iloc[0]}, not {grade}")
            cases[grade] = (subject_id, mid_tumour_slice(slice_table, subject_id))
            continue
        candidates = []
        for candidate in sorted(manifest.loc[manifest["grade"] == grade, "subject_id"]):
            rows = slice_table[slice_table["subject_id"] == candidate]
            if (rows["tumour_fraction"].fillna(0.0) > 0).any():
                candidates.append((candidate, mid_tumour_slice(slice_table, candidate)))
        if not candidates:
            raise GliomilError(f"no {grade} case with tumour in the preprocessed manifest")
        large = [case for case in candidates if case[1]["tumour_fraction"] >= MIN_TUMOUR_SHARE]
        cases[grade] = large[0] if large else max(candidates, key=lambda case: case[1]["tumour_fraction"])
    return cases


# -- loading ----------------------------------------------------------------------------------------------


@dataclass
class CaseSlice:
    """One case's chosen slice, model input and stored file, both as (X, Y) planes in RAS voxel order."""

    subject_id: str
    grade: str
    slice: int  # index in the bag
    n_slices: int
    z: int  # axial index in the canonical (RAS) volume
    stored_z: int  # the same slice's index along the stored file's inferior-superior axis
    stored_shape: tuple[int, int, int]
    n_axial: int  # axial slices in the volume
    model: np.ndarray  # float32 (4, n, n): the bag's slice
    model_labels: np.ndarray  # uint8 (n, n): seg labels on the model's grid
    stored: np.ndarray  # float32 (4, X, Y): stored intensities
    stored_labels: np.ndarray  # uint8 (X, Y)
    square: tuple[int, int, int]  # (x0, y0, side): the crop, in the stored slice's voxels


def source_files(manifest_row: pd.Series, data: Path) -> dict[str, Path]:
    """The files the case was preprocessed from (the manifest's ``source_files`` names), looked up in its folder
    under ``data`` (any layout :func:`gliomil.data.brats.find_subjects` reads)."""
    subject_id = manifest_row["subject_id"]
    subjects = {subject.subject_id: subject for subject in find_subjects(data)}
    if subject_id not in subjects:
        raise GliomilError(f"{data}: no case {subject_id}; was data/preprocessed made from another data root?")
    names = [Path(name).name for name in str(manifest_row["source_files"]).split(";")]
    if len(names) != len(SUFFIX_KEYS):
        raise GliomilError(f"{subject_id}: the manifest names no segmentation; the figure needs one")
    files = {key: subjects[subject_id].directory / name for key, name in zip(SUFFIX_KEYS, names)}
    for path in files.values():
        if not path.is_file():
            raise GliomilError(f"{subject_id}: {path}: missing (run `dvc repro` to restore the data)")
    return files


def load_case(preprocessed: Path, data: Path, manifest_row: pd.Series, slice_row: pd.Series) -> CaseSlice:
    """The chosen slice from the bag, and the stored slice and seg through the preprocessing's own geometry.

    :func:`gliomil.data.preprocess.preprocess_case` is rerun with every axial slice kept (min_brain_fraction 0:
    the crop box and resampling weights do not depend on it), its geometry then resamples the seg's labels;
    the tumour fraction it measures on the slice must equal ``slices.csv``'s, or the data are not the files
    the bags were made from.
    """
    subject_id = manifest_row["subject_id"]
    bag = load_bag(preprocessed, subject_id)
    index, z = int(slice_row["slice"]), int(slice_row["z"])
    settings = PreprocessSettings(image_size=bag.shape[-1], min_brain_fraction=0.0)
    volumes, recomputed = preprocess_case(subject_id, source_files(manifest_row, data), settings)
    measured = float(recomputed.tumour_fraction[recomputed.z_index == z][0])
    if not np.isclose(measured, slice_row["tumour_fraction"], rtol=0, atol=2e-6):
        raise GliomilError(
            f"{subject_id}: slice z={z} of {data} has tumour fraction {measured:.6f}, "
            f"{preprocessed / SLICE_TABLE} says {slice_row['tumour_fraction']:.6f}: run `dvc repro preprocess`"
        )
    geometry = dataclasses.replace(recomputed.geometry, keep=np.array([z]))
    seg_planes = geometry.planes(volumes.seg)  # (1, box Y, box X)
    # Each label's share of every model pixel, with the preprocessing's resampling; the largest share wins.
    labels = (0, *TUMOUR_LABELS)
    shares = np.stack([geometry.resize((seg_planes == label).astype(np.float32))[0] for label in labels])
    return CaseSlice(
        subject_id=subject_id,
        grade=manifest_row["grade"],
        slice=index,
        n_slices=int(manifest_row["n_slices"]),
        z=z,
        stored_z=int(volumes.stored_axial_index(z)),
        stored_shape=volumes.stored_shape,
        n_axial=volumes.images.shape[3],
        model=np.asarray(bag[index], dtype=np.float32),
        model_labels=np.asarray(labels, dtype=np.uint8)[np.argmax(shares, axis=0)],
        stored=volumes.images[:, :, :, z].copy(),
        stored_labels=volumes.seg[:, :, z].copy(),
        square=enclosing_square(geometry.x_box, geometry.y_box),
    )


# -- drawing ----------------------------------------------------------------------------------------------


def radiological(plane: np.ndarray) -> np.ndarray:
    """An (X, Y) plane in RAS voxel order as an image (rows, columns): anterior at the top, the patient's right
    on the left (columns run right -> left, rows anterior -> posterior)."""
    return plane[::-1, ::-1].T


def _label_overlay(labels: np.ndarray) -> np.ndarray:
    """RGBA image of the tumour labels of an (X, Y) plane, transparent elsewhere (radiological)."""
    image = radiological(labels)
    rgba = np.zeros((*image.shape, 4))
    for label, (_, colour) in TUMOUR_LABELS.items():
        rgba[image == label] = (*to_rgb(colour), LABEL_ALPHA)
    return rgba


def _stored_window(plane: np.ndarray) -> tuple[float, float]:
    brain = plane[plane != 0]
    if brain.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(brain, STORED_PERCENTILES)
    return float(low), float(max(high, low + 1e-6))


def _panel(ax, image, window, interpolation):
    ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1], interpolation=interpolation)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _orientation_marks(ax, shape):
    """R and L at the image's side edges, A at its top (radiological)."""
    rows, columns = shape
    style = {"color": "white", "fontsize": 7, "ha": "center", "va": "center", "fontweight": "bold"}
    ax.text(columns * 0.06, rows / 2, "R", **style)
    ax.text(columns * 0.94, rows / 2, "L", **style)
    ax.text(columns / 2, rows * 0.06, "A", **style)


def draw(cases: list[CaseSlice]) -> plt.Figure:
    """Two rows per case (model input, stored file), five columns (four modalities, FLAIR + labels)."""
    fig, axes = plt.subplots(2 * len(cases), len(MODALITIES) + 1, figsize=FIGSIZE, squeeze=False)
    flair = MODALITIES.index("flair")
    for number, case in enumerate(cases):
        model_row, stored_row = axes[2 * number], axes[2 * number + 1]
        size = case.model.shape[-1]
        for channel in range(len(MODALITIES)):
            _panel(model_row[channel], radiological(case.model[channel]), Z_WINDOW, "nearest")
            stored = case.stored[channel]
            _panel(stored_row[channel], radiological(stored), _stored_window(stored), "antialiased")
        _panel(model_row[-1], radiological(case.model[flair]), Z_WINDOW, "nearest")
        model_row[-1].imshow(_label_overlay(case.model_labels), interpolation="nearest")
        _panel(stored_row[-1], radiological(case.stored[flair]), _stored_window(case.stored[flair]), "antialiased")
        stored_row[-1].imshow(_label_overlay(case.stored_labels), interpolation="antialiased")

        x_size, y_size = case.stored.shape[1:]
        x0, y0, side = case.square
        for ax in stored_row:  # the crop, in radiological image coordinates (see radiological)
            ax.add_patch(
                Rectangle(
                    (x_size - x0 - side - 0.5, y_size - y0 - side - 0.5),
                    side,
                    side,
                    fill=False,
                    edgecolor="#E69F00",
                    linestyle="--",
                    linewidth=0.8,
                )
            )
            ax.set_xlim(-0.5, x_size - 0.5)
            ax.set_ylim(y_size - 0.5, -0.5)
        _orientation_marks(model_row[0], (size, size))
        _orientation_marks(stored_row[0], (y_size, x_size))

        model_row[0].set_ylabel(
            f"{case.grade}  {case.subject_id}\nmodel input {size}×{size}\nslice {case.slice} of {case.n_slices} kept",
            fontsize=8,
        )
        shape = "×".join(str(n) for n in case.stored_shape)
        stored_row[0].set_ylabel(
            f"stored file {shape}\naxial slice {case.stored_z} of {case.n_axial}\n(0-based; int16, own window)",
            fontsize=8,
        )
    for column, ax in enumerate(axes[0]):
        name = MODALITY_NAMES[MODALITIES[column]] if column < len(MODALITIES) else "FLAIR + tumour labels"
        ax.set_title(name, fontsize=9)

    handles = [
        Patch(facecolor=colour, alpha=LABEL_ALPHA, label=f"{label} {name}")
        for label, (name, colour) in TUMOUR_LABELS.items()
    ]
    handles.append(Patch(facecolor="none", edgecolor="#E69F00", linestyle="--", label="crop resized to model input"))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(
        "Model input: z-scored per modality over the brain, grey window "
        f"{Z_WINDOW[0]:g}..{Z_WINDOW[1]:g} (background 0 = brain mean). Stored file: each slice's own "
        f"{STORED_PERCENTILES[0]:g}-{STORED_PERCENTILES[1]:g}th brain percentiles.\n"
        "Slice with the largest tumour area; radiological view (patient's right on the left), anterior up.",
        fontsize=8.5,
    )
    fig.subplots_adjust(left=0.1, right=0.995, top=0.905, bottom=0.05, wspace=0.03, hspace=0.06)
    return fig


# -- command line -----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--preprocessed", type=Path, default=paths.PREPROCESSED, help="preprocess stage's output")
    parser.add_argument("--data", type=Path, default=paths.SYNTHETIC, help="the data root it was made from")
    parser.add_argument("--out", type=Path, default=OUT, help="PNG to write")
    parser.add_argument("--hgg", help="HGG case to show (default: see the module docstring)")
    parser.add_argument("--lgg", help="LGG case to show")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for name in (MANIFEST, SLICE_TABLE):
        if not (args.preprocessed / name).is_file():
            what = args.preprocessed if not args.preprocessed.is_dir() else args.preprocessed / name
            raise GliomilError(f"{what}: not found: run `dvc repro preprocess` first")
    if not args.data.is_dir():
        raise GliomilError(f"{args.data}: not found: run `dvc repro synthesize` first, or pass --data")
    manifest, slice_table = read_manifest(args.preprocessed), read_slice_table(args.preprocessed)
    chosen = choose_cases(manifest, slice_table, {"HGG": args.hgg, "LGG": args.lgg})
    cases = []
    for subject_id, slice_row in chosen.values():
        manifest_row = manifest[manifest["subject_id"] == subject_id].iloc[0]
        cases.append(load_case(args.preprocessed, args.data, manifest_row, slice_row))
    fig = draw(cases)
    try:
        write_with(args.out, lambda f: fig.savefig(f, format="png", dpi=DPI, metadata={"Software": None}))
    finally:
        plt.close(fig)
    shown = ", ".join(f"{case.grade} {case.subject_id} slice {case.slice} (z={case.z})" for case in cases)
    print(f"wrote {args.out}: {shown}")


if __name__ == "__main__":
    run_command(main)
