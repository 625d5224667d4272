"""Benchmark the preprocess step: throughput and peak memory, next to a nibabel-only floor.

Usage::

    .venv/bin/python benchmarks/preprocess_benchmark.py [--quick]

Synthetic cohorts are generated in a temporary folder (nothing is written inside the repo):
the default size (96 x 96 x 64) and, unless ``--quick``, the real BraTS size
(240 x 240 x 155, 4 modalities + seg). For each configuration it times

* the floor: reading the same five files per subject with
  ``nibabel.load(path).get_fdata(dtype=np.float32)`` and nothing else, with the same
  number of worker processes (a fork pool, or inline for one worker), and
* :func:`gliomil.data.preprocess.preprocess_cohort`, called as ``stages/preprocess.py`` calls it.

Every measured step runs in a fresh child process (this script with ``--run-step``), so its
memory starts from nothing and no earlier step's allocations linger. The parent samples the
summed RSS of that child and all its descendants (the pool workers) from /proc every 20 ms.
Pages shared between processes (libraries, fork copy-on-write) count in each of them, so the
summed RSS errs high; the summed PSS, which splits shared pages between their users, is shown
next to it. Memory is in MiB. The page cache is warm for both steps: every file is read once
before the first timed step.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Runs from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gliomil.data.brats import DEFAULT_SUFFIXES, Subject, find_subjects, resolve_files
from gliomil.runtime.workers import map_in_workers

DEFAULT_SHAPE = (96, 96, 64)
REAL_SHAPE = (240, 240, 155)
SEED = 0
SAMPLE_INTERVAL_S = 0.02

# Targets from the issue; "1.5 GB" of memory read as 1.5 GiB.
MEMORY_LIMIT_MIB = 1536.0
MEMORY_GROWTH_LIMIT = 0.10  # peak with the large cohort at most 10 % above the small one
THROUGHPUT_RATIO_LIMIT = 2.0  # preprocess at most 2x slower than the nibabel floor


@dataclass(frozen=True)
class Config:
    """One row of the results table: a cohort slice run with a worker count and output size."""

    size: str  # "default" or "real"
    root: str  # cohort folder
    subjects: int  # how many subjects of the cohort (balanced between grades)
    workers: int
    image_size: int


@dataclass
class Measurement:
    """What one child step reported, plus the process tree's memory peaks sampled from outside."""

    seconds: float
    subjects: int
    peak_tree_rss_mib: float
    peak_tree_pss_mib: float
    largest_process_mib: float

    @property
    def throughput(self) -> float:
        return self.subjects / self.seconds


# ----------------------------------------------------------------------------- plan


def plan(quick: bool, tmp: Path) -> tuple[list[Config], dict[str, tuple[tuple[int, int, int], int]]]:
    """The configurations to measure and the cohorts they need: {root: (shape, n_subjects)}."""
    default_root, real_root = str(tmp / "default"), str(tmp / "real")
    if quick:
        cohorts = {default_root: (DEFAULT_SHAPE, 8)}
        configs = [Config("default", default_root, 8, workers, 64) for workers in (1, 2)]
        return configs, cohorts
    cohorts = {default_root: (DEFAULT_SHAPE, 40), real_root: (REAL_SHAPE, 60)}
    configs = [
        Config("default", default_root, 40, 1, 64),
        Config("default", default_root, 40, 2, 64),
        Config("real", real_root, 20, 1, 64),
        Config("real", real_root, 20, 2, 64),
        Config("real", real_root, 60, 2, 64),
        Config("real", real_root, 20, 2, 128),
    ]
    return configs, cohorts


def make_cohorts(cohorts: dict[str, tuple[tuple[int, int, int], int]]) -> None:
    """Generate each cohort, half HGG and half LGG, then read every file once to warm the page cache."""
    from gliomil.synthetic.cohort import synthesize_cohort

    for root, (shape, count) in cohorts.items():
        start = time.perf_counter()
        synthesize_cohort(
            root, n_hgg=count - count // 2, n_lgg=count // 2, shape=shape, seed=SEED, workers=2, progress=False
        )
        size_mib = sum(path.stat().st_size for path in Path(root).rglob("*.nii.gz")) / 2**20
        print(
            f"generated {count} subjects of {'x'.join(map(str, shape))} in "
            f"{time.perf_counter() - start:.0f} s ({size_mib:.0f} MiB on disk)",
            file=sys.stderr,
        )
        warm_page_cache(Path(root))


def warm_page_cache(root: Path) -> None:
    """Read every file under ``root`` so that neither timed step pays for the first disk read."""
    for path in root.rglob("*.nii.gz"):
        with open(path, "rb") as file:
            while file.read(1 << 23):
                pass


