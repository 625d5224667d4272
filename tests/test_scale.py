"""End to end: folds trained in parallel through DVC's run-cache (`gliomil fanout`, the SLURM recipe), and results
shared through a DVC remote."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import (
    DVC,
    REPO,
    dvc,
    make_pipeline_repo,
    repro,
    run_tool,
    sigint_as_in_a_terminal,
    stages_run,
    tool_env,
    two_fold_params,
)

from gliomil.scale.fanout import _make_workers

pytestmark = pytest.mark.slow

UPSTREAM = ("check_params", "synthesize", "preprocess", "split")
FOLDS = (0, 1)  # two_fold_params()
SBATCH = REPO / "docs" / "slurm_fanout.sbatch"
FOLD_LINE = re.compile(
    r"^  fold (\d+): worker (\d+) \(.*\), (trained|restored from the run-cache), \+([\d.]+) s -> \+([\d.]+) s"
)


def _repo(tmp_path: Path, name: str, params: dict | None = None) -> Path:
    (tmp_path / name).mkdir()
    return make_pipeline_repo(tmp_path / name, params or two_fold_params())


def _fanout(repo: Path, *args, check: bool = True) -> subprocess.CompletedProcess:
    return run_tool(
        [sys.executable, "-m", "gliomil.cli", "fanout", *args], repo, env=tool_env(repo / "src"), check=check
    )


def _prefixed(out: str, prefix: str) -> list[str]:
    return [line[len(prefix) :] for line in out.splitlines() if line.startswith(prefix)]


def _ran(lines: list[str]) -> set[str]:
    return stages_run("\n".join(lines))


def _restored(lines: list[str]) -> set[str]:
    return {line.split("'")[1] for line in lines if "is cached - skipping run" in line}


def _worktrees(repo: Path) -> list[str]:
    listing = run_tool(["git", "worktree", "list", "--porcelain"], repo).stdout
    return [line.split(" ", 1)[1] for line in listing.splitlines() if line.startswith("worktree ")]


def _assert_cleaned_up(repo: Path) -> None:
    assert _worktrees(repo) == [str(repo)]
    assert not list((repo / ".dvc/tmp/gliomil/fanout").glob("worker_*/"))


def _commit_all(repo: Path, message: str) -> None:
    run_tool(["git", "add", "-A"], repo)
    run_tool(["git", "commit", "-qm", message], repo)


@pytest.mark.xdist_group("two_fold_run")
def test_fanout_trains_the_folds_at_once_and_the_workspace_restores_them(finished_run, tmp_path):
    serial_run = finished_run(two_fold_params())  # the session's serial `dvc repro` of these params, from scratch
    serial, serial_s = serial_run.repo, serial_run.seconds  # only read below

    repo = _repo(tmp_path, "fanout")
    start = time.monotonic()
    out = _fanout(repo, "-j", "2").stdout
    fanout_s = time.monotonic() - start

    # Upstream once, here; each worker restores it from the run-cache and trains its own fold, at the same time.
    upstream = _prefixed(out, "[workspace] ")
    assert _ran(upstream[: upstream.index("dvc commit --force --with-deps split")]) == set(UPSTREAM)
    folds = [m.groups() for m in map(FOLD_LINE.match, out.splitlines()) if m]
    assert sorted((int(k), int(w), how) for k, w, how, _, _ in folds) == [(0, 0, "trained"), (1, 1, "trained")], out
    starts, ends = [float(m[3]) for m in folds], [float(m[4]) for m in folds]
    assert max(starts) < min(ends), f"the workers did not overlap: {folds}"
    for worker, fold in enumerate(FOLDS):
        lines = _prefixed(out, f"[worker {worker}] ")
        assert _ran(lines) == {f"train@{fold}"}, lines
        assert _restored(lines) == set(UPSTREAM), lines

    # The workspace's `dvc repro` restores both folds from the run-cache and trains nothing.
    final = upstream[upstream.index("dvc repro") :]
    assert _restored(final) == {f"train@{k}" for k in FOLDS}, final
    assert not {stage for stage in _ran(final) if stage.startswith("train@")}, final
    assert not [line for line in out.splitlines() if line.startswith(("warning: ", "note: "))], out
    _assert_cleaned_up(repo)

    for name in [f"models/fold_{k}/best.pt" for k in FOLDS] + ["metrics/headline.json", "metrics/cv_summary.json"]:
        assert (repo / name).read_bytes() == (serial / name).read_bytes(), name
    summary = out[out.index("fan-out done in") :]
    print(
        f"\nwall time, 2 folds on a {os.cpu_count()}-core machine: gliomil fanout -j 2 {fanout_s:.1f} s, "
        f"serial dvc repro {serial_s:.1f} s\n{summary}"
    )


def test_folds_round_robin_one_gpu_per_worker_and_the_cores_divided(tmp_path):
    (tmp_path / "fanout").mkdir()
    workers = _make_workers(3, ["0", "1"], tmp_path, tmp_path, tmp_path / "fanout", [0, 1, 2, 3, 4], 1)
    assert [(w.folds, w.gpu, w.env["CUDA_VISIBLE_DEVICES"]) for w in workers] == [
        ([0, 3], "0", "0"),
        ([1, 4], "1", "1"),
        ([2], "0", "0"),
    ]
    threads = str(max(1, len(os.sched_getaffinity(0)) // 3))
    assert {(w.env["OMP_NUM_THREADS"], w.env["MKL_NUM_THREADS"]) for w in workers} == {(threads, threads)}
    assert [w.worktree for w in workers] == [tmp_path / f"fanout/worker_{i}" for i in range(3)]
    cpu_only = _make_workers(4, [], tmp_path, tmp_path, tmp_path / "fanout", [0, 1], 0)  # no more workers than folds
    assert [(w.folds, w.gpu) for w in cpu_only] == [([0], None), ([1], None)]
    # train.threads 0: torch's thread count stays a serial run's (it changes a CPU run's checkpoints)
    assert all(w.env.get("OMP_NUM_THREADS") == os.environ.get("OMP_NUM_THREADS") for w in cpu_only)
    assert cpu_only[0].env.get("CUDA_VISIBLE_DEVICES") == os.environ.get("CUDA_VISIBLE_DEVICES")


def test_fanout_refuses_uncommitted_changes_and_names_a_failed_fold(tmp_path):
    repo = _repo(tmp_path, "repo")
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("seed: 42", "seed: 43", 1))
    refused = _fanout(repo, "-j", "2", check=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("error: uncommitted changes to the pipeline (M params.yaml)")
    assert len(refused.stderr.splitlines()) == 1
    (repo / "params.yaml").write_text(params)

    # Fold 1's training fails (a stand-in for any failure); worker 0 finishes fold 0.
    stage = (repo / "stages/train.py").read_text()
    assert stage.count("\ndef main():\n") == 1
    (repo / "stages/train.py").write_text(
        stage.replace("\ndef main():\n", '\ndef main():\n    if sys.argv[1:] == ["1"]:\n        sys.exit("injected")\n')
    )
    _commit_all(repo, "fold 1 fails")
    failed = _fanout(repo, "-j", "2", check=False)
    log = ".dvc/tmp/gliomil/fanout/worker_1.log"
    assert failed.returncode == 1
    assert failed.stderr.splitlines() == [
        f"error: fold 1 failed in worker 1 (dvc repro train@1 exited 255); its log: {log}"
    ]
    assert "injected" in (repo / log).read_text()
    _assert_cleaned_up(repo)
    assert "Stage 'train@0' is cached - skipping run" in repro(repo, "train@0")


def test_ctrl_c_stops_the_workers_and_the_next_fanout_continues_their_folds(tmp_path):
    repo = _repo(tmp_path, "repo", two_fold_params(epochs=4))
    with sigint_as_in_a_terminal():
        process = subprocess.Popen(
            [sys.executable, "-m", "gliomil.cli", "fanout", "-j", "2"],
            cwd=repo,
            env=tool_env(repo / "src"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    lines, epochs_done = [], set()
    for line in process.stdout:
        lines.append(line)
        match = re.match(r"\[worker (\d)\] fold \d epoch   1:", line)
        if match:
            epochs_done.add(match[1])
            if epochs_done == {"0", "1"}:
                process.send_signal(signal.SIGINT)
    assert process.wait(timeout=300) == 130, "".join(lines)
    stderr = process.stderr.read()
    assert stderr.splitlines()[-1].startswith(
        "error: interrupted: the workers were stopped and their worktrees removed"
    )
    _assert_cleaned_up(repo)
    # What the stopped folds saved is kept here: the next fan-out moves it into its workers, which continue it.
    for worker, fold in enumerate(FOLDS):
        assert (
            f"fold {fold}: its resume state moved from worker {worker} to .dvc/tmp/gliomil/train_fold_{fold}\n" in lines
        )
        assert (repo / f".dvc/tmp/gliomil/train_fold_{fold}/state.pt").is_file()
    out = _fanout(repo, "-j", "2").stdout
    for worker, fold in enumerate(FOLDS):
        worker_lines = _prefixed(out, f"[worker {worker}] ")
        assert f"fold {fold}: its resume state from this workspace moved in" in worker_lines
        assert any(line.startswith(f"fold {fold}: resuming after epoch") for line in worker_lines), worker_lines
    _assert_cleaned_up(repo)


def _run_cache_outputs(repo: Path, cmd: str) -> dict[str, str]:
    """Output path -> md5 of the run-cache entries in ``repo``'s cache whose command is ``cmd``."""
    outs = {}
    for entry in (repo / ".dvc/cache/runs").rglob("*"):
        if entry.is_file():
            stage = yaml.safe_load(entry.read_text())
            if stage["cmd"] == cmd:
                outs.update({out["path"]: out["md5"] for out in stage["outs"]})
    return outs


