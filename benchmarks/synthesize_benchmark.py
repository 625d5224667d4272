"""How long the built-in cohort takes to generate, and where the time goes.

    python benchmarks/synthesize_benchmark.py [--params params.yaml] [--workers N] [--subjects N] [--real-size N]

Run from the repository root. Each measurement runs in a fresh child process, as the synthesize stage does
(so the MNI152 template is prepared once per worker, inside the timing):

- cohort: ``synthesize_cohort`` with params.yaml's ``synthesize`` section (all 285 subjects at 96 x 96 x 64 by
  default), with ``--workers`` processes (default: the params' ``workers``), written to a temporary folder;
  the issue's target is under a minute on a 2-core machine.
- template: preparing the template channels (:func:`gliomil.synthetic.anatomy.template`) and pre-filtering them for the
  cohort's voxel size (:func:`gliomil.synthetic.anatomy.atlas`), once.
- subject: the mean time of one phantom (``synthesize_phantom``, no file) and of writing its five files, over
  ``--subjects`` subjects, at the cohort's shape and at the BraTS size 240 x 240 x 155 (``--real-size``
  subjects, 0 to skip).

Prints a Markdown table. Ratios within one run are what to compare; absolute seconds depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REAL_SIZE = (240, 240, 155)

CHILD = r"""
import json, sys, time, tempfile
from pathlib import Path
import numpy as np
args = json.loads(sys.argv[1])
start = time.perf_counter()
if args["what"] == "cohort":
    from gliomil.synthetic.cohort import synthesize_cohort
    with tempfile.TemporaryDirectory() as tmp:
        cases = synthesize_cohort(Path(tmp) / "cohort", args["n_hgg"], args["n_lgg"], tuple(args["shape"]),
                                  args["seed"], workers=args["workers"])
    print(json.dumps({"seconds": time.perf_counter() - start, "subjects": len(cases)}))
elif args["what"] == "template":
    from gliomil.synthetic import anatomy
    anatomy.template()
    prepared = time.perf_counter()
    spacing = tuple(float(f / n) for f, n in zip((240.0, 240.0, 155.0), args["shape"]))
    anatomy.atlas(spacing)
    print(json.dumps({"template": prepared - start, "atlas": time.perf_counter() - prepared}))
else:
    from gliomil.synthetic import anatomy
    from gliomil.synthetic.cohort import subject_seed, synthesize_phantom, write_case
    shape = tuple(args["shape"])
    anatomy.atlas(tuple(float(f / n) for f, n in zip((240.0, 240.0, 155.0), shape)))
    generate = write = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(1, args["subjects"] + 1):
            grade = ("HGG", "LGG")[k % 2]
            t0 = time.perf_counter()
            phantom = synthesize_phantom(grade, shape, np.random.default_rng(subject_seed(args["seed"], grade, k)))
            t1 = time.perf_counter()
            write_case(Path(tmp) / f"case_{k}", f"case_{k}", phantom.images, phantom.seg)
            generate += t1 - t0
            write += time.perf_counter() - t1
    n = args["subjects"]
    print(json.dumps({"generate": generate / n, "write": write / n}))
"""


def child(what: str, **args) -> dict:
    """Run one measurement in a fresh Python process; its JSON result."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps({"what": what, **args})],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--workers", type=int, default=None, help="processes for the cohort (default: params)")
    parser.add_argument("--subjects", type=int, default=20, help="subjects timed one by one at the cohort's shape")
    parser.add_argument("--real-size", type=int, default=4, help="subjects timed at 240 x 240 x 155 (0: skip)")
    parser.add_argument("--n-hgg", type=int, default=None, help="cohort size override (default: params)")
    parser.add_argument("--n-lgg", type=int, default=None)
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from gliomil import params as P

    settings = P.section(P.load_params(args.params), "synthesize")
    cohort = {
        "n_hgg": args.n_hgg if args.n_hgg is not None else settings["n_hgg"],
        "n_lgg": args.n_lgg if args.n_lgg is not None else settings["n_lgg"],
        "shape": list(settings["shape"]),
        "seed": settings["seed"],
        "workers": args.workers or settings["workers"],
    }
    print(f"# Built-in cohort generation ({os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')})\n")
    result = {"cohort": child("cohort", **cohort)}
    result["template"] = child("template", shape=cohort["shape"])
    result["subject"] = child("subject", shape=cohort["shape"], subjects=args.subjects, seed=cohort["seed"])
    if args.real_size:
        result["real_size"] = child("subject", shape=list(REAL_SIZE), subjects=args.real_size, seed=cohort["seed"])

    c, t, s = result["cohort"], result["template"], result["subject"]
    shape = "x".join(map(str, cohort["shape"]))
    print("| measurement | seconds |")
    print("|---|---|")
    print(
        f"| cohort: {c['subjects']} subjects at {shape}, {cohort['workers']} worker(s), files included "
        f"| {c['seconds']:.1f} |"
    )
    print(f"| template: prepare the MNI152 channels (once per process) | {t['template']:.2f} |")
    print(f"| template: pre-filter for the cohort's voxel size (once per process) | {t['atlas']:.2f} |")
    print(f"| one subject at {shape}: generate | {s['generate']:.3f} |")
    print(f"| one subject at {shape}: write five .nii.gz | {s['write']:.3f} |")
    if "real_size" in result:
        r = result["real_size"]
        print(f"| one subject at 240x240x155: generate | {r['generate']:.2f} |")
        print(f"| one subject at 240x240x155: write five .nii.gz | {r['write']:.2f} |")
    verdict = "under" if c["seconds"] < 60 else "OVER"
    print(f"\nThe cohort took {c['seconds']:.1f} s: {verdict} the one-minute target.")
    return result


if __name__ == "__main__":
    main()
