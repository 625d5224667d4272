"""Split properties: disjoint covering folds, stratification, inner validation, grouped patients."""

import numpy as np
import pandas as pd
import pytest

from gliomil.data.folds import FoldSplit
from gliomil.data.split import class_counts, make_splits
from gliomil.errors import GliomilError


def _manifest(n_hgg, n_lgg, groups=None):
    ids = [f"H{i:03d}" for i in range(n_hgg)] + [f"L{i:03d}" for i in range(n_lgg)]
    frame = pd.DataFrame(
        {"subject_id": ids, "label": [1] * n_hgg + [0] * n_lgg, "grade": ["HGG"] * n_hgg + ["LGG"] * n_lgg}
    )
    frame["patient_id"] = frame["subject_id"] if groups is None else groups
    return frame


@pytest.fixture(scope="module")
def brats2018_splits():
    manifest = _manifest(210, 75)
    return manifest, make_splits(manifest, n_folds=5, inner_val_fraction=0.2, seed=42)


def test_test_folds_are_disjoint_and_cover_every_subject(brats2018_splits):
    manifest, splits = brats2018_splits
    tests = [set(s.test) for s in splits]
    assert sum(len(t) for t in tests) == len(manifest)
    assert set().union(*tests) == set(manifest["subject_id"])


def test_each_fold_partitions_subjects_into_train_inner_val_and_test(brats2018_splits):
    manifest, splits = brats2018_splits
    for split in splits:
        train, inner, test = set(split.train), set(split.inner_val), set(split.test)
        assert not (train & inner) and not (train & test) and not (inner & test)
        assert train | inner | test == set(manifest["subject_id"])


def test_class_proportions_within_one_patient_of_ideal(brats2018_splits):
    manifest, splits = brats2018_splits
    counts = class_counts(splits, manifest)
    for fold in counts.values():
        assert abs(fold["test_hgg"] - 210 / 5) <= 1
        assert abs(fold["test_lgg"] - 75 / 5) <= 1
        # inner validation: about a fifth of each class of the training part
        n_train_hgg = fold["train_hgg"] + fold["inner_val_hgg"]
        n_train_lgg = fold["train_lgg"] + fold["inner_val_lgg"]
        assert abs(fold["inner_val_hgg"] - n_train_hgg / 5) <= 1
        assert abs(fold["inner_val_lgg"] - n_train_lgg / 5) <= 1


def test_same_seed_same_splits_and_other_seed_differs():
    manifest = _manifest(30, 12)
    first = make_splits(manifest, 3, 0.25, seed=7)
    assert first == make_splits(manifest, 3, 0.25, seed=7)
    assert first != make_splits(manifest, 3, 0.25, seed=8)


def test_subjects_of_one_patient_stay_on_one_side():
    manifest = _manifest(40, 20)
    groups = manifest["subject_id"].tolist()
    # three scans of patient H000, two of L000
    groups[1] = groups[2] = "H000"
    groups[41] = "L000"
    manifest["patient_id"] = groups
    for split in make_splits(manifest, 4, 0.25, seed=3):
        for patient in ("H000", "L000"):
            members = manifest.loc[manifest["patient_id"] == patient, "subject_id"]
            sides = {role for role in ("train", "inner_val", "test") for s in members if s in getattr(split, role)}
            assert len(sides) == 1, (split.fold, patient, sides)


def test_too_few_patients_in_a_class_is_a_clear_error():
    manifest = _manifest(20, 4)
    with pytest.raises(GliomilError, match="LGG has 4 patients, fewer than the 5"):
        make_splits(manifest, 5, 0.2, seed=0)


def test_groups_count_as_one_patient_for_the_minimum():
    manifest = _manifest(20, 6, groups=[f"H{i}" for i in range(20)] + ["L0", "L0", "L1", "L2", "L3", "L4"])
    with pytest.raises(GliomilError, match="LGG has 5 patients"):
        make_splits(manifest, 6, 0.2, seed=0)


def test_fold_split_json_round_trip(tmp_path):
    split = FoldSplit(2, ["a", "b"], ["c"], ["d", "e"])
    path = tmp_path / "fold_2.json"
    path.write_text(split.to_json())
    assert FoldSplit.read(path) == split


