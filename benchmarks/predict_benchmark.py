"""Where `gliomil predict` spends its time on real-size cases: reading files, preprocessing, or the models.

Usage::

    .venv/bin/python benchmarks/predict_benchmark.py [--cases 3] [--repeats 3] [--bundle bundle]
        [--random-models] [--json PATH]

Synthetic cases of the real BraTS size (240 x 240 x 155, four modalities + seg, ``.nii.gz``) are
generated in a temporary folder, one BraTS-style case folder each. The models are the five fold models
of ``--bundle`` (the repository's packaged model) when its manifest exists; otherwise, or with
``--random-models``, a temporary bundle of randomly initialised models of params.yaml's
``train.model`` (the timing of a forward pass does not depend on the weights). Per case, it times

* nibabel floor: ``np.asanyarray(nib.load(path).dataobj)`` of the five files (read + gzip decompression);
* load: :func:`gliomil.data.brats.load_volumes` (the checked load, with reorientation to RAS);
* preprocess: :func:`gliomil.data.preprocess.preprocess_volumes` with the bundle's settings;
* models: :func:`gliomil.serving.predict.score_case`, every fold model on the case's kept slices,

each ``--repeats`` times (interleaved), reporting the median per case and the mean over cases, after one
warm-up of the models. Load + preprocess + models is what ``gliomil predict`` does per case, less the
montage and the output files. Threads and precision are the bundle's, as ``gliomil predict`` sets them;
preprocessing runs with one BLAS thread, as ``gliomil predict`` and the preprocess stage's workers run it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_info, threadpool_limits

# Runs from a checkout without installing the package.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from gliomil import params as P
from gliomil.data.brats import DEFAULT_SUFFIXES, Subject, load_volumes, resolve_files
from gliomil.data.preprocess import PreprocessSettings, preprocess_volumes
from gliomil.model.checkpoint import save_checkpoint
from gliomil.model.mil import ModelConfig
from gliomil.runtime.device import autocast_dtype, precision_name, set_threads
from gliomil.serving.bundle import (
    InferenceSettings,
    build_manifest,
    load_bundle,
    training_cohort,
    write_bundle,
)
from gliomil.serving.predict import score_case
from gliomil.synthetic.cohort import case_name, subject_seed, synthesize_subject, write_case
from gliomil.vocabulary import GRADES

REAL_SHAPE = (240, 240, 155)
SEED = 0
FOLDS = 5
PARTS = ("floor", "load", "preprocess", "models")


def make_cases(root: Path, count: int) -> list[Subject]:
    """``count`` real-size cases under ``root``, alternating the grades, each in ``<root>/<case>/``."""
    subjects = []
    for i in range(count):
        grade, number = GRADES[i % 2], i // 2 + 1
        case = case_name(grade, number)
        start = time.perf_counter()
        images, seg = synthesize_subject(grade, REAL_SHAPE, np.random.default_rng(subject_seed(SEED, grade, number)))
        write_case(root / case, case, images, seg)
        print(f"generated {case} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        subjects.append(Subject(case, None, case, root / case))
    return subjects


def random_bundle(directory: Path) -> None:
    """A bundle of FOLDS randomly initialised models of params.yaml's train.model, with default settings."""
    config = ModelConfig(**P.section(P.load_params(REPO / "params.yaml"), "train")["model"])
    checkpoints = {}
    for fold in range(FOLDS):
        torch.manual_seed(fold)
        checkpoints[fold] = directory / "checkpoints" / f"fold_{fold}.pt"
        save_checkpoint(config.build(), config, checkpoints[fold], fold=fold, epoch=0)
    fake = pd.DataFrame({"subject_id": ["fake"], "label": [1], "content_sha256": ["0" * 64]})
    manifest = build_manifest(
        preprocess=PreprocessSettings(image_size=64),
        suffixes=DEFAULT_SUFFIXES,
        prediction=config.prediction,
        threshold={"value": 0.5, "method": "benchmark"},
        inference=InferenceSettings(amp=True, eval_chunk=256, threads=0),
        training=training_cohort(fake),
        params={},
    )
    write_bundle(directory / "bundle", checkpoints, manifest)


