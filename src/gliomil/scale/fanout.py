"""Train the folds in parallel, through DVC's own means: worker workspaces that share this workspace's cache.

    gliomil fanout -j N [--folds K ...] [--gpus 0,1,...] [--workdir DIR]

Run from the project's root (where dvc.yaml is), with the pipeline committed. It

1. runs ``dvc repro split`` here (everything upstream of training), then ``dvc commit --force --with-deps split``:
   on stages just reproduced it changes nothing but writes each one's run-cache entry, which ``dvc repro`` does
   not when a stage was already up to date (after a ``dvc pull`` without ``--run-cache``, for one); without it
   every worker would run those stages again;
2. makes N workers, ``git worktree``s of HEAD under ``.dvc/tmp/gliomil/fanout/worker_<i>`` (or ``--workdir``),
   each with a ``.dvc/config.local`` (this workspace's, if any) whose ``cache.dir`` is this workspace's cache;
3. runs ``dvc repro train@k`` in every worker at once, each worker its share of the folds (round-robin), one
   after another: the upstream stages restore from the run-cache ("Stage 'split' is cached - skipping run"),
   each fold trains and saves its outputs and its run-cache entry into the shared cache;
4. runs ``dvc repro`` here: every ``train@k`` restores from the run-cache, the rest of the pipeline runs.

Each worker's output is shown prefixed with ``[worker i]`` and kept in ``<workdir>/worker_<i>.log``. A worker stops
at its first failing fold; the others finish theirs (their results are in the cache: the next fan-out or
``dvc repro`` restores them). The worktrees are removed at the end, also after a failure or Ctrl-C (a killed
fan-out's by the next one; its ``dvc`` processes die with it). A fold stopped part-way keeps its resume state
(:func:`gliomil.paths.fold_resume`): it is moved back into this workspace before its worktree goes, and into the
worker that trains the fold next time, so ``dvc repro`` here or the next fan-out continues it.

CPU threads and GPUs. The thread count changes a CPU run's checkpoints in their last bits, and DVC's run-cache
does not see the environment, so a fan-out never changes it: with ``train.threads: 0`` (one torch thread per
physical core) every worker trains as a serial run does, its checkpoints equal a serial run's, and the workers
share the cores; with ``train.threads: n`` the stage pins n, and each worker's other libraries get
``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` = usable cores // workers. To divide the cores, pin
``train.threads`` (the run-cache then keys the runs by it). ``--gpus 0,1`` gives worker i the GPU ``gpus[i % len]``
(``CUDA_VISIBLE_DEVICES``); -j defaults to the number of GPUs given.

One cache, several writers. DVC's cache is content-addressed and writes every object to a temporary name and
renames it into place (dvc_objects: LocalFileSystem.put_file / copy), and a run-cache entry the same way
(dvc/stage/cache.py: StageCache.save dumps to a tmp_fname and moves it): two workers writing the same object
write the same bytes, and a reader sees a whole file or none. Each worktree has its own ``.dvc/tmp`` (DVC's
repo lock, the folds' locks). Do not run ``dvc gc`` while a fan-out runs.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from gliomil import params as P
from gliomil import paths
from gliomil.errors import GliomilError
from gliomil.runtime.files import exclusive
from gliomil.runtime.stage import run_command

FANOUT_DIR = Path(".dvc/tmp/gliomil/fanout")
# What the workers take from the commit, not from this workspace: a change here would be trained without.
PIPELINE_FILES = ("params.yaml", "dvc.yaml", "stages", "src", ".dvcignore")
DVC = (sys.executable, "-m", "dvc")
STOP_GRACE_S = 60  # after a Ctrl-C, how long the stages get to stop at their next safe point
# Started in front of every command: ask the kernel to kill it when the fan-out dies (kill -9 included), then
# become the command (gliomil.runtime.interrupts.die_with_parent; a parent gone before the request took effect ends it).
DIE_WITH_PARENT = (
    "import os, signal, sys\n"
    "from gliomil.runtime.interrupts import die_with_parent\n"
    "die_with_parent(int(sys.argv[1]), signal.SIGKILL)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


@dataclass
class FoldRun:
    fold: int
    start: float  # seconds since the fan-out started
    end: float = 0.0
    returncode: int | None = None
    stages: set[str] = field(default_factory=set)  # the stages its `dvc repro` ran


@dataclass
class Worker:
    index: int
    folds: list[int]
    worktree: Path
    workspace: Path  # the project inside the worktree (the worktree itself unless dvc.yaml sits in a subfolder)
    log: Path
    env: dict
    gpu: str | None = None
    runs: list[FoldRun] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"worker {self.index}"

    @property
    def failed(self) -> FoldRun | None:
        return next((run for run in self.runs if run.returncode), None)


def stages_run(lines: list[str]) -> set[str]:
    """The stages a `dvc repro` output says it ran (not restored, not skipped)."""
    return {line.split("'")[1] for line in lines if line.startswith("Running stage '")}


class Commands:
    """Runs the fan-out's commands, each streamed line by line, and stops all of them on a Ctrl-C."""

    def __init__(self):
        self._live: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._print = threading.Lock()

    def say(self, text: str) -> None:
        with self._print:
            print(text, flush=True)

    def run(self, args: list[str], cwd: Path, env: dict, prefix: str = "", log: Path | None = None):
        """Run ``args``, showing each output line after ``prefix`` (and appending it to ``log``); returns the exit
        code and the lines. The command gets its own process group, so that a Ctrl-C reaches it through
        :meth:`stop`, which waits for it, not from the terminal."""
        if sys.platform.startswith("linux"):
            args = [sys.executable, "-c", DIE_WITH_PARENT, str(os.getpid()), *args]
        with self._lock:
            process = subprocess.Popen(
                args,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                bufsize=1,
                process_group=0,
            )
            self._live.add(process)
        lines = []
        with open(log, "a") if log else open(os.devnull, "w") as sink:
            for line in process.stdout:
                line = line.rstrip("\n")
                lines.append(line)
                sink.write(line + "\n")
                sink.flush()
                self.say(prefix + line)
        returncode = process.wait()
        with self._lock:
            self._live.discard(process)
        return returncode, lines

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGINT to every running command's process group (the stages stop at their next safe point), then
        SIGKILL to those still running after ``grace_s`` or at a second Ctrl-C."""
        with self._lock:
            live = list(self._live)
        for process in live:
            _signal_group(process, signal.SIGINT)
        deadline = time.monotonic() + grace_s
        try:
            for process in live:
                try:
                    process.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    break
        except KeyboardInterrupt:
            pass
        for process in live:
            if process.poll() is None:
                _signal_group(process, signal.SIGKILL)
                process.wait()


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def _git(args: list[str], cwd: Path, check: bool = True) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        message = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
        raise GliomilError(f"git {' '.join(args)} failed in {cwd}: {message}")
    return result.stdout


def _dvc_quiet(args: list[str], cwd: Path, env: dict) -> str:
    result = subprocess.run([*DVC, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
        raise GliomilError(f"dvc {' '.join(args)} failed in {cwd}: {message}")
    return result.stdout


def _check_committed(git_root: Path, project: Path) -> None:
    """Refuse when the pipeline differs from HEAD: the workers check out HEAD, not this workspace."""
    pathspecs = [str((project / name).relative_to(git_root)) for name in PIPELINE_FILES]
    changed = _git(["status", "--porcelain", "--untracked-files=all", "--", *pathspecs], git_root).splitlines()
    if changed:
        shown = ", ".join(line.strip() for line in changed[:4]) + (", ..." if len(changed) > 4 else "")
        raise GliomilError(
            f"uncommitted changes to the pipeline ({shown}): the workers check out HEAD, so commit them first"
        )


def _remove_worktree(git_root: Path, worktree: Path) -> None:
    if worktree.exists():
        _git(["worktree", "remove", "--force", str(worktree)], git_root, check=False)
        shutil.rmtree(worktree, ignore_errors=True)  # not a worktree (any more): a folder left by a killed run


def _clear_stale_workers(commands: Commands, git_root: Path, project: Path, workdir: Path) -> None:
    """Remove the worktrees a killed fan-out left (its `dvc` processes died with it), keeping what its stopped
    folds saved when this workspace has no resume state of its own for them."""
    for worktree in sorted(workdir.glob("worker_*/")):
        workspace = worktree / project.relative_to(git_root)
        for state in sorted((workspace / paths.fold_resume(0).parent).glob("train_fold_*/")):
            match = re.fullmatch(r"train_fold_(\d+)", state.name)
            fold = int(match[1]) if match else None
            if fold is not None and not (project / paths.fold_resume(fold)).exists():
                try:
                    if _move_resume_state(workspace, project, fold, project):
                        commands.say(f"fold {fold}: resume state kept from a stopped fan-out's {worktree.name}")
                except (GliomilError, OSError) as exc:
                    commands.say(f"note: fold {fold}: the resume state in {worktree} is lost ({exc})")
        _remove_worktree(git_root, worktree)
    _git(["worktree", "prune"], git_root, check=False)


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _make_workers(
    jobs: int, gpus: list[str], git_root: Path, project: Path, workdir: Path, folds: list[int], train_threads: int
):
    """The workers (not yet their worktrees): folds round-robin, one GPU each, and CPU threads divided when
    ``train_threads`` pins torch's (with 0, torch's own count must stay what a serial run uses)."""
    n = min(jobs, len(folds))
    threads = str(max(1, _usable_cores() // n))
    workers = []
    for i in range(n):
        worktree = workdir / f"worker_{i}"
        env = dict(os.environ)
        if train_threads:
            env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
        gpu = gpus[i % len(gpus)] if gpus else None
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        log = workdir / f"worker_{i}.log"
        log.write_text("")
        workspace = worktree / project.relative_to(git_root)
        workers.append(Worker(i, folds[i::n], worktree, workspace, log, env, gpu))
    return workers


def _add_worktree(worker: Worker, git_root: Path, project: Path, commit: str, cache: Path) -> None:
    """A worktree of ``commit`` using this workspace's DVC cache (and its .dvc/config.local, if any)."""
    _remove_worktree(git_root, worker.worktree)
    _git(["worktree", "add", "--detach", "--quiet", str(worker.worktree), commit], git_root)
    local = project / ".dvc" / "config.local"
    if local.is_file():  # this workspace's own settings (a remote, a cache type), then its cache dir
        shutil.copy(local, worker.workspace / ".dvc" / "config.local")
    _dvc_quiet(["cache", "dir", "--local", str(cache)], worker.workspace, worker.env)


