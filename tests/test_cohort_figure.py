"""docs/cohort_figure.py: the README's cohort figure from a tiny cohort preprocessed without DVC."""

from __future__ import annotations

import importlib.util
import shutil
import sys

import matplotlib.image
import numpy as np
import pytest
from conftest import REPO, run_tool

from gliomil.data.brats import find_subjects, load_subject
from gliomil.data.preprocess import PreprocessSettings, preprocess_cohort
from gliomil.data.slices import read_manifest, read_slice_table
from gliomil.errors import GliomilError

SCRIPT = REPO / "docs" / "cohort_figure.py"
SUFFIXES = {"flair": "flair", "t1": "t1", "t1ce": "t1ce", "t2": "t2", "seg": "seg"}


@pytest.fixture(scope="module")
def figure_module():
    """docs/cohort_figure.py as a module (registered while its tests run: its dataclasses need that)."""
    spec = importlib.util.spec_from_file_location("cohort_figure", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture(scope="module")
def preprocessed(tiny_cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp("figure") / "preprocessed"
    settings = PreprocessSettings(image_size=16)
    preprocess_cohort(find_subjects(tiny_cohort), out, settings, SUFFIXES, workers=2, progress=False)
    return out


def figure(*args, cwd=REPO, check=True):
    return run_tool([sys.executable, str(SCRIPT), *map(str, args)], cwd, check=check)


def test_mid_tumour_slice_has_the_most_tumour_voxels(figure_module, preprocessed, tiny_cohort):
    slice_table = read_slice_table(preprocessed)
    for subject in find_subjects(tiny_cohort):
        volumes = load_subject(subject)
        brain = (volumes.images != 0).any(axis=0)
        tumour_voxels = np.count_nonzero((volumes.seg > 0) & brain, axis=(0, 1))
        kept_z = slice_table.loc[slice_table["subject_id"] == subject.subject_id, "z"].to_numpy()
        chosen = figure_module.mid_tumour_slice(slice_table, subject.subject_id)
        assert chosen["z"] == kept_z[np.argmax(tumour_voxels[kept_z])], subject.subject_id


def test_default_cases_are_the_first_with_a_large_tumour_and_can_be_overridden(figure_module, preprocessed):
    manifest, slice_table = read_manifest(preprocessed), read_slice_table(preprocessed)
    cases = figure_module.choose_cases(manifest, slice_table, {"HGG": None, "LGG": None})
    assert list(cases) == ["HGG", "LGG"]
    for grade, (subject_id, row) in cases.items():
        shares = {
            s: figure_module.mid_tumour_slice(slice_table, s)["tumour_fraction"]
            for s in sorted(manifest.loc[manifest["grade"] == grade, "subject_id"])
        }
        large = [s for s, share in shares.items() if share >= figure_module.MIN_TUMOUR_SHARE]
        assert subject_id == (large[0] if large else max(shares, key=shares.get))
        assert row["subject_id"] == subject_id

    lgg = sorted(manifest.loc[manifest["grade"] == "LGG", "subject_id"])[-1]
    assert figure_module.choose_cases(manifest, slice_table, {"HGG": None, "LGG": lgg})["LGG"][0] == lgg
    with pytest.raises(GliomilError, match="is LGG, not HGG"):
        figure_module.choose_cases(manifest, slice_table, {"HGG": lgg, "LGG": None})
    with pytest.raises(GliomilError, match="not in the preprocessed manifest"):
        figure_module.choose_cases(manifest, slice_table, {"HGG": "nobody", "LGG": None})


def test_radiological_view_puts_the_patients_right_on_the_left_and_anterior_up(figure_module):
    plane = np.zeros((5, 3))  # (X, Y) in RAS: x grows to the patient's right, y to anterior
    plane[4, 2] = 1  # right anterior
    image = figure_module.radiological(plane)
    assert image.shape == (3, 5) and image[0, 0] == 1


def test_figure_is_written_and_identical_on_a_second_run(figure_module, preprocessed, tiny_cohort, tmp_path):
    first, second = tmp_path / "out" / "cohort.png", tmp_path / "again.png"
    result = figure("--preprocessed", preprocessed, "--data", tiny_cohort, "--out", first)
    figure("--preprocessed", preprocessed, "--data", tiny_cohort, "--out", second)
    assert first.read_bytes() == second.read_bytes()
    assert [p.name for p in first.parent.iterdir()] == ["cohort.png"], "no temporary file left behind"

    image = matplotlib.image.imread(first)
    width, height = figure_module.FIGSIZE
    assert image.shape == (round(height * figure_module.DPI), round(width * figure_module.DPI), 4)
    assert image[..., :3].std() > 0.1, "not a blank figure"

    manifest, slice_table = read_manifest(preprocessed), read_slice_table(preprocessed)
    cases = figure_module.choose_cases(manifest, slice_table, {"HGG": None, "LGG": None})
    shown = ", ".join(f"{grade} {s} slice {row['slice']} (z={row['z']})" for grade, (s, row) in cases.items())
    assert result.stdout.strip() == f"wrote {first}: {shown}"


@pytest.mark.parametrize(
    "missing, message",
    [
        ("preprocessed", "not found: run `dvc repro preprocess` first"),
        ("data", "not found: run `dvc repro synthesize` first, or pass --data"),
    ],
)
def test_a_missing_input_is_one_line_and_no_png(preprocessed, tiny_cohort, tmp_path, missing, message):
    inputs = {"preprocessed": preprocessed, "data": tiny_cohort, missing: tmp_path / "absent"}
    out = tmp_path / "cohort.png"
    result = figure("--preprocessed", inputs["preprocessed"], "--data", inputs["data"], "--out", out, check=False)
    assert result.returncode == 1
    assert result.stderr == f"error: {tmp_path / 'absent'}: {message}\n"
    assert not out.exists()


def test_data_that_are_not_the_preprocessed_files_are_refused(
    figure_module, preprocessed, copy_of_tiny_cohort, tmp_path
):
    manifest, slice_table = read_manifest(preprocessed), read_slice_table(preprocessed)
    hgg = figure_module.choose_cases(manifest, slice_table, {"HGG": None, "LGG": None})["HGG"][0]
    other = next(s for s in sorted(manifest.loc[manifest["grade"] == "HGG", "subject_id"]) if s != hgg)
    folder = copy_of_tiny_cohort / "HGG"
    shutil.copy(folder / other / f"{other}_seg.nii.gz", folder / hgg / f"{hgg}_seg.nii.gz")
    out = tmp_path / "cohort.png"
    with pytest.raises(GliomilError, match="run `dvc repro preprocess`"):
        figure_module.main(["--preprocessed", str(preprocessed), "--data", str(copy_of_tiny_cohort), "--out", str(out)])
    assert not out.exists()
