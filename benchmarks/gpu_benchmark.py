"""GPU readiness: training and scoring speed at the real BraTS size, and the projected wall time of the study.

    python benchmarks/gpu_benchmark.py [--epochs 3] [--patients N] [--out FILE]
        [--image-size 128] [--width W] [--steps S] [--device cpu|cuda] [--cache DIR]

``--patients`` synthetic patients of the real size (240 x 240 x 155, :mod:`gliomil.synthetic.cohort`) are generated once
into ``--cache`` (default: a folder in the system's temporary directory, reused by later runs), preprocessed
like the preprocess stage (:func:`gliomil.data.preprocess.preprocess_case`, params.yaml's settings but
``--image-size``, default 128: the README's GPU setting) and split into training and inner-validation patients.
The training settings are params.yaml's ``train`` section (batch_size, bag_size, model, amp, ...; ``--width``
overrides the model width), the device is the pipeline's (CUDA when available, or ``--device``), and
:func:`gliomil.runtime.device.make_deterministic` is on, as the train stage runs.

One timed epoch is :func:`gliomil.training.loop.train_epoch`, the fold loop's own epoch (bag drawing and augmentation,
copy to the device, :func:`gliomil.training.loop.train_step`, reading back the outputs), over a BraTS 2018 fold's
training split: 285 patients, 4/5 in a fold's training part, of which ``split.inner_val_fraction`` (20%) is held
back for inner validation, so 182 patients, 46 steps of 4 bags x 32 slices. The synthesized training patients
are cycled to that count (a bag's cost does not depend on which patient it is drawn from), or to
``--steps`` x batch_size patients. After a warm-up (kernel choice, allocator), it times ``--epochs`` such epochs,
then ``--epochs`` rounds of :func:`gliomil.evaluation.scoring.score_bags` on the inner-validation patients' whole bags.

Reports: the device and precision; training slices/s and seconds per fold epoch; inner-validation scoring
slices/s and seconds per epoch (46 patients at the synthesized patients' mean kept slices); peak memory
(CUDA: ``torch.cuda.max_memory_allocated`` of training and of scoring; CPU: the process's peak RSS); and the
projected wall time of the study, 5 folds x 60 epochs of training + inner validation, + scoring each fold's
57 test patients. Early stopping (``train.patience``) can only shorten it; per-epoch diagnostics, logging and
checkpoints are not counted (under 1% on the CPU, benchmarks/train_benchmark.py). ``--out`` also writes the
numbers to a JSON file.

On this project's 2-core CPU the default CPU run (4 patients, 1 epoch) takes about two minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

# Runs from a checkout without installing the package.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from gliomil import params as P
from gliomil.data.bags import BagSet
from gliomil.data.brats import find_subjects, resolve_files
from gliomil.data.preprocess import PreprocessSettings, preprocess_case
from gliomil.evaluation.scoring import score_bags
from gliomil.runtime.device import (
    autocast_dtype,
    default_device,
    make_deterministic,
    precision_name,
    set_threads,
)
from gliomil.synthetic import anatomy
from gliomil.synthetic import cohort as synthetic
from gliomil.synthetic.cohort import synthesize_cohort
from gliomil.training.loop import TrainConfig, train_epoch
from gliomil.training.losses import class_weights_from_counts, mil_loss
from gliomil.vocabulary import LABELS

REAL_SHAPE = (240, 240, 155)
SEED = 0  # of the synthetic patients
BRATS_2018_PATIENTS = 285  # 210 HGG + 75 LGG
FOLDS = 5
STUDY_EPOCHS = 60  # the DSMIL reference's, and the README's GPU setting
WARMUP_STEPS = 3
GIB = 2.0**30


@dataclass(frozen=True)
class FoldSize:
    """Patients in each part of one cross-validation fold, as :func:`gliomil.data.split.make_splits` cuts them."""

    test: int
    inner_val: int
    train: int

    @classmethod
    def of(cls, patients: int, folds: int, inner_val_fraction: float) -> FoldSize:
        test = round(patients / folds)
        inner_val = round((patients - test) * inner_val_fraction)
        return cls(test, inner_val, patients - test - inner_val)


# -- data -----------------------------------------------------------------------------------------


def synthetic_cohort(cache: Path, patients: int, shape: tuple[int, int, int], workers: int) -> tuple[Path, float]:
    """A BraTS 2018-style cohort of ``patients`` (half HGG, rounded up, half LGG) under ``cache``, made once;
    returns its folder and the seconds spent making it now (0.0 when it was cached)."""
    n_hgg, n_lgg = (patients + 1) // 2, patients // 2
    # Keyed by the generator's source too: a cohort made by an earlier generator is not this one.
    generator = hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in (synthetic, anatomy))).hexdigest()
    root = cache / f"{'x'.join(map(str, shape))}_{n_hgg}hgg_{n_lgg}lgg_seed{SEED}_{generator[:12]}"
    if root.is_dir():  # synthesize_cohort renames a finished cohort into place: a folder is complete
        return root, 0.0
    start = time.perf_counter()
    synthesize_cohort(root, n_hgg, n_lgg, shape, SEED, workers=workers)
    return root, time.perf_counter() - start


def load_bags(root: Path, settings: PreprocessSettings) -> tuple[BagSet, float]:
    """Every case under ``root`` preprocessed into memory; returns them and the mean seconds per case."""
    ids, labels, bags, tumour, position = [], [], [], [], []
    start = time.perf_counter()
    subjects = find_subjects(root, "brats2018")
    for subject in subjects:
        _, bag = preprocess_case(subject.subject_id, resolve_files(subject), settings)
        ids.append(subject.subject_id)
        labels.append(LABELS[subject.grade])
        bags.append(bag.slices)
        tumour.append(bag.tumour_fraction)
        position.append(bag.position)
    seconds = (time.perf_counter() - start) / len(subjects)
    return BagSet(ids, np.array(labels, dtype=np.int64), bags, tumour, position), seconds


def subset(bag_set: BagSet, indices) -> BagSet:
    """The patients ``indices`` (repeats allowed: the arrays are shared, not copied)."""
    indices = list(indices)
    return BagSet(
        [f"{bag_set.subject_ids[i]}#{k}" for k, i in enumerate(indices)],
        bag_set.labels[indices],
        [bag_set.bags[i] for i in indices],
        [bag_set.tumour_fraction[i] for i in indices],
        [bag_set.position[i] for i in indices],
    )


def split_patients(bag_set: BagSet, inner_val_fraction: float) -> tuple[BagSet, BagSet]:
    """Inner-validation patients (``inner_val_fraction`` of them, at least 1) and training patients, grades
    alternating so that any cycle through them holds both; training keeps both grades (class weights need them)."""
    grades = [list(np.flatnonzero(bag_set.labels == label)) for label in (1, 0)]  # HGG, LGG
    if len(grades[0]) < 2 or len(grades[1]) < 1:
        raise SystemExit("gpu_benchmark: needs at least 3 patients (2 HGG + 1 LGG)")
    val = []
    for k in range(max(1, round(len(bag_set) * inner_val_fraction))):
        group = max(grades, key=len) if len(grades[k % 2]) < 2 else grades[k % 2]
        if len(group) < 2:
            break
        val.append(group.pop())
    train = [i for pair in zip(*grades) for i in pair] + grades[0][len(grades[1]) :] + grades[1][len(grades[0]) :]
    return subset(bag_set, train), subset(bag_set, val)


def cycled(bag_set: BagSet, count: int) -> BagSet:
    """``count`` patients cycling through ``bag_set``."""
    return subset(bag_set, [k % len(bag_set) for k in range(count)])


# -- measuring ------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    """CUDA: bytes allocated by tensors at most since :func:`reset_peak`; CPU: this process's peak RSS so far."""
    if device.type == "cuda":
        return {"kind": "torch.cuda.max_memory_allocated", "gib": torch.cuda.max_memory_allocated(device) / GIB}
    if sys.platform.startswith("linux"):  # ru_maxrss is in KiB on Linux
        return {"kind": "peak RSS of the process", "gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    return {"kind": "n/a", "gib": None}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads"


def measure(
    config: TrainConfig,
    train_set: BagSet,
    val_set: BagSet,
    device: torch.device,
    epochs: int,
    epoch_patients: int,
) -> dict:
    """Time ``epochs`` training epochs of ``epoch_patients`` patients, then ``epochs`` scorings of ``val_set``.

    Model, optimizer, gradient scaler and loss are built exactly as :func:`gliomil.training.loop.train_fold`
    builds them.
    """
    dtype = autocast_dtype(device, config.amp)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = config.model.build().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    class_weights = class_weights_from_counts(*train_set.class_counts()) if config.use_class_weights else None
    loss_fn = partial(mil_loss, label_smoothing=config.label_smoothing, class_weights=class_weights)

    def epoch(patients: BagSet):
        return train_epoch(model, optimizer, scaler, loss_fn, patients, rng, config, device, dtype)

    epoch(cycled(train_set, WARMUP_STEPS * config.batch_size))  # cuDNN/oneDNN kernel choice, allocator, first copies
    score_bags(model, val_set.bags[:1], device, config.eval_chunk, dtype)

    epoch_set = cycled(train_set, epoch_patients)
    train_seconds, train_slices = [], []
    reset_peak(device)
    for _ in range(epochs):
        synchronize(device)
        start = time.perf_counter()
        seen = epoch(epoch_set)
        synchronize(device)
        train_seconds.append(time.perf_counter() - start)
        train_slices.append(len(seen.tumour_fraction))
    train_memory = peak_memory(device)

    val_seconds = []
    val_slices = sum(len(bag) for bag in val_set.bags)
    reset_peak(device)
    for _ in range(epochs):
        synchronize(device)
        start = time.perf_counter()
        score_bags(model, val_set.bags, device, config.eval_chunk, dtype)
        synchronize(device)
        val_seconds.append(time.perf_counter() - start)
    val_memory = peak_memory(device)
    return {
        "precision": precision_name(dtype),
        "epoch_patients": epoch_patients,
        "steps_per_epoch": math.ceil(epoch_patients / config.batch_size),
        "train_epoch_seconds": train_seconds,
        "train_slices_per_epoch": train_slices,
        "train_slices_per_s": sum(train_slices) / sum(train_seconds),
        "val_patients": len(val_set),
        "val_slices": val_slices,
        "val_seconds": val_seconds,
        "val_slices_per_s": val_slices * epochs / sum(val_seconds),
        "train_peak_memory": train_memory,
        "val_peak_memory": val_memory,
    }


def project(measured: dict, fold: FoldSize, slices_per_patient: float, folds: int, study_epochs: int) -> dict:
    """Seconds of one epoch, one fold and the whole study at the BraTS 2018 size, from the measured rates."""
    slices_per_bag = sum(measured["train_slices_per_epoch"]) / (
        len(measured["train_slices_per_epoch"]) * measured["epoch_patients"]
    )
    train_epoch_s = fold.train * slices_per_bag / measured["train_slices_per_s"]
    val_epoch_s = fold.inner_val * slices_per_patient / measured["val_slices_per_s"]
    test_s = fold.test * slices_per_patient / measured["val_slices_per_s"]
    fold_s = study_epochs * (train_epoch_s + val_epoch_s) + test_s
    return {
        "fold_patients": {"train": fold.train, "inner_val": fold.inner_val, "test": fold.test},
        "slices_per_bag": slices_per_bag,
        "slices_per_patient": slices_per_patient,
        "train_epoch_s": train_epoch_s,
        "val_epoch_s": val_epoch_s,
        "test_scoring_s": test_s,
        "fold_s": fold_s,
        "study_s": folds * fold_s,
        "folds": folds,
        "epochs": study_epochs,
    }


# -- report ---------------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def memory_text(memory: dict) -> str:
    return "n/a" if memory["gib"] is None else f"{memory['gib']:.2f} GiB ({memory['kind']})"


def report(result: dict) -> str:
    m, p, d = result["measured"], result["projected"], result["data"]
    batch, bag = result["train"]["batch_size"], result["train"]["bag_size"]
    lines = [
        f"device: {result['device']} ({result['device_type']}), torch {result['torch']}, precision {m['precision']}, "
        f"deterministic algorithms on (as the train stage)"
        + ("" if result["load_average"] is None else f"; load average {result['load_average']:.2f} at the end"),
        f"data: {d['patients']} synthetic patients at {d['shape']} ({d['train_patients']} train, "
        f"{m['val_patients']} inner-val), {d['image_size']}x{d['image_size']} slices, "
        f"{d['slices_per_patient']:.0f} kept slices per patient on average; synthesis "
        f"{'cached' if not d['synthesis_s'] else duration(d['synthesis_s'])}, preprocessing "
        f"{d['preprocess_s_per_patient']:.2f} s per patient",
        f"model: width {result['train']['width']}, depth {result['train']['depth']}; {batch} bags x {bag} slices "
        f"per step; {len(m['train_epoch_seconds'])} timed epoch(s) of {m['epoch_patients']} patients "
        f"({m['steps_per_epoch']} steps) after {WARMUP_STEPS} warm-up steps",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| training | {m['train_slices_per_s']:.0f} slices/s |",
        f"| timed epochs | {', '.join(f'{s:.2f} s' for s in m['train_epoch_seconds'])} |",
        f"| training epoch of a BraTS 2018 fold ({p['fold_patients']['train']} patients, "
        f"{math.ceil(p['fold_patients']['train'] / batch)} steps) | {duration(p['train_epoch_s'])} |",
        f"| inner-val scoring (whole bags) | {m['val_slices_per_s']:.0f} slices/s |",
        f"| inner-val scoring per epoch ({p['fold_patients']['inner_val']} patients x "
        f"{p['slices_per_patient']:.0f} slices) | {duration(p['val_epoch_s'])} |",
        f"| peak memory, training | {memory_text(m['train_peak_memory'])} |",
        f"| peak memory, scoring | {memory_text(m['val_peak_memory'])} |",
        f"| one fold: {p['epochs']} epochs + scoring {p['fold_patients']['test']} test patients "
        f"| {duration(p['fold_s'])} |",
        f"| the study: {p['folds']} folds x {p['epochs']} epochs | {duration(p['study_s'])} |",
        "",
        "- projections: training at the measured slices/s, scoring at the measured scoring slices/s; early "
        "stopping can only shorten them; diagnostics, logging and checkpoints are not counted.",
    ]
    return "\n".join(lines)


# -- command --------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, help="timed epochs (default: 3 on CUDA, 1 on the CPU)")
    parser.add_argument("--patients", type=int, help="synthetic real-size patients (default: 10 on CUDA, 4 on the CPU)")
    parser.add_argument("--out", type=Path, help="also write the numbers to this JSON file")
    parser.add_argument("--image-size", type=int, default=128, help="slice side after preprocessing (default 128)")
    parser.add_argument("--width", type=int, help="model width (default: params.yaml train.model.width)")
    parser.add_argument("--steps", type=int, help="steps per timed epoch (default: a BraTS 2018 fold's, 46)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: CUDA when available, else the CPU")
    parser.add_argument("--cache", type=Path, help="where the synthetic patients are kept between runs")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--workers", type=int, help="processes that synthesize (default: one per CPU, at most N)")
    parser.add_argument("--shape", type=int, nargs=3, default=REAL_SHAPE, help=argparse.SUPPRESS)  # tests only
    args = parser.parse_args(argv)
    for name in ("epochs", "patients", "steps", "image_size", "width", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def run(args: argparse.Namespace) -> dict:
    """Everything the command measures, as a JSON-ready dict (see the module docstring)."""
    make_deterministic()  # before CUDA starts, as the train stage does
    device = torch.device(args.device) if args.device else default_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_benchmark: --device cuda, but torch sees no CUDA device")
    gpu = device.type == "cuda"
    epochs = args.epochs or (3 if gpu else 1)
    patients = args.patients or (10 if gpu else 4)

    params = P.load_params(args.params)
    train = P.section(params, "train")
    threads = set_threads(train["threads"])
    top = {key: P.value(params, key) for key in ("seed", "label_smoothing", "use_class_weights")}
    config = TrainConfig.from_settings(top, train)
    if args.width:
        config = replace(config, model=replace(config.model, width=args.width))
    options = P.section(params, "preprocess")
    settings = PreprocessSettings(args.image_size, tuple(options["clip_percentiles"]), options["min_brain_fraction"])
    inner_val_fraction = P.value(params, "split.inner_val_fraction")
    fold = FoldSize.of(BRATS_2018_PATIENTS, FOLDS, inner_val_fraction)

    cache = args.cache or Path(tempfile.gettempdir()) / "gliomil-gpu-benchmark"
    shape = tuple(args.shape)
    workers = args.workers or max(1, min(os.cpu_count() or 1, patients))
    root, synthesis_s = synthetic_cohort(cache, patients, shape, workers)
    print(f"cohort: {root}" + (f" (made in {synthesis_s:.1f} s)" if synthesis_s else " (cached)"), file=sys.stderr)
    bags, preprocess_s = load_bags(root, settings)
    train_set, val_set = split_patients(bags, inner_val_fraction)
    slices_per_patient = float(np.mean([len(bag) for bag in bags.bags]))

    epoch_patients = args.steps * config.batch_size if args.steps else fold.train
    measured = measure(config, train_set, val_set, device, epochs, epoch_patients)
    return {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "threads": threads,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "data": {
            "patients": len(bags),
            "train_patients": len(train_set),
            "shape": "x".join(map(str, shape)),
            "image_size": settings.image_size,
            "slices_per_patient": slices_per_patient,
            "synthesis_s": synthesis_s,
            "preprocess_s_per_patient": preprocess_s,
        },
        "train": {
            "batch_size": config.batch_size,
            "bag_size": config.bag_size,
            "width": config.model.width,
            "depth": config.model.depth,
            "amp": config.amp,
            "eval_chunk": config.eval_chunk,
        },
        "measured": measured,
        "projected": project(measured, fold, slices_per_patient, FOLDS, STUDY_EPOCHS),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = run(args)
    print(report(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