def _move_resume_state(source: Path, target: Path, fold: int, lock_at: Path) -> bool:
    """Move fold ``fold``'s resume folder (:func:`gliomil.paths.fold_resume`) from workspace ``source`` to
    ``target``, replacing any there, holding the fold's lock in ``lock_at`` (this workspace): a ``dvc repro``
    training the fold here refuses while it moves, and it refuses to move while one does."""
    state = source / paths.fold_resume(fold)
    if not state.is_dir():
        return False
    with exclusive(lock_at / paths.fold_lock(fold), f"fold {fold}"):
        shutil.rmtree(target / paths.fold_resume(fold), ignore_errors=True)
        (target / paths.fold_resume(fold)).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(state, target / paths.fold_resume(fold))
    return True


def _train(commands: Commands, worker: Worker, t0: float, stop: threading.Event) -> None:
    """The worker's folds one after another; it stops at the first that fails."""
    for fold in worker.folds:
        if stop.is_set():
            return
        run = FoldRun(fold, time.monotonic() - t0)
        worker.runs.append(run)
        commands.say(f"[{worker.name}] dvc repro train@{fold}")
        run.returncode, lines = commands.run(
            [*DVC, "repro", f"train@{fold}"], worker.workspace, worker.env, f"[{worker.name}] ", worker.log
        )
        run.end, run.stages = time.monotonic() - t0, stages_run(lines)
        if run.returncode:
            return


