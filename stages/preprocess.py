"""Stage preprocess: BraTS-style tree at data.root -> data/preprocessed/ (slices, manifest, slice table), and the
cohort's fingerprint measured on the way (reports/fingerprint.csv, data/qc_thumbnails.npy)."""

import _src  # noqa: F401  (first: gliomil from this checkout, see stages/_src.py)

# isort: split

import gliomil.runtime.blas  # noqa: F401  (first: pins OpenBLAS kernels before numpy loads)

# isort: split

import numpy as np
import pandas as pd

from gliomil import params as P
from gliomil import paths
from gliomil.data.brats import find_subjects
from gliomil.data.preprocess import PreprocessSettings, preprocess_cohort
from gliomil.runtime.files import write_json, write_text, write_with
from gliomil.runtime.stage import run_stage

METRICS = "metrics/preprocess.json"
SKIPPED_REPORT = "reports/preprocess_skipped.csv"


def main():
    params = P.load_params()
    data, options = P.section(params, "data"), P.section(params, "preprocess")
    settings = PreprocessSettings(
        image_size=options["image_size"],
        clip_percentiles=options["clip_percentiles"],
        min_brain_fraction=options["min_brain_fraction"],
    )

    subjects = find_subjects(data["root"], data["layout"])
    report = preprocess_cohort(
        subjects,
        paths.PREPROCESSED,
        settings,
        P.section(params, "data.suffixes"),
        on_error=options["on_error"],
        workers=options["workers"],
    )
    manifest = report.manifest
    skipped = pd.DataFrame(report.skipped, columns=["subject_id", "reason"])
    write_text(SKIPPED_REPORT, skipped.to_csv(index=False))
    write_text(paths.FINGERPRINT_TABLE, report.fingerprint.to_csv(index=False))
    write_with(paths.QC_THUMBNAILS, lambda f: np.save(f, report.thumbnails))
    write_json(
        METRICS,
        {
            "subjects_found": report.subjects_found,
            "subjects_kept": len(manifest),
            "subjects_skipped": len(skipped),
            "hgg": int((manifest["grade"] == "HGG").sum()),
            "lgg": int((manifest["grade"] == "LGG").sum()),
            "slices_total": int(manifest["n_slices"].sum()),
            "slices_per_subject_min": int(manifest["n_slices"].min()),
            "slices_per_subject_max": int(manifest["n_slices"].max()),
        },
    )
    for subject_id, reason in report.skipped:
        print(f"skipped {subject_id}: {reason}")
    print(
        f"preprocess: {len(manifest)} of {report.subjects_found} subjects -> {paths.PREPROCESSED} "
        f"({len(skipped)} skipped, listed in {SKIPPED_REPORT})"
    )


if __name__ == "__main__":
    run_stage(main)
