"""Faults of a real `dvc repro` on a tiny cohort: `dvc` killed alone, and Ctrl-C at 20 moments of a fold."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import DVC, dvc, make_pipeline_repo, repro, sigint_as_in_a_terminal, tiny_params, tool_env

pytestmark = pytest.mark.slow

FOLD_0_OUTPUTS = ("models/fold_0", "plots/train/fold_0", "logs/train/fold_0", "metrics/train/fold_0.json")


def fault_params() -> dict:
    params = tiny_params()
    params["folds"] = [0, 1]
    params["train"]["epochs"] = 5  # epoch lines to aim at; the fifth leaves time to finish
    return params


def start(repo: Path, *args: str, shell: str | None = None) -> subprocess.Popen:
    """`dvc ARGS` in its own session (so a signal to its group reaches dvc and its stage, as a terminal's Ctrl-C
    does), stdout and stderr merged and unbuffered. ``shell``: the $SHELL dvc runs stage commands with."""
    env = tool_env(repo / "src")
    env["PYTHONUNBUFFERED"] = "1"
    if shell:
        env["SHELL"] = shell
    with sigint_as_in_a_terminal():
        return subprocess.Popen(
            [DVC, *args],
            cwd=repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )


def read_until(process: subprocess.Popen, text: str, timeout: float = 180) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if text in line:
            return lines
        if not line and process.poll() is not None:
            raise AssertionError(f"exited before {text!r}:\n{''.join(lines)}")
    raise AssertionError(f"no {text!r} within {timeout} s:\n{''.join(lines)}")


def stage_processes(repo: Path) -> list[int]:
    """PIDs of the processes running a stage script of ``repo`` (by working folder and command line)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if Path(proc / "cwd").resolve() == repo.resolve() and b"stages/" in (proc / "cmdline").read_bytes():
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    pids.append(int(proc.name))
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
    return pids