def _in_workspace(commands: Commands, args: list[str], project: Path, what: str) -> tuple[float, list[str]]:
    """A `dvc` command in this workspace, shown as it runs; its duration and output."""
    start = time.monotonic()
    commands.say(f"[workspace] dvc {' '.join(args)}")
    returncode, lines = commands.run([*DVC, *args], project, dict(os.environ), "[workspace] ")
    if returncode:
        raise GliomilError(f"dvc {' '.join(args)} failed in this workspace ({what}), exit code {returncode}: see above")
    return time.monotonic() - start, lines


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _summary(workers: list[Worker], train_threads: int, times: dict[str, float]) -> list[str]:
    lines = [
        f"fan-out done in {times['total']:.1f} s: upstream {times['upstream']:.1f} s, workers "
        f"{times['workers']:.1f} s (the folds' own time added up: {times['folds']:.1f} s), workspace "
        f"dvc repro {times['final']:.1f} s"
    ]
    for worker in workers:
        device = f"GPU {worker.gpu}" if worker.gpu is not None else "CPU"
        torch_threads = _count(train_threads, "torch thread") if train_threads else "torch threads as a serial run"
        for run in worker.runs:
            how = "trained" if f"train@{run.fold}" in run.stages else "restored from the run-cache"
            lines.append(
                f"  fold {run.fold}: {worker.name} ({device}, {torch_threads}), {how}, "
                f"+{run.start:.1f} s -> +{run.end:.1f} s ({run.end - run.start:.1f} s)"
            )
    return lines


