"""What checking every subject's slices against the manifest's SHA-256 costs when training loads them.

Usage (after `dvc repro preprocess`)::

    .venv/bin/python benchmarks/verify_benchmark.py [--repeats 5]

Times reading every subject of data/preprocessed into memory as the training and evaluate stages do,
without the check (``load_bag``) and with it (``load_verified_bag``: one SHA-256 pass over the bytes read),
median of ``--repeats`` rounds each, interleaved, the files warm in the page cache (the common case: the
preprocess stage just wrote them, or the previous fold read them).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from gliomil import paths
from gliomil.data.slices import load_bag, load_verified_bag, read_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    manifest = read_manifest(paths.PREPROCESSED)
    rows = list(zip(manifest["subject_id"], manifest["content_sha256"]))
    size = sum((paths.PREPROCESSED / "slices" / f"{s}.npy").stat().st_size for s, _ in rows)
    times = {"read": [], "read + SHA-256": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        for subject, _ in rows:
            np.ascontiguousarray(load_bag(paths.PREPROCESSED, subject, mmap=False))
        times["read"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for subject, sha256 in rows:
            load_verified_bag(paths.PREPROCESSED, subject, sha256)
        times["read + SHA-256"].append(time.perf_counter() - start)
    read, checked = (statistics.median(times[key]) for key in times)
    print(f"{len(rows)} subjects, {size / 1e6:.0f} MB of slices; median of {args.repeats} rounds")
    print(f"read:           {read:.3f} s ({size / 1e6 / read:.0f} MB/s)")
    print(f"read + SHA-256: {checked:.3f} s ({size / 1e6 / checked:.0f} MB/s)")
    print(f"the check adds {checked - read:.3f} s per full pass ({checked / read:.2f}x the read)")


if __name__ == "__main__":
    main()
