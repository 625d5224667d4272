"""Benchmark the cohort fingerprint against preprocess, at the default volume size (issue 21: under 10%).

Usage::

    .venv/bin/python benchmarks/fingerprint_benchmark.py [--subjects 285] [--shape 96 96 64]

A built-in cohort of that size is synthesized in a temporary folder (nothing is written inside the repo). Then, all
in this process with one worker, so that the times are CPU time of the same kind:

* ``preprocess``: :func:`gliomil.data.preprocess.preprocess_cohort`, as the preprocess stage calls it (which now
  includes the fingerprint it measures on the way);
* ``fingerprint in preprocess``: the part of it that is the fingerprint (:func:`fingerprint_row`,
  :func:`qc_thumbnail`), timed alone on each subject's volumes and slice bag, made beforehand (loading and the
  sort its percentiles are read from are preprocess's own);
* ``fingerprint stage``: what ``stages/fingerprint.py`` does (the site x grade table, the nuisance AUCs, both
  figures) on the table and thumbnails preprocess returned.

It prints the three times and the fingerprint's share of preprocess, ``(in preprocess + stage) / preprocess``.
Numbers move with the load of the machine; read the share, a ratio within one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from gliomil.data.brats import DEFAULT_SUFFIXES, find_subjects, load_subject  # noqa: E402
from gliomil.data.fingerprint import fingerprint_row, qc_thumbnail  # noqa: E402
from gliomil.data.preprocess import PreprocessSettings, preprocess_cohort, preprocess_volumes  # noqa: E402
from gliomil.evaluation.confounds import nuisance_aucs, plot_acquisition, plot_qc_grid, site_findings  # noqa: E402
from gliomil.synthetic.cohort import synthesize_cohort  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=285, help="HGG:LGG as BraTS 2018's 210:75")
    parser.add_argument("--shape", type=int, nargs=3, default=[96, 96, 64])
    args = parser.parse_args()
    n_hgg = round(args.subjects * 210 / 285)
    with tempfile.TemporaryDirectory() as tmp:
        cohort = Path(tmp) / "cohort"
        synthesize_cohort(cohort, n_hgg, args.subjects - n_hgg, tuple(args.shape), seed=42, workers=2)
        subjects = find_subjects(cohort)

        start = time.perf_counter()
        report = preprocess_cohort(subjects, Path(tmp) / "pre", PreprocessSettings(), DEFAULT_SUFFIXES, progress=False)
        preprocess = time.perf_counter() - start

        in_preprocess = 0.0
        for subject in subjects:
            volumes = load_subject(subject)
            bag = preprocess_volumes(volumes, PreprocessSettings())
            start = time.perf_counter()
            fingerprint_row(volumes, bag.brain_voxels, bag.brain_percentiles)
            qc_thumbnail(volumes, bag.brain_percentiles, int(bag.z_index[0]))
            in_preprocess += time.perf_counter() - start

        start = time.perf_counter()
        table = report.fingerprint
        site_findings(table)
        nuisance = nuisance_aucs(table)
        plot_acquisition(table, nuisance, Path(tmp) / "acquisition.png")
        plot_qc_grid(report.thumbnails, [f"{s}\nx | y" for s in table["subject_id"]], Path(tmp) / "qc.png")
        stage = time.perf_counter() - start

    result = {
        "subjects": args.subjects,
        "shape": args.shape,
        "preprocess_s": round(preprocess, 2),
        "fingerprint_in_preprocess_s": round(in_preprocess, 2),
        "fingerprint_stage_s": round(stage, 2),
        "fingerprint_share_of_preprocess": round((in_preprocess + stage) / preprocess, 3),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