def fanout(args, project: Path) -> None:
    git_root = Path(_git(["rev-parse", "--show-toplevel"], project).strip()).resolve()
    params = P.load_params(project / P.PARAMS_FILE)
    all_folds, train_threads = P.value(params, "folds"), P.value(params, "train.threads")
    folds = args.folds if args.folds is not None else all_folds
    unknown = sorted(set(folds) - set(all_folds))
    if unknown:
        raise GliomilError(f"--folds {' '.join(map(str, unknown))}: not in params.yaml's folds {all_folds}")
    folds = list(dict.fromkeys(folds))
    _check_committed(git_root, project)
    commit = _git(["rev-parse", "HEAD"], git_root).strip()
    cache = Path(_dvc_quiet(["cache", "dir"], project, dict(os.environ)).strip()).resolve()
    workdir = (args.workdir or project / FANOUT_DIR).resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    with exclusive(workdir / "fanout.lock", f"the fan-out folder {workdir}"):
        commands = Commands()
        t0 = time.monotonic()
        workers: list[Worker] = []
        stop = threading.Event()
        threads: list[threading.Thread] = []
        try:
            _clear_stale_workers(commands, git_root, project, workdir)
            upstream, _ = _in_workspace(commands, ["repro", "split"], project, "upstream of training")
            # Forced, so that an up-to-date stage is saved too (Stage.save writes its run-cache entry; without
            # --force `dvc commit` saves only changed stages), and safe: `dvc repro split` just left them unchanged.
            _in_workspace(commands, ["commit", "--force", "--with-deps", "split"], project, "upstream run-cache")
            workers = _make_workers(args.jobs, args.gpus or [], git_root, project, workdir, folds, train_threads)
            commands.say(
                f"fan-out of folds {folds} over {_count(len(workers), 'worker')} (worktrees of {commit[:8]} in "
                f"{workdir})"
                + (
                    f", OMP_NUM_THREADS=MKL_NUM_THREADS={workers[0].env['OMP_NUM_THREADS']} each"
                    if train_threads
                    else ""
                )
            )
            if train_threads == 0:
                commands.say(
                    "note: train.threads is 0: every worker uses one torch thread per physical core, as a serial run, "
                    "so its checkpoints equal a serial run's and the workers share the cores; pin train.threads to "
                    "divide them"
                )
            elif train_threads * len(workers) > _usable_cores():
                commands.say(
                    f"note: train.threads is {train_threads}: {len(workers)} workers use {train_threads} torch "
                    "threads each, more than the usable cores"
                )
            for worker in workers:
                _add_worktree(worker, git_root, project, commit, cache)
                # A fold stopped earlier continues in the worker (the stage checks that its state matches).
                for fold in worker.folds:
                    if _move_resume_state(project, worker.workspace, fold, project):
                        commands.say(f"[{worker.name}] fold {fold}: its resume state from this workspace moved in")
            start = time.monotonic()
            for worker in workers:
                thread = threading.Thread(target=_train, args=(commands, worker, t0, stop), name=worker.name)
                thread.start()
                threads.append(thread)
            while any(thread.is_alive() for thread in threads):
                for thread in threads:
                    thread.join(0.2)
            workers_s = time.monotonic() - start
            for worker in workers:
                upstream_ran = sorted(stage for run in worker.runs for stage in run.stages if "@" not in stage)
                if upstream_ran:
                    commands.say(
                        f"note: {worker.name} ran {', '.join(upstream_ran)} instead of restoring them from the "
                        "run-cache (their outputs differ from this workspace's)"
                    )
            failed = [(worker, worker.failed) for worker in workers if worker.failed]
            if failed:
                worker, run = failed[0]
                others = f" (and {len(failed) - 1} more failed folds)" if len(failed) > 1 else ""
                log = worker.log.relative_to(project) if worker.log.is_relative_to(project) else worker.log
                raise GliomilError(
                    f"fold {run.fold} failed in {worker.name} (dvc repro train@{run.fold} exited "
                    f"{run.returncode}){others}; its log: {log}"
                )
            final, lines = _in_workspace(commands, ["repro"], project, "the rest of the pipeline")
            again = sorted(stage for stage in stages_run(lines) if stage in {f"train@{k}" for k in folds})
            times = {
                "total": time.monotonic() - t0,
                "upstream": upstream,
                "workers": workers_s,
                "folds": sum(run.end - run.start for worker in workers for run in worker.runs),
                "final": final,
            }
            for line in _summary(workers, train_threads, times):
                commands.say(line)
            if again:
                commands.say(
                    f"warning: the workspace's dvc repro ran {', '.join(again)} again: the worker's run-cache entry "
                    "did not match this workspace's stage"
                )
        except BaseException:
            stop.set()
            commands.stop()
            for thread in threads:
                thread.join(STOP_GRACE_S)
            raise
        finally:
            for worker in workers:
                _return_resume_states(commands, worker, project)
                _remove_worktree(git_root, worker.worktree)
            _git(["worktree", "prune"], git_root, check=False)


