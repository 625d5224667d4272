"""Where a scan came from: the contributing site of each subject, and the site x grade table of a cohort.

A model can rank the grades by recognising the scanner when grade and site go together (issue 21; Bakas et al.,
Sci Data 4:170117, 2017). The site of a subject is, in this order of precedence:

1. the ``site`` column of ``labels.csv`` (``csv`` layout), where the cell is not empty;
2. the id: BraTS 2017-2019 training ids name the site, ``Brats18_CBICA_AAB_1``, ``Brats18_TCIA01_131_1``,
   ``Brats18_2013_2_1``, ``BraTS19_TMC_06290_1`` (site ``CBICA``, ``TCIA01``, ``2013``, ``TMC``);
3. for BraTS 2020 (``BraTS20_Training_001``, no site in the id): its row of ``name_mapping.csv``, through the
   BraTS 2019, 2018 or 2017 id of the same patient, else the TCGA/TCIA id, whose ``TCGA-XX`` names the tissue
   source site XX;
4. else :data:`UNKNOWN_SITE`, never an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pandas as pd

from gliomil.errors import GliomilError
from gliomil.vocabulary import GRADES, UNKNOWN_SITE

__all__ = ["UNKNOWN_SITE", "site_from_id", "site_from_name_mapping", "check_site", "site_grade_table"]

# Brats17_/Brats18_/BraTS19_ then the site token, then the case's own id: "2013" is a site of its own.
_BRATS_ID = re.compile(r"^brats(?:17|18|19)_(?P<site>[a-z]+\d*|2013)_.+", re.IGNORECASE)
_TCGA_ID = re.compile(r"^TCGA-(?P<site>[A-Z0-9]{2})-[A-Z0-9]{4}", re.IGNORECASE)
# A site becomes a table row and a plot label: letters, digits and - _ . only.
_SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def site_from_id(case_id: str) -> str:
    """The site a BraTS 2017-2019 or TCGA case id names (upper case), else :data:`UNKNOWN_SITE`.

    >>> site_from_id("Brats18_TCIA01_131_1"), site_from_id("BraTS19_2013_0_1"), site_from_id("TCGA-02-0003")
    ('TCIA01', '2013', 'TCGA-02')
    """
    name = str(case_id).strip()
    match = _BRATS_ID.match(name)
    if match:
        return match["site"].upper()
    match = _TCGA_ID.match(name)
    if match:
        return f"TCGA-{match['site'].upper()}"
    return UNKNOWN_SITE


def site_from_name_mapping(row: dict) -> str:
    """The site of one row of BraTS 2020's ``name_mapping.csv`` (a dict of its cells; empty cells ""), through
    the patient's BraTS 2019, 2018 or 2017 id, else its TCGA/TCIA id, else :data:`UNKNOWN_SITE`."""
    for column in ("BraTS_2019_subject_ID", "BraTS_2018_subject_ID", "BraTS_2017_subject_ID", "TCGA_TCIA_subject_ID"):
        site = site_from_id(row.get(column, "") or "")
        if site != UNKNOWN_SITE:
            return site
    return UNKNOWN_SITE


def check_site(value: str, where: str) -> str:
    """A site named in a table cell, stripped and in upper case as the sites read from ids (``cbica`` in a cell and
    ``Brats18_CBICA_AAB_1`` are one site; "" for an empty cell; ``unknown`` in any case is :data:`UNKNOWN_SITE`).
    A malformed name raises :class:`~gliomil.errors.GliomilError`, one line naming ``where`` (the file and row)."""
    site = str(value).strip()
    if site and not _SITE_NAME.match(site):
        raise GliomilError(f"{where}: site {site!r} is not a plain name (letters, digits, '-', '_', '.')")
    return UNKNOWN_SITE if site.lower() == UNKNOWN_SITE else site.upper()


def site_grade_table(sites: Iterable[str], grades: Iterable[str]) -> pd.DataFrame:
    """Patients per site and grade: one row per site (sorted, :data:`UNKNOWN_SITE` last), columns ``LGG``,
    ``HGG``, ``total`` and ``single_grade`` (True where every patient of a known site has one grade)."""
    frame = pd.DataFrame({"site": list(sites), "grade": list(grades)})
    table = pd.crosstab(frame["site"], frame["grade"]).reindex(columns=list(GRADES), fill_value=0)
    order = sorted(s for s in table.index if s != UNKNOWN_SITE) + [s for s in table.index if s == UNKNOWN_SITE]
    table = table.loc[order]
    table["total"] = table[list(GRADES)].sum(axis=1)
    table["single_grade"] = (table[list(GRADES)] == 0).any(axis=1) & (table.index != UNKNOWN_SITE)
    table.columns.name = None
    return table