def balanced(subjects: list[Subject]) -> list[Subject]:
    """Subjects alternating HGG, LGG, HGG, ... so that any prefix has both grades in equal parts.

    ``find_subjects`` sorts by id, which puts every HGG case before every LGG case.
    """
    hgg = [s for s in subjects if s.grade == "HGG"]
    lgg = [s for s in subjects if s.grade == "LGG"]
    return [s for i in range(max(len(hgg), len(lgg))) for s in (*hgg[i : i + 1], *lgg[i : i + 1])]


# ----------------------------------------------------------------------------- child steps


def load_floor_subject(paths: list[str]) -> int:
    """The floor's per-subject work: read each file to float32 with nibabel; returns the voxel count."""
    import nibabel as nib

    return sum(nib.load(path).get_fdata(dtype=np.float32).size for path in paths)


def run_floor(subjects: list[Subject], workers: int) -> None:
    """Load every subject's five files with nibabel alone, through the worker pool preprocess uses."""
    jobs = [[str(path) for path in resolve_files(s, DEFAULT_SUFFIXES).values()] for s in subjects]
    for _ in map_in_workers(load_floor_subject, jobs, workers):
        pass


def run_preprocess(subjects: list[Subject], workers: int, image_size: int, out_dir: Path) -> None:
    """Run the preprocess step exactly as the stage does (its imports, its pool, its output)."""
    from gliomil.data.preprocess import PreprocessSettings, preprocess_cohort

    preprocess_cohort(
        subjects,
        out_dir,
        PreprocessSettings(image_size=image_size),
        DEFAULT_SUFFIXES,
        on_error="fail",
        workers=workers,
        progress=False,
    )


def run_step(spec: dict) -> None:
    """Child-process entry: time one step and print its results as one JSON line on stdout."""
    subjects = balanced(find_subjects(spec["root"]))[: spec["subjects"]]
    # Imported before the clock starts in both steps (the stage imports it up front), so neither
    # times imports and both start from the same memory baseline.
    import gliomil.data.preprocess  # noqa: F401

    start = time.perf_counter()
    if spec["kind"] == "floor":
        run_floor(subjects, spec["workers"])
    else:
        run_preprocess(subjects, spec["workers"], spec["image_size"], Path(spec["out_dir"]))
    seconds = time.perf_counter() - start
    # ru_maxrss is in KiB on Linux; RUSAGE_CHILDREN covers the pool workers, reaped by now.
    largest_kib = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    print(json.dumps({"seconds": seconds, "subjects": len(subjects), "largest_process_mib": largest_kib / 1024}))


# ----------------------------------------------------------------------------- memory sampling


def descendants_and_self(pid: int) -> list[int]:
    """``pid`` and every process below it, from /proc/<pid>/task/<tid>/children."""
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        try:
            for children in Path(f"/proc/{current}/task").glob("*/children"):
                stack.extend(int(child) for child in children.read_text().split())
        except OSError:
            continue  # exited while being read
    return found


