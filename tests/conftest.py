"""Shared fixtures: a tiny synthetic cohort, and finished tiny pipeline runs (finished_run, tiny_run), each made once
per test session; pipeline repos in temporary git repositories and the helpers that run DVC in them."""

import contextlib
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from gliomil.data.brats import DEFAULT_SUFFIXES, find_subjects
from gliomil.data.preprocess import PreprocessSettings, preprocess_cohort
from gliomil.runtime.device import make_deterministic
from gliomil.synthetic.cohort import synthesize_cohort

# Test tensors are tiny: a second intra-op thread only adds synchronisation, and when the
# machine is busy OpenMP's waiting threads made the training tests six times slower.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def deterministic_kernels():
    """As every stage that trains or scores: on a GPU the training tests' bit-identity needs it."""
    make_deterministic()


TINY_SHAPE = (32, 32, 24)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """A BraTS 2018-style tree of 8 HGG + 6 LGG small subjects. Treat as read-only: copy before changing."""
    root = tmp_path_factory.mktemp("cohort") / "synthetic"
    synthesize_cohort(root, n_hgg=8, n_lgg=6, shape=TINY_SHAPE, seed=5, workers=1)
    return root


@pytest.fixture(scope="session")
def tiny_store(tiny_cohort, tmp_path_factory) -> Path:
    """The tiny cohort preprocessed to 16 x 16 slices (with its tumour maps). Treat as read-only: copy before
    changing."""
    out = tmp_path_factory.mktemp("store") / "preprocessed"
    preprocess_cohort(
        find_subjects(tiny_cohort), out, PreprocessSettings(image_size=16), DEFAULT_SUFFIXES, workers=1, progress=False
    )
    return out


@pytest.fixture
def copy_of_tiny_cohort(tiny_cohort, tmp_path) -> Path:
    target = tmp_path / "cohort"
    shutil.copytree(tiny_cohort, target)
    return target


def tool_env(extra_pythonpath: Path | None = None) -> dict:
    """Environment for subprocesses: this interpreter's bin/ first on PATH (DVC stages call `python`)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if extra_pythonpath is not None:
        env["PYTHONPATH"] = str(extra_pythonpath)
    return env


def run_tool(args, cwd, env=None, check=True) -> subprocess.CompletedProcess:
    """Run a command, capturing text output; on an unexpected exit code show its output."""
    result = subprocess.run(args, cwd=cwd, env=env or tool_env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


# pROC's aSAH example data, with its provenance and published answers in tests/data/README.md.
ASAH = REPO / "tests" / "data" / "asah.csv"


@pytest.fixture(scope="session")
def asah():
    """pROC's aSAH data: labels (1 = outcome Poor) and the three markers, higher = more likely Poor."""
    with ASAH.open(newline="") as f:
        rows = list(csv.DictReader(f))
    labels = np.array([r["outcome"] == "Poor" for r in rows], dtype=int)
    markers = {k: np.array([float(r[k]) for r in rows]) for k in ("wfns", "s100b", "ndka")}
    return labels, markers


# -- a real DVC pipeline in a temporary git repository (end-to-end tests) -----------------------------------

DVC = str(Path(sys.executable).parent / "dvc")


def tiny_params() -> dict:
    """The committed params shrunk to a cohort and model that run the whole pipeline in about a minute."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["synthesize"].update(n_hgg=10, n_lgg=6, shape=[32, 32, 24], workers=1)
    params["external"]["site"].update(n_hgg=4, n_lgg=4, shape=[32, 32, 20], workers=1)
    params["preprocess"].update(image_size=16, workers=2)
    params["split"]["inner_val_fraction"] = 0.5
    # One torch thread: the suite runs two processes on two cores, and OpenMP threads waiting for a busy core are slow.
    params["train"].update(epochs=2, bag_size=8, plot_every=1, threads=1)
    params["train"]["model"].update(width=4, depth=2)
    return params


def two_fold_params(epochs: int = 2) -> dict:
    """Tiny, two folds; tiny_params()' one pinned torch thread makes a fan-out and a serial run train bit for bit
    alike. The session's finished run of these params serves the fan-out, the remote and the sweep's baseline."""
    params = tiny_params()
    params["folds"] = [0, 1]
    params["train"]["epochs"] = epochs
    return params


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def pipeline_repo(tmp_path) -> Path:
    """A git + DVC repo holding this project's pipeline, its code and tiny params."""
    return make_pipeline_repo(tmp_path)


