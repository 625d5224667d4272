"""End to end: a 2 seeds x 2 configurations sweep in DVC's own queue, then the comparison across repeats.

The baseline commit is the session's finished two-fold run (seed 42, the after configuration); the queue adds the
other three: before at seeds 42 and 1, after at seed 1."""

import subprocess
import sys
import time

import pytest
from conftest import DVC, dvc, run_tool, stages_run, tool_env, two_fold_params
from dvc.api import exp_show

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("two_fold_run")]

BEFORE = "label_smoothing=0.1,use_class_weights=false"
AFTER = "label_smoothing=0.2,use_class_weights=true"  # tiny_params()'s, so the baseline commit's
QUEUED = {BEFORE: ("42", "1"), AFTER: ("1",)}
FOLD_STAGES = {f"{stage}@{k}" for stage in ("train", "evaluate") for k in range(2)}
PACKAGING = {"bundle", "external", "aggregate"}
QUEUE_TIMEOUT_S = 20 * 60  # three tiny cross-validations, one at a time, on a busy 2-core machine


def _queue_tasks(repo) -> dict[str, str]:
    """Experiment name -> status ("Queued", "Running", "Success", "Failed") from `dvc queue status`."""
    tasks = {}
    for line in dvc(repo, "queue", "status").splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0] != "Task" and not line.startswith("Worker status"):
            tasks[fields[1]] = fields[-1]
    return tasks


def _wait_for_queue(repo, timeout_s: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        tasks = _queue_tasks(repo)
        if tasks and not {"Queued", "Running"} & set(tasks.values()):
            return tasks
        if time.monotonic() > deadline:
            raise AssertionError(f"the queue did not finish within {timeout_s} s: {tasks}")
        time.sleep(5)  # each `dvc queue status` costs a second of CPU the queue needs


def test_seed_sweep_in_the_queue_then_repeats_compares_the_configurations(finished_run, tmp_path):
    repo = finished_run(two_fold_params()).copy(tmp_path / "repo")  # after a from-scratch `dvc repro`
    run_tool(["git", "add", "-A"], repo)
    run_tool(["git", "commit", "-qm", "baseline run"], repo)  # the queued experiments' baseline: seed 42, AFTER
    for config, seeds in QUEUED.items():
        overrides = [arg for item in config.split(",") for arg in ("-S", item)]
        queued = dvc(repo, "exp", "run", "--queue", "-S", f"seed={','.join(seeds)}", *overrides)
        assert queued.count("Queued experiment") == len(seeds)
    env = tool_env(repo / "src")  # the worker and its stages inherit it: the venv first on PATH
    try:
        # `queue start` leaves a daemon worker holding the stdout/stderr it inherits: give it a file, not a pipe,
        # or waiting for the command's output waits for the whole queue.
        with open(tmp_path / "queue_start.log", "w") as log:
            subprocess.run([DVC, "queue", "start", "-j", "1"], cwd=repo, env=env, stdout=log, stderr=log, check=True)
        tasks = _wait_for_queue(repo, QUEUE_TIMEOUT_S)
    finally:
        subprocess.run([DVC, "queue", "stop", "--kill"], cwd=repo, env=env, capture_output=True, timeout=120)
    assert len(tasks) == 3 and set(tasks.values()) == {"Success"}, tasks

    rows = [row for row in exp_show(repo=str(repo)) if row["typ"] != "baseline"]
    assert sorted(row["Experiment"] for row in rows) == sorted(tasks) and {row["State"] for row in rows} == {"Success"}
    seeds = {row["Experiment"]: int(row["seed"]) for row in rows}
    assert sorted(seeds.values()) == [1, 1, 42]
    # The baseline's seed keeps its split and baselines; another seed re-splits and retrains on the same cohort
    # (synthesize and preprocess are kept). A seed's split is the same for both configurations: the experiments
    # share the run-cache, so the second of seed 1 restores it.
    restored_splits = 0
    for name in tasks:
        log = dvc(repo, "queue", "logs", name)
        restored = {line.split("'")[1] for line in log.splitlines() if "is cached - skipping run" in line}
        assert restored <= {"split", "baselines"}, restored
        resplit = {"split", "baselines"} if seeds[name] == 1 else set()
        assert stages_run(log) | restored == {"check_params"} | resplit | FOLD_STAGES | PACKAGING, log
        restored_splits += "split" in restored
    assert restored_splits == 1

    result = run_tool(
        [
            sys.executable,
            "-m",
            "gliomil.comparison.repeats",
            "--before",
            BEFORE,
            "--after",
            AFTER,
            "--report",
            "reports/audit_effect.md",
        ],
        repo,
        env=tool_env(repo / "src"),
    )
    out = result.stdout
    report = (repo / "reports/audit_effect.md").read_text()
    assert out.startswith(report) and "wrote reports/audit_effect.md and reports/audit_effect.png" in out
    assert "| Endpoint | Seed 1 | Seed 42 |" in report and "| Δ seed 1 | Δ seed 42 |" in report
    assert "Paired by seed: 1, 42 (r = 2 repeats of k = 2 folds: 4 paired per-fold differences)" in report
    assert "- Before: label_smoothing=0.1, use_class_weights=false: " in report
    assert "only: " not in report  # the baseline commit's run is the after configuration's seed 42: paired
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout
    assert f" ({head[:7]}) (seed 42)" in report  # a branch moves on: the report names the commit it read
    verdicts = [line for line in report.splitlines() if line.startswith("- Primary endpoint: ")]
    assert len(verdicts) == 1 and "held-out AUC" in verdicts[0] and "corrected CV t-test p" in verdicts[0]
    assert (repo / "reports/audit_effect.png").read_bytes()[:4] == b"\x89PNG"
    print(out)  # shown with pytest -n 0 -s: the report of a real sweep

    # Without --before/--after the two configurations are told apart by the baseline commit: it holds AFTER.
    default = run_tool([sys.executable, "-m", "gliomil.comparison.repeats"], repo, env=tool_env(repo / "src")).stdout
    assert "- After: label_smoothing=0.2, use_class_weights=true: " in default and "baseline commit" in default
    unknown = run_tool(
        [sys.executable, "-m", "gliomil.comparison.repeats", "--before", "label_smoothing=0.3"],
        repo,
        env=env,
        check=False,
    )
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: --before label_smoothing=0.3 matches no")
    assert len(unknown.stderr.strip().splitlines()) == 1