def proc_field_kib(path: str, field: str) -> int:
    """A "Field:  N kB" value from a /proc file; 0 once the process has exited (or is a zombie)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemorySampler(threading.Thread):
    """Samples a process tree's summed RSS and PSS until stopped, keeping the largest sum of each."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_rss_mib = 0.0
        self.peak_pss_mib = 0.0
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            pids = descendants_and_self(self.pid)
            rss = sum(proc_field_kib(f"/proc/{pid}/status", "VmRSS") for pid in pids)
            pss = sum(proc_field_kib(f"/proc/{pid}/smaps_rollup", "Pss") for pid in pids)
            self.peak_rss_mib = max(self.peak_rss_mib, rss / 1024)
            self.peak_pss_mib = max(self.peak_pss_mib, pss / 1024)
            self._stop_event.wait(SAMPLE_INTERVAL_S)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def measure(spec: dict) -> Measurement:
    """Run one step in a fresh child process while sampling its process tree's memory."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--run-step", json.dumps(spec)], stdout=subprocess.PIPE, text=True
    )
    sampler = TreeMemorySampler(child.pid)
    sampler.start()
    stdout, _ = child.communicate()
    sampler.stop()
    if child.returncode != 0:
        raise SystemExit(f"step {spec} failed with exit code {child.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return Measurement(
        result["seconds"], result["subjects"], sampler.peak_rss_mib, sampler.peak_pss_mib, result["largest_process_mib"]
    )


# ----------------------------------------------------------------------------- report


def measure_all(configs: list[Config], tmp: Path) -> list[tuple[Config, Measurement, Measurement]]:
    """(config, floor, preprocess) per config; a floor is measured once per (cohort, subjects, workers)."""
    floors: dict[tuple, Measurement] = {}
    rows = []
    for config in configs:
        base = {"root": config.root, "subjects": config.subjects, "workers": config.workers}
        key = (config.root, config.subjects, config.workers)
        if key not in floors:
            floors[key] = measure({**base, "kind": "floor"})
        preprocess = measure(
            {**base, "kind": "preprocess", "image_size": config.image_size, "out_dir": str(tmp / "preprocessed")}
        )
        rows.append((config, floors[key], preprocess))
        print(f"measured {config}", file=sys.stderr)
    return rows


def table(rows: list[tuple[Config, Measurement, Measurement]]) -> str:
    """The results as a Markdown table; ratio = preprocess time / floor time."""
    lines = [
        "| size | subjects | workers | image_size | nibabel floor (subj/s) | preprocess (subj/s) | ratio "
        "| peak tree RSS (MiB) | peak tree PSS (MiB) | largest process (MiB) | floor peak tree RSS (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for config, floor, pre in rows:
        shape = DEFAULT_SHAPE if config.size == "default" else REAL_SHAPE
        lines.append(
            f"| {config.size} {'x'.join(map(str, shape))} | {config.subjects} | {config.workers} "
            f"| {config.image_size} | {floor.throughput:.2f} | {pre.throughput:.2f} "
            f"| {floor.throughput / pre.throughput:.2f} | {pre.peak_tree_rss_mib:.0f} "
            f"| {pre.peak_tree_pss_mib:.0f} | {pre.largest_process_mib:.0f} | {floor.peak_tree_rss_mib:.0f} |"
        )
    return "\n".join(lines)


def verdicts(rows: list[tuple[Config, Measurement, Measurement]]) -> list[str]:
    """PASS/FAIL lines for the issue's targets, on the rows they apply to."""
    lines = []
    for config, floor, pre in rows:
        ratio = floor.throughput / pre.throughput
        lines.append(
            _verdict(
                ratio <= THROUGHPUT_RATIO_LIMIT,
                f"throughput within {THROUGHPUT_RATIO_LIMIT:g}x of the floor ({_name(config)}): ratio {ratio:.2f}",
            )
        )
    real = [(config, pre) for config, _, pre in rows if config.size == "real"]
    for config, pre in real:
        lines.append(
            _verdict(
                pre.peak_tree_rss_mib < MEMORY_LIMIT_MIB,
                f"peak tree RSS under {MEMORY_LIMIT_MIB:.0f} MiB = 1.5 GiB ({_name(config)}): "
                f"{pre.peak_tree_rss_mib:.0f} MiB (PSS {pre.peak_tree_pss_mib:.0f} MiB)",
            )
        )
    # Memory must not grow with the cohort: compare the two cohort sizes at equal workers and output.
    by_count = {config.subjects: pre for config, pre in real if config.workers == 2 and config.image_size == 64}
    if len(by_count) >= 2:
        small, large = min(by_count), max(by_count)
        growth = by_count[large].peak_tree_rss_mib / by_count[small].peak_tree_rss_mib - 1
        lines.append(
            _verdict(
                growth <= MEMORY_GROWTH_LIMIT,
                f"peak tree RSS with {large} subjects within {MEMORY_GROWTH_LIMIT:.0%} of "
                f"{small} subjects: {growth:+.1%}",
            )
        )
    return lines


def _name(config: Config) -> str:
    return f"{config.size}, {config.subjects} subjects, workers={config.workers}, image_size={config.image_size}"


def _verdict(passed: bool, text: str) -> str:
    return f"{'PASS' if passed else 'FAIL'}: {text}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few default-size subjects only (smoke check)")
    parser.add_argument("--run-step", help=argparse.SUPPRESS)  # internal: one measured step, as JSON
    args = parser.parse_args()
    if args.run_step:
        run_step(json.loads(args.run_step))
        return

    with tempfile.TemporaryDirectory(prefix="gliomil-preprocess-bench-") as tmp_name:
        tmp = Path(tmp_name)
        configs, cohorts = plan(args.quick, tmp)
        make_cohorts(cohorts)
        load_before = os.getloadavg()[0]
        rows = measure_all(configs, tmp)
        load_after = os.getloadavg()[0]
    print(table(rows))
    print()
    print("- Page cache warm for every step: all files were read once before the first timed step.")
    print(
        "- Times cover the whole step after the stage's imports: pool start-up and writing the output. "
        "Ratio = preprocess time / floor time at the same worker count."
    )
    print(
        "- Peak tree RSS/PSS: the largest sum of VmRSS / Pss over the step's process and its workers, "
        f"sampled every {SAMPLE_INTERVAL_S * 1000:.0f} ms (spikes shorter than that can be missed). RSS "
        "counts shared pages in every process that maps them, so it errs high; PSS splits them. "
        "Largest process = the biggest single ru_maxrss in the step (exact, not sampled)."
    )
    print(
        f"- {os.cpu_count()} CPUs; 1-minute load average {load_before:.2f} before the timed steps, "
        f"{load_after:.2f} after (other jobs on the machine skew the rows they overlap)."
    )
    print()
    print("\n".join(verdicts(rows)))


if __name__ == "__main__":
    main()