def _in_cache(repo: Path, md5: str) -> bool:
    return (repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).is_file()


def test_slurm_recipe_one_fold_per_task_through_a_remote_run_cache(tmp_path):
    """docs/slurm_fanout.sbatch run by bash as two array tasks at once, each in its own clone; the main workspace
    then restores both folds from the remote."""
    main = _repo(tmp_path, "main")
    remote = tmp_path / "remote"
    dvc(main, "remote", "add", "--local", "-d", "storage", str(remote))
    repro(main, "split")
    dvc(main, "commit", "--force", "--with-deps", "split")
    dvc(main, "push", "--run-cache")

    commit = run_tool(["git", "rev-parse", "HEAD"], main).stdout.strip()
    tasks = {}
    for fold in FOLDS:
        env = tool_env(main / "src") | {
            "GLIOMIL_REPO": str(main),
            "GLIOMIL_REV": commit,
            "GLIOMIL_REMOTE": str(remote),
            "GLIOMIL_SCRATCH": str(tmp_path / "scratch"),
            "SLURM_ARRAY_JOB_ID": "1234",
            "SLURM_ARRAY_TASK_ID": str(fold),
            "SLURM_CPUS_PER_TASK": "1",
        }
        tasks[fold] = subprocess.Popen(
            ["bash", str(SBATCH)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    for fold, task in tasks.items():
        out = task.communicate(timeout=600)[0]
        assert task.returncode == 0, out
        lines = out.splitlines()
        assert _restored(lines) == set(UPSTREAM), out  # from the remote's run-cache, not run again
        assert _ran(lines) == {f"train@{fold}"}, out
    assert not (tmp_path / "scratch" / "gliomil-1234-fold-0").exists()  # each task removes its clone

    # `dvc pull --run-cache` brings the run-cache entries but not the outputs they name (dvc.lock here has no
    # train@k): a plain `dvc repro` would train again. `dvc repro --pull` fetches them and restores both folds.
    dvc_pull = run_tool([DVC, "pull", "--run-cache"], main, env=tool_env(main / "src"), check=False)
    models = _run_cache_outputs(main, "python stages/train.py 0")
    assert models and not _in_cache(main, models["models/fold_0"]), dvc_pull.stdout + dvc_pull.stderr
    out = repro(main, "--pull")
    assert _restored(out.splitlines()) >= {f"train@{k}" for k in FOLDS}, out
    assert not {stage for stage in stages_run(out) if stage.startswith("train@") or stage in UPSTREAM}, out
    assert (main / "metrics/headline.json").is_file()


def _clone(source: Path, target: Path) -> Path:
    run_tool(["git", "clone", "-q", str(source), str(target)], source.parent)
    return target


@pytest.mark.xdist_group("two_fold_run")
def test_remote_round_trip_and_a_missing_object(finished_run, tmp_path):
    repo = finished_run(two_fold_params()).copy(tmp_path / "origin" / "repo")  # after a from-scratch `dvc repro`
    remote = tmp_path / "remote"
    dvc(repo, "remote", "add", "-d", "storage", str(remote))  # in .dvc/config, committed: every clone uses it
    dvc(repo, "push", "--run-cache")
    _commit_all(repo, "results")

    clone = _clone(repo, tmp_path / "clone")
    dvc(clone, "pull")
    assert dvc(clone, "status").strip() == "Data and pipelines are up to date."
    assert dvc(clone, "metrics", "show") == dvc(repo, "metrics", "show")
    assert dvc(clone, "metrics", "show", "metrics") == dvc(repo, "metrics", "show", "metrics")
    assert (clone / "models/fold_0/best.pt").read_bytes() == (repo / "models/fold_0/best.pt").read_bytes()
    compare = [sys.executable, "-m", "gliomil.comparison.compare", "HEAD", "HEAD"]
    compared = run_tool(compare, clone, env=tool_env(clone / "src"))
    assert compared.stdout.startswith("HEAD -> HEAD\n")

    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    summary = next(out["md5"] for out in lock["aggregate"]["outs"] if out["path"] == "metrics/cv_summary.json")
    model_dir = next(out["md5"] for out in lock["train@0"]["outs"] if out["path"] == "models/fold_0")
    listing = yaml.safe_load((repo / ".dvc/cache/files/md5" / model_dir[:2] / model_dir[2:]).read_text())
    best = next(entry["md5"] for entry in listing if entry["relpath"] == "best.pt")

    def pull_without(md5: str, name: str) -> str:
        """The output of a failing `dvc pull` in a fresh clone while the object ``md5`` is not in the remote."""
        obj = remote / "files/md5" / md5[:2] / md5[2:]
        aside = tmp_path / f"{md5}.aside"
        obj.rename(aside)
        try:
            clone = _clone(repo, tmp_path / name)
            result = run_tool([DVC, "pull"], clone, env=tool_env(clone / "src"), check=False)
        finally:
            aside.rename(obj)
        assert result.returncode == 1, result
        return result.stdout + result.stderr

    # A missing file output: DVC names the object and the output.
    message = pull_without(summary, "clone_without_summary")
    assert f"Missing cache files:\nmd5: {summary}" in message
    assert (
        "ERROR: failed to pull data from the cloud - Checkout failed for following targets:\nmetrics/cv_summary.json"
        in message
    )
    # A file missing inside a directory output: DVC names the object and where it looked, not models/fold_0/best.pt.
    message = pull_without(best, "clone_without_best")
    where = remote / "files/md5" / best[:2] / best[2:]
    assert f"ERROR: failed to transfer '{best}' - [Errno 2] No such file or directory: '{where}'" in message
    assert "ERROR: failed to pull data from the cloud - " in message and "failed to download" in message