def hashes(repo: Path, paths=None) -> dict[str, str]:
    """SHA-256 of every output file (all of them, or those under ``paths``), by path; dvc.lock included."""
    inputs = {"src", "stages", ".git", ".dvc", "params.yaml", "dvc.yaml"}
    roots = [repo / p for p in paths] if paths else [repo]
    files = [f for root in roots for f in ([root] if root.is_file() else root.rglob("*")) if f.is_file()]
    return {
        str(f.relative_to(repo)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in sorted(files)
        if f.relative_to(repo).parts[0] not in inputs
    }


def test_killing_dvc_alone_leaves_no_orphan_and_the_next_repro_is_identical(finished_run, tmp_path):
    reference = finished_run(fault_params()).repo  # the session's uninterrupted run, from scratch; only read here
    (tmp_path / "killed").mkdir()
    repo = make_pipeline_repo(tmp_path / "killed", fault_params())

    # dvc runs a stage as `$SHELL -c CMD`. bash replaces itself with CMD; dash (Debian's /bin/sh, what dvc uses when
    # SHELL is unset, as on CI) waits for it and outlives a killed dvc, so the stage's parent stays alive.
    process = start(repo, "repro", shell="/bin/sh")
    read_until(process, "fold 0 epoch   2:")
    stages = stage_processes(repo)
    assert stages, "no stage process found"
    os.kill(process.pid, signal.SIGKILL)  # dvc alone, as the OOM killer or a wrong PID would
    process.wait(timeout=30)
    deadline = time.monotonic() + 15
    while stage_processes(repo) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stage_processes(repo) == [], f"stage processes {stages} outlived dvc"

    resumed = repro(repo)
    # the stage stopped at a safe point, after saving its state
    assert "fold 0: resuming after epoch" in resumed, resumed
    # DVC appends a stage's entry to dvc.lock when it first records it, and the order of stages that do not depend
    # on each other may differ between two `dvc repro`s: the same entries, maybe in another order.
    assert yaml.safe_load((repo / "dvc.lock").read_text()) == yaml.safe_load((reference / "dvc.lock").read_text())
    lock = {"dvc.lock"}
    assert {p: h for p, h in hashes(repo).items() if p not in lock} == {
        p: h for p, h in hashes(reference).items() if p not in lock
    }
    report = (repo / "reports/audit.md").read_text()
    assert "MIL diagnostics logged in all epochs: **passed**" in report
    assert "Plots saved per epoch (plot_every=1): **passed**" in report


MOMENTS = [(epoch, delay) for epoch in (1, 2, 3, 4) for delay in (0.0, 0.02, 0.05, 0.1, 0.2)]


def test_ctrl_c_at_20_moments_of_a_fold_always_stops_and_repro_then_finishes_identically(finished_run, tmp_path):
    repo = finished_run(fault_params()).copy(tmp_path / "repo")  # after a from-scratch `dvc repro`
    reference = hashes(repo)
    assert any(path.startswith("models/fold_0/") for path in reference)

    for epoch, delay in MOMENTS:
        # `dvc repro train@0` below restores the fold from the run-cache and leaves the stopped run's state, which
        # a real run would continue: each moment trains from epoch 1 (resuming is the next test's subject).
        shutil.rmtree(repo / ".dvc/tmp/gliomil/train_fold_0", ignore_errors=True)
        process = start(repo, "repro", "--force", "--single-item", "train@0", "evaluate@0")
        read_until(process, f"fold 0 epoch {epoch:3d}:")
        time.sleep(delay)
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        output = process.communicate(timeout=120)[0]
        moment = f"epoch {epoch} + {delay} s"
        assert process.returncode != 0, f"{moment}: the pipeline went on\n{output}"
        assert "error: stopped by SIGINT" in output, f"{moment}\n{output}"
        assert "Running stage 'evaluate@0'" not in output, f"{moment}: the pipeline went on\n{output}"
        assert "Traceback" not in output and "Exception ignored" not in output, f"{moment}\n{output}"
        assert stage_processes(repo) == [], moment

        repro(repo, "train@0")
        assert hashes(repo, FOLD_0_OUTPUTS) == {p: h for p, h in reference.items() if p.startswith(FOLD_0_OUTPUTS)}
        assert "Data and pipelines are up to date." in dvc(repo, "status"), moment
    assert hashes(repo) == reference


def test_a_preempted_fold_continues_where_it_stopped_and_ends_bit_identical(tmp_path):
    """SIGTERM (a scheduler's pre-emption) after epoch 3 of 5; the next `dvc repro` trains epochs 4 and 5 only,
    and the fold's outputs equal those of an uninterrupted run, byte for byte."""
    repo = make_pipeline_repo(tmp_path, fault_params())
    process = start(repo, "repro", "train@0")
    read_until(process, "fold 0 epoch   3:")
    os.killpg(process.pid, signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert process.returncode != 0 and len(errors) == 1, output
    saved = int(errors[0].split("its state after epoch ")[1].split()[0])  # 3, or 4 if the signal came late
    assert errors[0] == (
        f"error: stopped by SIGTERM in fold 0 {errors[0].split(' in fold 0 ')[1].split(';')[0]}; its state after "
        f"epoch {saved} is in .dvc/tmp/gliomil/train_fold_0: `dvc repro` continues from epoch {saved + 1}"
    ), errors[0]
    assert "Traceback" not in output and stage_processes(repo) == []

    resumed = repro(repo, "train@0")
    assert f"fold 0: resuming after epoch {saved} of 5" in resumed
    assert [epoch for epoch in range(1, 6) if f"fold 0 epoch {epoch:3d}:" in resumed] == list(range(saved + 1, 6))
    assert not (repo / ".dvc/tmp/gliomil/train_fold_0").exists()  # a finished fold leaves no state behind
    after_resume = hashes(repo, FOLD_0_OUTPUTS)

    uninterrupted = repro(repo, "--force", "--single-item", "train@0")
    assert "resuming" not in uninterrupted and "fold 0 epoch   1:" in uninterrupted
    assert hashes(repo, FOLD_0_OUTPUTS) == after_resume
