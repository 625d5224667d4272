"""gliomil.data.sites: the contributing site of each subject in all three BraTS layouts, and the site x grade
table (issue 21)."""

from __future__ import annotations

import pytest
from test_brats import write_mapping

from gliomil.data.brats import find_subjects
from gliomil.data.sites import UNKNOWN_SITE, check_site, site_from_id, site_from_name_mapping, site_grade_table
from gliomil.errors import GliomilError


@pytest.mark.parametrize(
    "case_id, site",
    [
        ("Brats18_CBICA_AAB_1", "CBICA"),
        ("Brats18_TCIA01_131_1", "TCIA01"),
        ("Brats18_TCIA13_653_1", "TCIA13"),
        ("Brats18_2013_2_1", "2013"),
        ("BraTS19_CBICA_AOZ_1", "CBICA"),
        ("BraTS19_TMC_06290_1", "TMC"),  # a site new in 2019
        ("BraTS19_2013_0_1", "2013"),
        ("Brats17_TCIA_182_1", "TCIA"),  # BraTS 2017 named the TCIA cases without a number
        ("brats18_cbica_aab_1", "CBICA"),  # case is not part of the name
        ("TCGA-02-0003", "TCGA-02"),  # TCGA: the tissue source site
        ("TCGA-HT-7608", "TCGA-HT"),
        ("BraTS20_Training_001", UNKNOWN_SITE),  # 2020 ids carry no site
        ("BraTS20_Validation_001", UNKNOWN_SITE),
        ("SynBraTS_HGG_001", UNKNOWN_SITE),  # the built-in cohort
        ("patient_7", UNKNOWN_SITE),
        ("Brats18_", UNKNOWN_SITE),
        ("", UNKNOWN_SITE),
    ],
)
def test_a_case_id_names_its_site_or_unknown(case_id, site):
    assert site_from_id(case_id) == site


def test_a_2020_row_takes_the_site_of_the_same_patients_earlier_id():
    row = {"BraTS_2017_subject_ID": "", "BraTS_2018_subject_ID": "Brats18_TCIA02_300_1", "BraTS_2019_subject_ID": ""}
    assert site_from_name_mapping(row) == "TCIA02"
    row["BraTS_2019_subject_ID"] = "BraTS19_TCIA02_300_1"
    assert site_from_name_mapping(row) == "TCIA02"
    assert site_from_name_mapping({"TCGA_TCIA_subject_ID": "TCGA-DU-6407"}) == "TCGA-DU"
    assert site_from_name_mapping({"BraTS_2018_subject_ID": "", "TCGA_TCIA_subject_ID": ""}) == UNKNOWN_SITE


def test_each_layout_gives_its_subjects_their_sites(tmp_path):
    for grade, case in (("HGG", "Brats18_CBICA_AAB_1"), ("LGG", "Brats18_2013_0_1"), ("LGG", "my_case")):
        (tmp_path / "2018" / grade / case).mkdir(parents=True)
    assert {s.subject_id: s.site for s in find_subjects(tmp_path / "2018")} == {
        "Brats18_CBICA_AAB_1": "CBICA",
        "Brats18_2013_0_1": "2013",
        "my_case": UNKNOWN_SITE,
    }

    write_mapping(
        tmp_path / "2020",
        [
            "HGG,Brats17_CBICA_AAB_1,Brats18_CBICA_AAB_1,NA,BraTS19_CBICA_AAB_1,BraTS20_Training_001",
            "LGG,NA,NA,TCGA-HT-7608,NA,BraTS20_Training_002",
            "LGG,NA,NA,NA,NA,BraTS20_Training_003",
        ],
    )
    assert [s.site for s in find_subjects(tmp_path / "2020")] == ["CBICA", "TCGA-HT", UNKNOWN_SITE]

    csv = tmp_path / "csv"
    csv.mkdir()
    (csv / "labels.csv").write_text(
        "subject_id,grade,site\na,HGG,hospital-A\nb,LGG,\nBrats18_TCIA10_103_1,LGG,\nc,HGG,hospital-A\n"
    )
    # the column wins; an empty cell falls back to the id, then to unknown
    assert [(s.subject_id, s.site) for s in find_subjects(csv)] == [
        ("Brats18_TCIA10_103_1", "TCIA10"),
        ("a", "HOSPITAL-A"),
        ("b", UNKNOWN_SITE),
        ("c", "HOSPITAL-A"),
    ]
    (csv / "labels.csv").write_text("subject_id,grade\nBrats18_TCIA10_103_1,LGG\n")  # no column: the id
    assert [s.site for s in find_subjects(csv)] == ["TCIA10"]


def test_a_site_cell_is_read_in_upper_case_as_the_sites_of_ids():
    assert [check_site(cell, "labels.csv: row 2") for cell in (" cbica ", "Tcia01", "", "Unknown")] == [
        "CBICA",
        "TCIA01",
        "",
        UNKNOWN_SITE,
    ]
    assert check_site("cbica", "x") == site_from_id("Brats18_CBICA_AAB_1")


def test_a_malformed_site_cell_is_one_line_naming_the_row(tmp_path):
    (tmp_path / "labels.csv").write_text('subject_id,grade,site\na,HGG,ok\nb,LGG,"two words"\n')
    with pytest.raises(GliomilError) as info:
        find_subjects(tmp_path)
    message = str(info.value)
    assert message == (
        f"{tmp_path / 'labels.csv'}: row 3 (b): site 'two words' is not a plain name (letters, digits, '-', '_', '.')"
    )


def test_the_site_grade_table_counts_by_hand_and_flags_single_grade_sites():
    sites = ["CBICA", "CBICA", "2013", "2013", "TCIA10", UNKNOWN_SITE, UNKNOWN_SITE, "2013"]
    grades = ["HGG", "HGG", "HGG", "LGG", "LGG", "HGG", "HGG", "LGG"]
    table = site_grade_table(sites, grades)
    assert list(table.index) == ["2013", "CBICA", "TCIA10", UNKNOWN_SITE]  # unknown last
    assert table.loc["2013"].tolist() == [2, 1, 3, False]  # LGG, HGG, total, single_grade
    assert table.loc["CBICA"].tolist() == [0, 2, 2, True]
    assert table.loc["TCIA10"].tolist() == [1, 0, 1, True]
    assert table.loc[UNKNOWN_SITE].tolist() == [0, 2, 2, False]  # unknown is not a site: never flagged