def test_inner_validation_is_never_from_the_held_out_fold(brats2018_splits):
    _, splits = brats2018_splits
    for split in splits:
        assert set(split.inner_val).isdisjoint(split.test)
        assert len(split.inner_val) == pytest.approx(0.2 * (len(split.train) + len(split.inner_val)), abs=2)
    assert np.all([len(s.inner_val) > 0 for s in splits])


# -- leave-site-out folds (split.group_by: site) ------------------------------------------------------------------


def _with_sites(n_per_site: dict[str, tuple[int, int]]) -> pd.DataFrame:
    """A manifest with ``(n_hgg, n_lgg)`` patients per site."""
    rows = [
        {"subject_id": f"{site}_{grade}_{k}", "grade": grade, "label": int(grade == "HGG"), "site": site}
        for site, counts in n_per_site.items()
        for grade, n in zip(("HGG", "LGG"), counts)
        for k in range(n)
    ]
    frame = pd.DataFrame(rows)
    frame["patient_id"] = frame["subject_id"]
    return frame


def test_leave_site_out_folds_never_split_a_site_and_hold_out_both_grades():
    manifest = _with_sites({f"S{i}": (12 + i, 3 + i % 3) for i in range(8)})
    splits = make_splits(manifest, 4, 0.2, seed=0, group_by="site")
    site_of = dict(zip(manifest["subject_id"], manifest["site"]))
    grade_of = dict(zip(manifest["subject_id"], manifest["grade"]))
    assert sorted(s for split in splits for s in split.test) == sorted(manifest["subject_id"])
    for split in splits:
        held_out = {site_of[s] for s in split.test}
        trained = {site_of[s] for s in split.train + split.inner_val}
        assert held_out and not held_out & trained, split.fold  # no site on both sides
        assert {grade_of[s] for s in split.test} == {"HGG", "LGG"}
    # the patient-grouped folds of the same cohort do split sites: the option is what keeps them whole
    by_patient = make_splits(manifest, 4, 0.2, seed=0)
    assert any({site_of[s] for s in sp.test} & {site_of[s] for s in sp.train} for sp in by_patient)


def test_leave_site_out_refuses_in_one_line_when_the_sites_cannot_give_both_grades():
    # BraTS 2018's pattern: most sites hold one grade; here only 2 sites have LGG patients for 5 folds
    manifest = _with_sites({"CBICA": (30, 0), "TCIA01": (20, 0), "TCIA09": (0, 10), "2013": (10, 10), "X": (9, 0)})
    with pytest.raises(GliomilError) as info:
        make_splits(manifest, 5, 0.2, seed=0, group_by="site")
    assert str(info.value) == (
        "split.group_by site: the LGG patients come from 2 site(s), fewer than the 5 folds that each need both "
        "grades held out; use fewer folds or split.group_by: none"
    )


def test_leave_site_out_refusal_blames_the_seeded_assignment_not_the_sites():
    # Enough sites of each grade, and {S0, S2} | {S1} gives both folds both grades: seed 0 finds it, while
    # StratifiedGroupKFold's greedy assignment from seed 1 does not. The line names the seed, not the cohort.
    manifest = _with_sites({"S0": (1, 4), "S1": (5, 2), "S2": (6, 0)})
    site_of = dict(zip(manifest["subject_id"], manifest["site"]))
    found = make_splits(manifest, 2, 0.5, seed=0, group_by="site")
    assert sorted(sorted({site_of[s] for s in split.test}) for split in found) == [["S0", "S2"], ["S1"]]
    with pytest.raises(GliomilError) as info:
        make_splits(manifest, 2, 0.5, seed=1, group_by="site")
    assert str(info.value) == (
        "split.group_by site: seed 1's assignment of whole sites leaves held-out fold 0 with HGG patients only; "
        "try another seed, fewer folds or split.group_by: none"
    )


def test_leave_site_out_needs_every_site():
    manifest = _with_sites({f"S{i}": (10, 5) for i in range(5)})
    manifest.loc[3, "site"] = "unknown"
    with pytest.raises(GliomilError, match=r"needs every subject's site; 1 are unknown \(first: S0_HGG_3\)"):
        make_splits(manifest, 5, 0.2, seed=0, group_by="site")