def make_pipeline_repo(tmp_path: Path, params: dict | None = None) -> Path:
    """A git + DVC repo (one commit) holding this project's pipeline and code, and ``params`` (default: tiny)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "stages", "src"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(source, repo / name)
    write_params(repo, params or tiny_params())
    run_tool(["git", "init", "-q"], repo)
    run_tool(["git", "config", "user.email", "ci@example.invalid"], repo)
    run_tool(["git", "config", "user.name", "ci"], repo)
    run_tool([DVC, "init", "-q"], repo)
    shutil.copytree(REPO / ".dvc/plots", repo / ".dvc/plots")  # the plot templates dvc.yaml names
    shutil.copy(REPO / ".dvcignore", repo / ".dvcignore")
    run_tool(["git", "add", "-A"], repo)
    run_tool(["git", "commit", "-qm", "pipeline"], repo)
    return repo


@contextlib.contextmanager
def sigint_as_in_a_terminal():
    """Processes started inside take SIGINT as from a terminal, whatever this test run inherited.

    A test run started in the background (``pytest ... &`` from a script, nohup) may inherit SIGINT ignored, and an
    ignored signal stays ignored in every process it starts: the Ctrl-C a test sends would then reach nothing.
    Python's own handler here resets to the default in a started program, as a terminal's shell leaves it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def dvc(repo: Path, *args) -> str:
    """stdout of a successful `dvc ARGS` in ``repo``, its stages importing ``repo``'s own code."""
    return run_tool([DVC, *args], repo, env=tool_env(repo / "src")).stdout


def repro(repo: Path, *args) -> str:
    return dvc(repo, "repro", *args)


def stages_run(output: str) -> set[str]:
    """The stages `dvc repro` / `dvc exp run` output says it ran."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")}


# -- one from-scratch run per params, shared by the session's end-to-end tests --------------------------------------
# pytest-xdist runs the suite in two processes (pyproject.toml's addopts), each with its own session fixtures. The
# tests that share a finished run carry the same `xdist_group` mark, so one process makes that run and runs them all:
#   tiny_run        tiny_params(), five folds (test_pipeline, test_dag_cut)
#   two_fold_run    two_fold_params() (test_scale's fan-out and remote, test_sweep's baseline)
# The kill and Ctrl-C tests' reference run (test_faults_pipeline.fault_params(), two folds) is left ungrouped: made
# in each process that runs one of them, it costs less than one process running both.


SHARED_RUNS = {"tiny_run": "tiny_run", "tiny_run_copy": "tiny_run"}  # fixture -> the xdist_group of its users


@pytest.hookimpl(trylast=True)  # after xdist's own, which appends "@<group>" to a grouped test's id
def pytest_collection_modifyitems(config, items):
    """A test that uses tiny_run outside its xdist_group would make that run again in the other process;
    a grouped test whose id lacks its group would be scheduled alone (pytest-dev/pytest-xdist#1386): both refused.

    The slow tests go first (xdist hands out its groups first, then single tests in this order), so the quick ones
    fill in at the end instead of a long one starting last on one process while the other has finished."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: the order is otherwise kept
    for item in items:
        group = item.get_closest_marker("xdist_group")
        for fixture in SHARED_RUNS.keys() & set(item.fixturenames):
            if group is None or group.args[0] != SHARED_RUNS[fixture]:
                raise pytest.UsageError(f"{item.nodeid} uses {fixture}: mark it xdist_group({SHARED_RUNS[fixture]!r})")
        if group is not None and getattr(config.option, "loadgroup", False) and "@" not in item.nodeid:
            raise pytest.UsageError(f"{item.nodeid}: xdist dropped its group; see requirements.txt on pytest-xdist")


@dataclass(frozen=True)
class FinishedRun:
    """A from-scratch `dvc repro` of the pipeline, done once per test session.

    ``repo`` is the finished repo: its outputs, dvc.lock (not committed), its DVC cache with every stage's run-cache
    entry. Treat it as read-only: ``copy`` it before running anything that writes. ``output`` is what that
    `dvc repro` printed and ``seconds`` how long it took, for tests that check a run from scratch.
    """

    repo: Path
    output: str
    seconds: float

    def copy(self, target: Path) -> Path:
        """An independent copy at ``target`` (which must not exist): working tree, .git and .dvc (cache, run-cache)
        alike; nothing in it refers to the original. ``target``'s parent is made if needed."""
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.repo, target, symlinks=True)
        return target


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """``finished_run(params) -> FinishedRun``: a pipeline repo with ``params`` after one `dvc repro`, made the first
    time a test asks for these params and reused by every later one (copy it before changing anything)."""
    runs: dict[str, FinishedRun] = {}

    def get(params: dict) -> FinishedRun:
        key = json.dumps(params, sort_keys=True)
        if key not in runs:
            repo = make_pipeline_repo(tmp_path_factory.mktemp("finished_run"), params)
            start = time.monotonic()
            output = repro(repo)
            runs[key] = FinishedRun(repo, output, time.monotonic() - start)
        return runs[key]

    return get


@pytest.fixture(scope="session")
def tiny_run(finished_run) -> FinishedRun:
    """The whole pipeline run from scratch once on tiny_params() (five folds)."""
    return finished_run(tiny_params())


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path) -> Path:
    """This test's own copy of ``tiny_run``'s finished repo: up to date, outputs and cache in place."""
    return tiny_run.copy(tmp_path / "repo")
