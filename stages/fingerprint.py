"""Stage fingerprint: the confound checks of the cohort's fingerprint -> metrics/fingerprint.json, the acquisition
properties by grade and site -> plots/fingerprint/acquisition.png, every subject at a glance -> reports/qc_grid.png.

The fingerprint itself (reports/fingerprint.csv, data/qc_thumbnails.npy) is measured by preprocess while each
subject's volumes are in memory (gliomil.data.fingerprint); the aggregate stage puts these findings in the audit.
"""

import _src  # noqa: F401  (first: gliomil from this checkout, see stages/_src.py)

# isort: split

import gliomil.runtime.blas  # noqa: F401  (first: pins OpenBLAS kernels before numpy loads)

# isort: split

import numpy as np
import pandas as pd

from gliomil import paths
from gliomil.evaluation.confounds import nuisance_aucs, plot_acquisition, plot_qc_grid, site_findings
from gliomil.runtime.files import write_json
from gliomil.runtime.stage import run_stage


def main():
    table = pd.read_csv(paths.FINGERPRINT_TABLE, dtype={"subject_id": str, "site": str})
    sites = site_findings(table)
    nuisance = nuisance_aucs(table)
    write_json(
        paths.FINGERPRINT_METRICS,
        {
            "subjects": len(table),
            "sites": sites,
            "nuisance": nuisance.to_dict("records"),
            "nuisance_flagged": nuisance.loc[nuisance["flagged"], "property"].tolist(),
        },
    )
    plot_acquisition(table, nuisance, paths.FINGERPRINT_PLOTS / "acquisition.png")
    captions = [f"{row.subject_id}\n{row.grade} | {row.site}" for row in table.itertuples(index=False)]
    plot_qc_grid(np.load(paths.QC_THUMBNAILS), captions, paths.QC_GRID)
    strongest = nuisance.loc[nuisance["ranking_auc"].idxmax()]
    print(
        f"fingerprint: {len(table)} subjects, {sites['known_sites']} known site(s), "
        f"{len(sites['single_grade_sites'])} single-grade; strongest nuisance AUC {strongest['ranking_auc']:.3f} "
        f"({strongest['property']}), {int(nuisance['flagged'].sum())} flagged"
    )
    for warning in sites["warnings"]:
        print(f"warning: {warning}")


if __name__ == "__main__":
    run_stage(main)