def measure_case(subject: Subject, bundle, device, dtype, repeats: int) -> dict:
    """Median seconds of each part over ``repeats`` interleaved rounds, and the kept slices."""
    files = resolve_files(subject)
    times = {part: [] for part in PARTS}
    for _ in range(repeats):
        start = time.perf_counter()
        for path in files.values():
            np.asanyarray(nib.load(path).dataobj)
        times["floor"].append(time.perf_counter() - start)
        start = time.perf_counter()
        volumes = load_volumes(subject.subject_id, files)
        times["load"].append(time.perf_counter() - start)
        start = time.perf_counter()
        with threadpool_limits(limits=1, user_api="blas"):
            bag = preprocess_volumes(volumes, bundle.preprocess)
        times["preprocess"].append(time.perf_counter() - start)
        del volumes
        start = time.perf_counter()
        score_case(bundle, bag.slices, device, dtype)
        times["models"].append(time.perf_counter() - start)
    row = {"case": subject.subject_id, "slices": len(bag.slices)}
    row.update({part: statistics.median(values) for part, values in times.items()})
    return with_ratios(row)


def with_ratios(row: dict) -> dict:
    row["total"] = row["load"] + row["preprocess"] + row["models"]
    row["load_over_floor"] = row["load"] / row["floor"]
    row["models_share"] = row["models"] / row["total"]
    return row


def table(rows: list[dict]) -> str:
    lines = [
        "| case | kept slices | nibabel floor (s) | load (s) | preprocess (s) | models (s) | total (s) "
        "| load / floor | models share |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['slices']:.0f} | {r['floor']:.3f} | {r['load']:.3f} | {r['preprocess']:.3f} "
            f"| {r['models']:.3f} | {r['total']:.3f} | {r['load_over_floor']:.2f} | {r['models_share']:.0%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=3, help="real-size synthetic cases (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per case; the median is kept")
    parser.add_argument("--bundle", type=Path, default=Path("bundle"), help="packaged model (default: bundle)")
    parser.add_argument("--random-models", action="store_true", help="randomly initialised models, not --bundle")
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args()
    if args.cases < 1 or args.repeats < 1:
        parser.error("--cases and --repeats must be at least 1")

    with tempfile.TemporaryDirectory(prefix="gliomil-predict-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.random_models or not (args.bundle / "manifest.json").is_file():
            random_bundle(tmp)
            bundle, source = load_bundle(tmp / "bundle"), "random models (temporary bundle, params.yaml train.model)"
        else:
            bundle, source = load_bundle(args.bundle), f"{args.bundle} (packaged model)"
        threads = set_threads(bundle.inference.threads)
        device = torch.device("cpu")
        dtype = autocast_dtype(device, bundle.inference.amp)
        subjects = make_cases(tmp / "cases", args.cases)
        warm_up = preprocess_volumes(
            load_volumes(subjects[0].subject_id, resolve_files(subjects[0])), bundle.preprocess
        )
        score_case(bundle, warm_up.slices, device, dtype)
        rows = []
        for subject in subjects:
            rows.append(measure_case(subject, bundle, device, dtype, args.repeats))
            print(f"measured {subject.subject_id}", file=sys.stderr)
    mean = with_ratios({"case": "mean", **{key: float(np.mean([r[key] for r in rows])) for key in ("slices", *PARTS)}})

    print(f"bundle: {source}; {len(bundle.models)} fold models, image_size {bundle.preprocess.image_size}")
    blas = ", ".join(
        f"{Path(i['filepath']).parent.name} {i['num_threads']}" for i in threadpool_info() if i["user_api"] == "blas"
    )
    print(f"CPU, torch threads {threads}, precision {precision_name(dtype)}, eval_chunk {bundle.inference.eval_chunk}")
    print(f"BLAS threads outside preprocessing (which uses 1): {blas}; load average {os.getloadavg()[0]:.2f}")
    print(f"seconds per patient, median of {args.repeats} rounds per case; shape {'x'.join(map(str, REAL_SHAPE))}")
    print()
    print(table([*rows, mean]))
    print()
    print("- total = load + preprocess + models; load / floor = checked load over the bare nibabel read.")
    cheaper = mean["models"] < mean["floor"]
    print(
        f"verdict: loading + preprocessing dominate (models < nibabel floor): {'YES' if cheaper else 'NO'}, "
        f"models {mean['models']:.3f} s vs floor {mean['floor']:.3f} s per patient; "
        f"load + preprocess are {1 - mean['models_share']:.0%} of the total"
    )
    if args.json:
        document = {"bundle": source, "threads": threads, "blas": blas, "precision": precision_name(dtype)}
        args.json.write_text(json.dumps({**document, "repeats": args.repeats, "cases": rows, "mean": mean}, indent=2))


if __name__ == "__main__":
    main()
