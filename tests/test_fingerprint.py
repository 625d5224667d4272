"""The cohort's fingerprint (gliomil.data.fingerprint) and its confound checks (gliomil.evaluation.confounds):
by hand on files whose every number is known."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import TINY_SHAPE
from test_brats import SHAPE, save, write_case
from test_preprocess_cohort import SETTINGS, SUFFIXES

from gliomil.data.brats import Subject, find_subjects, load_volumes, resolve_files
from gliomil.data.fingerprint import THUMBNAIL_SIZE, fingerprint_row, pad_thumbnails, qc_thumbnail
from gliomil.data.preprocess import PreprocessSettings, brain_mask, preprocess_cohort, preprocess_volumes
from gliomil.errors import GliomilError
from gliomil.evaluation.audit import confounds_section, tumour_blind_lines
from gliomil.evaluation.confounds import (
    NUISANCE_PROPERTIES,
    nuisance_aucs,
    plot_acquisition,
    plot_qc_grid,
    site_findings,
)
from gliomil.synthetic.cohort import synthesize_cohort

LPS_2_3_4 = np.diag([-2.0, -3.0, 4.0, 1.0])  # 2 x 3 x 4 mm voxels stored left-posterior-superior


def loaded(tmp_path, affine=LPS_2_3_4, seg=None):
    folder = write_case(tmp_path, "case")
    for path in folder.iterdir():  # re-save every file on the chosen grid
        image = np.asarray(nib.load(path).dataobj)
        save(image if seg is None or not path.name.endswith("_seg.nii.gz") else seg, path, affine)
    volumes = load_volumes("case", resolve_files(Subject("case", "HGG", "case", folder)))
    return volumes, preprocess_volumes(volumes, PreprocessSettings(image_size=8, min_brain_fraction=0.0))


def test_a_fingerprint_row_by_hand(tmp_path):
    volumes, bag = loaded(tmp_path)
    row = fingerprint_row(volumes, bag.brain_voxels, bag.brain_percentiles)
    assert (row["shape_x"], row["shape_y"], row["shape_z"]) == SHAPE
    assert (row["voxel_x_mm"], row["voxel_y_mm"], row["voxel_z_mm"]) == (2.0, 3.0, 4.0)
    assert row["orientation"] == "LPS"
    # the brain is the box [2:-2] of 12 x 10 x 8 voxels: 8 * 6 * 4 = 192 voxels of 24 mm3
    assert row["brain_ml"] == pytest.approx(192 * 24 / 1000)
    for channel, modality in enumerate(("flair", "t1", "t1ce", "t2")):  # every brain voxel of channel i: 100 (i + 1)
        assert row[f"{modality}_p1"] == row[f"{modality}_p50"] == row[f"{modality}_p99"] == 100.0 * (channel + 1)
    # labels 1, 2 and 4: one voxel each
    assert row["tumour_necrotic_ml"] == row["tumour_oedema_ml"] == row["tumour_enhancing_ml"] == 0.024
    assert row["tumour_ml"] == pytest.approx(0.072)


def test_the_brain_percentiles_preprocess_reads_off_its_sort_are_numpys(tmp_path):
    volumes, bag = loaded(tmp_path)
    rng = np.random.default_rng(0)
    brain = brain_mask(volumes.images)
    volumes.images[:, brain] = rng.gamma(2.0, 300.0, size=(4, int(brain.sum()))).astype(np.float32)
    bag = preprocess_volumes(volumes, PreprocessSettings(image_size=8, min_brain_fraction=0.0))
    assert bag.brain_voxels == int(brain.sum())
    for channel, image in enumerate(volumes.images):
        np.testing.assert_allclose(bag.brain_percentiles[channel], np.percentile(image[brain], (1, 50, 99)), rtol=1e-6)


def test_a_case_without_segmentation_has_no_tumour_volume(tmp_path):
    volumes, bag = loaded(tmp_path)
    volumes.seg = None
    row = fingerprint_row(volumes, bag.brain_voxels, bag.brain_percentiles)
    assert np.isnan(row["tumour_ml"]) and np.isnan(row["tumour_enhancing_ml"])
    _, z = qc_thumbnail(volumes, bag.brain_percentiles, fallback_z=3)
    assert z == 3  # no tumour: the slice the caller names


def test_the_qc_thumbnail_shows_the_slice_with_the_most_tumour(tmp_path):
    seg = np.zeros(SHAPE, dtype=np.uint8)
    seg[3:6, 3:6, 5] = 2  # 9 voxels on axial slice 5
    seg[4, 4, 3] = 4  # 1 voxel on slice 3
    volumes, bag = loaded(tmp_path, affine=np.diag([2.0, 2.0, 2.0, 1.0]), seg=seg)
    image, z = qc_thumbnail(volumes, bag.brain_percentiles, fallback_z=0, size=THUMBNAIL_SIZE)
    assert z == 5
    assert image.shape == (SHAPE[1], 2 * SHAPE[0]) and image.dtype == np.float16  # FLAIR | T1ce, rows = y
    assert np.nanmin(image) >= 0 and np.nanmax(image) <= 1
    padded = pad_thumbnails([image, image[:4, :6]])
    assert padded.shape == (2, THUMBNAIL_SIZE, 2 * THUMBNAIL_SIZE)
    assert np.array_equal(padded[1, :4, :6], image[:4, :6]) and np.isnan(padded[1, 4:, :]).all()


def fingerprint(values: dict, grades: list[str], sites=None) -> pd.DataFrame:
    table = pd.DataFrame({"grade": grades, "site": sites or ["unknown"] * len(grades)})
    for name in NUISANCE_PROPERTIES:
        table[name] = values.get(name, np.ones(len(grades)))
    return table


def test_a_nuisance_auc_by_hand():
    grades = ["HGG", "HGG", "HGG", "LGG", "LGG", "LGG"]
    # HGG {3, 4, 5} against LGG {1, 2, 3.5}: 3 beats 1 and 2, 4 and 5 beat all three: AUC 8/9
    brain = np.array([3.0, 4.0, 5.0, 1.0, 2.0, 3.5])
    table = nuisance_aucs(fingerprint({"brain_ml": brain, "t1_p50": -brain}, grades)).set_index("property")
    assert table.loc["brain_ml", "auc"] == pytest.approx(8 / 9)
    assert table.loc["brain_ml", "direction"] == "higher in HGG"
    assert table.loc["t1_p50", "auc"] == pytest.approx(1 / 9)  # the same ranking, the other way round
    assert table.loc["t1_p50", "direction"] == "lower in HGG"
    assert table.loc["t1_p50", "ranking_auc"] == pytest.approx(8 / 9)
    constant = table.loc["voxel_x_mm"]
    assert constant["ranking_auc"] == 0.5 and constant["direction"] == "no difference" and not constant["flagged"]
    # 3 + 3 patients: the DeLong interval is wide, so even 8/9 is not flagged among 12 properties
    assert table.loc["brain_ml", "simultaneous_low"] < 0.5 and not table["flagged"].any()


def test_a_property_that_separates_many_patients_is_flagged_and_chance_is_not():
    rng = np.random.default_rng(0)
    grades = ["HGG"] * 60 + ["LGG"] * 60
    separating = np.r_[rng.normal(1.0, 0.5, 60), rng.normal(0.0, 0.5, 60)]  # AUC about 0.92
    noise = rng.normal(size=120)
    table = nuisance_aucs(fingerprint({"voxel_z_mm": separating, "t2_p99": noise}, grades)).set_index("property")
    assert table.loc["voxel_z_mm", "flagged"] and table.loc["voxel_z_mm", "ranking_auc"] > 0.85
    assert table.loc["voxel_z_mm", "simultaneous_low"] < table.loc["voxel_z_mm", "ci_low"]  # wider: 12 properties
    assert not table.loc["t2_p99", "flagged"]


def test_site_findings_warn_of_every_single_grade_site_with_the_share():
    table = fingerprint({}, ["HGG", "HGG", "LGG", "HGG", "LGG", "HGG"], ["A", "A", "B", "C", "C", "unknown"])
    found = site_findings(table)
    assert found["known_sites"] == 3 and found["single_grade_sites"] == ["A", "B"]
    assert found["share_in_single_grade_sites"] == pytest.approx(3 / 6)
    assert found["warnings"] == [
        "site A: all 2 patients are HGG: the site alone gives their grade",
        "site B: all 1 patients are LGG: the site alone gives their grade",
    ]
    lines = "\n".join(confounds_section({"subjects": 6, "sites": found, "nuisance": []}))
    assert "| A (single grade) | 0 | 2 | 2 |" in lines and "| C | 1 | 1 | 2 |" in lines
    assert "- **warning**: site B: all 1 patients are LGG" in lines and "50% of the patients" in lines


def test_the_confound_section_says_when_no_site_is_known_and_names_flagged_properties():
    rng = np.random.default_rng(1)
    grades = ["HGG"] * 50 + ["LGG"] * 50
    table = fingerprint({"brain_ml": np.r_[rng.normal(2, 0.5, 50), rng.normal(0, 0.5, 50)]}, grades)
    report = {"subjects": 100, "sites": site_findings(table), "nuisance": nuisance_aucs(table).to_dict("records")}
    text = "\n".join(confounds_section(report))
    assert "No subject's site is known (all 100 `unknown`" in text
    assert "- **warning**: `brain_ml` alone rank(s) the grades" in text
    assert "| `brain_ml` | higher in HGG |" in text and "| **yes** |" in text


@pytest.mark.parametrize(
    ("pooled", "above"),
    [({"auc": 0.71, "ci_low": 0.64, "ci_high": 0.78}, True), ({"auc": 0.55, "ci_low": 0.48, "ci_high": 0.62}, False)],
)
def test_the_tumour_blind_run_says_whether_it_ranks_above_chance(pooled, above):
    text = "\n".join(tumour_blind_lines(pooled, True))
    assert f"Pooled held-out AUC {pooled['auc']:.3f} (95% CI {pooled['ci_low']:.3f} to {pooled['ci_high']:.3f})" in text
    assert ("**warning**: the interval lies above 0.5" in text) is above
    assert ("no better than chance" in text) is not above
    assert "dvc exp run -S train.tumour_blind=true" in "\n".join(tumour_blind_lines(pooled, False))


def test_a_cohort_with_one_subject_of_a_grade_is_one_line():
    table = fingerprint({"brain_ml": np.arange(4.0)}, ["HGG", "HGG", "HGG", "LGG"])
    with pytest.raises(
        GliomilError, match="^the nuisance AUCs need at least 2 subjects of each grade; the cohort has 1 LGG and 3 HGG$"
    ):
        nuisance_aucs(table)


def test_the_figures_are_written(tmp_path):
    rng = np.random.default_rng(2)
    table = fingerprint({"brain_ml": rng.normal(size=8)}, ["HGG", "LGG"] * 4, ["A", "B"] * 4)
    plot_acquisition(table, nuisance_aucs(table), tmp_path / "acquisition.png")
    plot_qc_grid(pad_thumbnails([rng.uniform(size=(10, 20)).astype(np.float16)] * 8), ["x"] * 8, tmp_path / "qc.png")
    assert (tmp_path / "acquisition.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "qc.png").read_bytes()[:4] == b"\x89PNG"


# -- the confounded built-in cohort (synthesize.sites, synthesize.confound) ----------------------------------------


@pytest.mark.parametrize("confound", [False, True])
def test_a_confounded_cohort_is_flagged_and_a_balanced_one_is_not(tmp_path, confound):
    cohort = tmp_path / "cohort"
    synthesize_cohort(cohort, n_hgg=10, n_lgg=10, shape=TINY_SHAPE, seed=3, workers=2, sites=4, confound=confound)
    report = preprocess_cohort(find_subjects(cohort), tmp_path / "pre", SETTINGS, SUFFIXES, workers=2, progress=False)
    table = report.fingerprint
    assert sorted(set(table["site"])) == ["SYN1", "SYN2", "SYN3", "SYN4"]  # parsed from the Brats18-style ids
    sites, nuisance = site_findings(table), nuisance_aucs(table).set_index("property")
    if confound:
        assert sites["single_grade_sites"] == ["SYN1", "SYN2", "SYN3", "SYN4"]
        assert sites["share_in_single_grade_sites"] == 1.0
        assert nuisance.loc["voxel_x_mm", "ranking_auc"] == 1.0 and nuisance.loc["voxel_x_mm", "flagged"]
    else:
        assert sites["single_grade_sites"] == [] and sites["warnings"] == []
        assert not nuisance["flagged"].any(), nuisance[nuisance["flagged"]]
