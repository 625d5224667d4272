"""Shared fixtures: a tiny synthetic cohort written once per test session."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gliomil.synthetic import synthesize_cohort

# Test tensors are tiny: a second intra-op thread only adds synchronisation, and when the
# machine is busy OpenMP's waiting threads made the training tests six times slower.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
TINY_SHAPE = (32, 32, 24)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory) -> Path:
    """A BraTS 2018-style tree of 8 HGG + 6 LGG small subjects. Treat as read-only: copy before changing."""
    root = tmp_path_factory.mktemp("cohort") / "synthetic"
    synthesize_cohort(root, n_hgg=8, n_lgg=6, shape=TINY_SHAPE, seed=5, workers=1)
    return root


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
