"""Stage preprocess: BraTS-style tree at data.root -> data/preprocessed/ (slices, manifest, slice table)."""

import pandas as pd

from gliomil import params as P
from gliomil.brats import find_subjects
from gliomil.preprocess import PreprocessSettings, preprocess_cohort
from gliomil.stage import run_stage, write_json, write_text

OUT_DIR = "data/preprocessed"
METRICS = "metrics/preprocess.json"
SKIPPED_REPORT = "reports/preprocess_skipped.csv"
SUFFIX_KEYS = ("flair", "t1", "t1ce", "t2", "seg")


def read_settings(params):
    percentiles = P.number_list(params, "preprocess.clip_percentiles", 2, low=0, high=100, increasing=True)
    return PreprocessSettings(
        image_size=P.integer(params, "preprocess.image_size", low=8, high=1024),
        clip_percentiles=tuple(percentiles),
        min_brain_fraction=P.number(params, "preprocess.min_brain_fraction", low=0.0, high=1.0),
    )


def main():
    params = P.load_params()
    root = P.text(params, "data.root")
    layout = P.choice(params, "data.layout", ("auto", "brats2018", "brats2020", "csv"))
    suffixes = {key: P.text(params, f"data.suffixes.{key}") for key in SUFFIX_KEYS}
    settings = read_settings(params)
    on_error = P.choice(params, "preprocess.on_error", ("fail", "skip"))
    workers = P.integer(params, "preprocess.workers", low=1)

    subjects = find_subjects(root, layout)
    report = preprocess_cohort(subjects, OUT_DIR, settings, suffixes, on_error=on_error, workers=workers)
    manifest = report.manifest
    skipped = pd.DataFrame(report.skipped, columns=["subject_id", "reason"])
    write_text(SKIPPED_REPORT, skipped.to_csv(index=False))
    write_json(METRICS, {
        "subjects_found": report.subjects_found,
        "subjects_kept": len(manifest),
        "subjects_skipped": len(skipped),
        "hgg": int((manifest["grade"] == "HGG").sum()),
        "lgg": int((manifest["grade"] == "LGG").sum()),
        "slices_total": int(manifest["n_slices"].sum()),
        "slices_per_subject_min": int(manifest["n_slices"].min()),
        "slices_per_subject_max": int(manifest["n_slices"].max()),
    })
    for subject_id, reason in report.skipped:
        print(f"skipped {subject_id}: {reason}")
    print(f"preprocess: {len(manifest)} of {report.subjects_found} subjects -> {OUT_DIR} "
          f"({len(skipped)} skipped, listed in {SKIPPED_REPORT})")


if __name__ == "__main__":
    run_stage(main)