def _return_resume_states(commands: Commands, worker: Worker, project: Path) -> None:
    """Keep what a stopped fold saved (its state after its last whole epoch): moved back into this workspace,
    where `dvc repro` or the next fan-out continues it, before the worktree goes."""
    for fold in worker.folds:
        try:
            if _move_resume_state(worker.workspace, project, fold, project):
                commands.say(f"fold {fold}: its resume state moved from {worker.name} to {paths.fold_resume(fold)}")
        except (GliomilError, OSError) as exc:
            commands.say(f"note: fold {fold}: its resume state in {worker.name} is lost with its worktree ({exc})")


def _gpus(text: str) -> list[str]:
    gpus = [gpu.strip() for gpu in text.split(",")]
    if not all(gpus):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of GPU indices, got '{text}'")
    return gpus


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="gliomil fanout",
        description="Train the folds in parallel git worktrees sharing this workspace's DVC cache, then "
        "`dvc repro` here restores them from the run-cache.",
    )
    parser.add_argument("-j", "--jobs", type=int, help="number of workers (default: the number of --gpus)")
    parser.add_argument("--folds", type=int, nargs="+", help="folds to train (default: params.yaml's folds)")
    parser.add_argument("--gpus", type=_gpus, help="comma-separated GPU indices, one per worker, round-robin")
    parser.add_argument("--workdir", type=Path, help=f"folder of the worker worktrees (default: {FANOUT_DIR})")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.jobs is None:
        if not args.gpus:
            parser.error("give -j N (workers) or --gpus")
        args.jobs = len(args.gpus)
    if args.jobs < 1:
        parser.error("-j must be at least 1")
    project = Path.cwd().resolve()
    if not (project / "dvc.yaml").is_file() or not (project / ".dvc").is_dir():
        raise GliomilError(f"{project}: no dvc.yaml and .dvc/ here: run gliomil fanout from the project's root")
    signal.signal(signal.SIGTERM, _raise_interrupt)  # a SIGTERM (scancel, kill) cleans up as a Ctrl-C does
    try:
        fanout(args, project)
    except KeyboardInterrupt:
        print(
            "error: interrupted: the workers were stopped and their worktrees removed; folds that finished are in "
            "the cache (the next fan-out or dvc repro restores them)",
            file=sys.stderr,
        )
        sys.exit(130)


if __name__ == "__main__":
    run_command(main)
