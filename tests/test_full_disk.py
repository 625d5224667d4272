"""A full disk during any stage: one OutputError naming the file, and no half-written output left behind.

Every stage's ``main`` runs in this process (as ``python stages/<name>.py`` would, less the signal handling of
``stages/_src.py``) in a tiny workspace built once by the stages themselves; the disk fills up at the write of
one chosen file (``os.write``, which :func:`gliomil.runtime.files.write_bytes` uses, raises ENOSPC after half the
bytes), in worker processes too: they inherit the patch when they fork.
"""

from __future__ import annotations

import builtins
import errno
import importlib.util
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import types
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_params, tool_env

from gliomil.errors import GliomilError, InputError, Interrupted, OutputError
from gliomil.runtime.files import exclusive
from gliomil.runtime.workers import map_in_workers

REPO = Path(__file__).resolve().parents[1]
FULL = os.strerror(errno.ENOSPC)  # "No space left on device"


def full_disk_at(monkeypatch, target: str) -> None:
    """Make ``os.write`` to the file that is going to be ``target`` (a path ending, as an OutputError names it:
    temporary names mapped to where they are going) write half its bytes, then fail with ENOSPC."""
    real_write = os.write

    def write(fd, data):
        try:
            name = OutputError(os.readlink(f"/proc/self/fd/{fd}"), "").path
        except OSError:
            name = ""
        if name == target or name.endswith("/" + target):
            real_write(fd, bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, FULL)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)


def leftovers(root: Path) -> list[str]:
    """Temporary files or folders of the writer under ``root``."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".partial-" in p.name)


def assert_one_line(error: BaseException, target: str) -> None:
    assert isinstance(error, OutputError)
    assert str(error) == f"{target}: cannot write ({FULL})"
    assert "\n" not in str(error)


# -- workers -------------------------------------------------------------------------------------------------


def within(seconds: float, function):
    """``function()``'s result or exception, or a failure when it has neither after ``seconds`` (it waits for ever)."""
    answer = {}

    def run():
        try:
            answer["result"] = function()
        except BaseException as error:
            answer["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert answer, f"no result and no error within {seconds} s: the caller waits for ever"
    if "error" in answer:
        raise answer["error"]
    return answer["result"]


def _fails_with(job: str):
    if job == "output":
        raise OutputError("data/x.npy", OSError(errno.ENOSPC, FULL))
    if job == "input":
        raise InputError("case_1", "data/case_1/flair.nii.gz", "not a NIfTI file")
    if job == "other":
        raise ValueError("a bug")
    if job == "large":
        return bytes(8 << 20)
    if job == "unpicklable":
        error = GliomilError("a message")
        error.handle = lambda: None  # an attribute pickle refuses
        raise error
    return job


@pytest.mark.parametrize("job", ["output", "input"])
def test_an_error_pickle_cannot_rebuild_reaches_the_caller_from_a_worker(job):
    """The pool rebuilds a worker's exception as ``type(error)(*error.args)``: for OutputError and InputError that
    raised TypeError in the pool's result thread, and the caller waited for ever."""
    with pytest.raises(GliomilError, match="cannot write|not a NIfTI file") as caught:
        within(30, lambda: list(map_in_workers(_fails_with, ["ok", job, "ok"], 2)))
    expected = {
        "output": "data/x.npy: cannot write (No space left on device)",
        "input": "case_1: data/case_1/flair.nii.gz: not a NIfTI file",
    }[job]
    assert type(caught.value) is {"output": OutputError, "input": InputError}[job]
    assert str(caught.value) == expected and caught.value.path.startswith("data/")
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # one line, no worker traceback


def test_a_worker_error_with_attributes_pickle_refuses_still_arrives():
    with pytest.raises(RuntimeError, match="^GliomilError: a message$"):
        within(30, lambda: list(map_in_workers(_fails_with, ["ok", "unpicklable"], 2)))


def test_any_other_worker_error_keeps_the_worker_traceback():
    with pytest.raises(ValueError, match="a bug") as caught:
        within(30, lambda: list(map_in_workers(_fails_with, ["ok", "other"], 2)))
    assert "_fails_with" in str(caught.value.__cause__)


def _dies_on(job: str):
    if job == "die":
        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer ends a worker
    if job == "stopped":
        os._exit(128 + signal.SIGTERM)  # as interrupts.worker_started ends a worker signalled before its start
    return job


def test_a_worker_that_dies_is_one_line_not_a_wait_for_ever():
    with pytest.raises(
        GliomilError, match=r"^a worker process was killed by SIGKILL during job 2 \(out of memory\?\)$"
    ):
        within(30, lambda: list(map_in_workers(_dies_on, ["ok", "die", "ok"], 2)))


def test_a_worker_ended_by_the_groups_signal_stops_the_caller_as_that_signal():
    with pytest.raises(Interrupted) as caught:
        within(30, lambda: list(map_in_workers(_dies_on, ["ok", "stopped", "ok"], 2)))
    assert caught.value.signum == signal.SIGTERM and caught.value.where == "while waiting for worker processes"


def test_stopping_early_never_waits_for_a_worker_sending_its_result():
    """multiprocessing.Pool's terminate() waited for ever (about once in 130 stops here, once on CI) when it killed a
    worker holding the lock of the queue that every worker sends its results through; a large result holds it long."""
    for _ in range(20):
        with pytest.raises(OutputError):
            within(30, lambda: list(map_in_workers(_fails_with, ["large", "output", "large", "large"], 2)))


def test_output_errors_rebuilt_in_the_caller_keep_their_path():
    error = OutputError("a/.b.partial-12-abcdef12/c.csv", OSError(errno.ENOSPC, FULL))
    from gliomil.runtime.workers import _Failure

    rebuilt = pickle.loads(pickle.dumps(_Failure(error, ""))).error
    assert type(rebuilt) is OutputError and rebuilt.path == "a/b/c.csv" and str(rebuilt) == str(error)


def test_a_full_disk_when_taking_a_lock_is_one_line(tmp_path, monkeypatch):
    full_disk_at(monkeypatch, "train.lock")
    with pytest.raises(OutputError, match="No space left on device") as caught:
        with exclusive(tmp_path / "train.lock", "fold 0"):
            pass
    assert_one_line(caught.value, f"{tmp_path}/train.lock")


# -- a tiny workspace, built by the stages -----------------------------------------------------------------------

PARAMS = tiny_params()
PARAMS["folds"] = [0, 1]
PARAMS["synthesize"].update(n_hgg=6, n_lgg=6)
PARAMS["external"]["site"].update(n_hgg=3, n_lgg=3)
PARAMS["external"]["n_bootstrap"] = PARAMS["aggregate"]["n_bootstrap"] = 100
PARAMS["preprocess"]["workers"] = 1
PARAMS["train"].update(epochs=1, threads=1, amp=False)

BUILD = [
    ("check_params", []),
    ("synthesize", []),
    ("synthesize_external", []),
    ("preprocess", []),
    ("split", []),
    ("baseline_features", []),
    ("fingerprint", []),
    ("baselines", []),
    ("train", ["0"]),
    ("train", ["1"]),
    ("evaluate", ["0"]),
    ("evaluate", ["1"]),
    ("bundle", []),
    ("external", []),
    ("aggregate", []),
]


def run_stage_main(name: str, argv: list[str], monkeypatch) -> None:
    """``main()`` of stages/<name>.py, in this process, with ``argv`` as its arguments."""
    monkeypatch.setitem(sys.modules, "_src", types.ModuleType("_src"))  # sys.path and signals: this process's
    if "gliomil.runtime.blas" not in sys.modules:  # pins OpenBLAS before numpy loads: too late here, harmless
        blas = types.ModuleType("gliomil.runtime.blas")
        blas.__file__ = str(REPO / "src" / "gliomil" / "runtime" / "blas.py")  # read by gliomil.code_version
        monkeypatch.setitem(sys.modules, "gliomil.runtime.blas", blas)
    monkeypatch.setattr(sys, "argv", [f"{name}.py", *argv])
    spec = importlib.util.spec_from_file_location(f"stage_{name}", REPO / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:
        module.main()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A workspace in which every stage has run once (two folds of one tiny epoch)."""
    root = tmp_path_factory.mktemp("full_disk") / "workspace"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(root)
        monkeypatch.setattr(builtins, "print", lambda *args, **kwargs: None)
        for name, argv in BUILD:
            run_stage_main(name, argv, monkeypatch)
    return root


@pytest.fixture
def workspace(built, tmp_path, monkeypatch) -> Path:
    root = tmp_path / "workspace"
    shutil.copytree(built, root)
    monkeypatch.chdir(root)
    return root


# stage, its arguments, its outputs (removed first, as `dvc repro` does), the file at which the disk is full.
SYNTHETIC_CASE = "data/synthetic/HGG/SynBraTS_HGG_001/SynBraTS_HGG_001"
EXTERNAL_CASE = "data/external_site/LGG/SynExt_LGG_002/SynExt_LGG_002"
RESUME = ".dvc/tmp/gliomil/train_fold_0"
TRAIN_OUTPUTS = ["models/fold_0", "plots/train/fold_0", "logs/train/fold_0", "metrics/train/fold_0.json"]
PREPROCESS_OUTPUTS = ["data/preprocessed", "metrics/preprocess.json", "reports/preprocess_skipped.csv"]
PREPROCESS_OUTPUTS += ["reports/fingerprint.csv", "data/qc_thumbnails.npy"]
BASELINE_OUTPUTS = ["plots/baselines/predictions.csv", "metrics/baselines.json"]
FINGERPRINT_OUTPUTS = ["metrics/fingerprint.json", "plots/fingerprint", "reports/qc_grid.png"]
EVALUATE_OUTPUTS = ["metrics/eval/fold_0.json", "plots/eval/fold_0"]
EXTERNAL_OUTPUTS = ["metrics/external.json", "plots/external"]
AGGREGATE_OUTPUTS = [
    "metrics/cv_summary.json",
    "metrics/headline.json",
    "plots/cv",
    "reports/cv_folds.csv",
    "reports/audit.md",
    "reports/roc.png",
    "reports/confusion.png",
]
ATOMIC_FOLDERS = ("data/synthetic", "data/external_site", "data/preprocessed", "data/splits")
CASES = [
    ("check_params", [], ["data/params_checked.txt"], "data/params_checked.txt"),
    ("synthesize", [], ["data/synthetic"], f"{SYNTHETIC_CASE}_flair.nii.gz"),
    ("synthesize", [], ["data/synthetic"], f"{SYNTHETIC_CASE}_seg.nii.gz"),
    ("synthesize_external", [], ["data/external_site"], f"{EXTERNAL_CASE}_t2.nii.gz"),
    ("preprocess", [], PREPROCESS_OUTPUTS, "data/preprocessed/slices/SynBraTS_LGG_003.npy"),
    ("preprocess", [], PREPROCESS_OUTPUTS, "data/preprocessed/manifest.csv"),
    ("preprocess", [], PREPROCESS_OUTPUTS, "data/preprocessed/slices.csv"),
    ("preprocess", [], PREPROCESS_OUTPUTS, "reports/preprocess_skipped.csv"),
    ("preprocess", [], PREPROCESS_OUTPUTS, "metrics/preprocess.json"),
    ("preprocess", [], PREPROCESS_OUTPUTS, "data/qc_thumbnails.npy"),
    ("split", [], ["data/splits", "metrics/split.json"], "data/splits/fold_1.json"),
    ("split", [], ["data/splits", "metrics/split.json"], "metrics/split.json"),
    ("baseline_features", [], ["data/baseline_features.csv"], "data/baseline_features.csv"),
    ("fingerprint", [], FINGERPRINT_OUTPUTS, "reports/qc_grid.png"),
    ("fingerprint", [], FINGERPRINT_OUTPUTS, "metrics/fingerprint.json"),
    ("baselines", [], BASELINE_OUTPUTS, "plots/baselines/predictions.csv"),
    ("baselines", [], BASELINE_OUTPUTS, "metrics/baselines.json"),
    ("train", ["0"], TRAIN_OUTPUTS, f"{RESUME}/model/best.pt"),
    ("train", ["0"], TRAIN_OUTPUTS, f"{RESUME}/state.pt"),
    ("train", ["0"], TRAIN_OUTPUTS, f"{RESUME}/figures/epoch_001_attention.png"),
    ("train", ["0"], TRAIN_OUTPUTS, f"{RESUME}/model/history.csv"),
    ("train", ["0"], TRAIN_OUTPUTS, "metrics/train/fold_0.json"),
    ("evaluate", ["0"], EVALUATE_OUTPUTS, "metrics/eval/fold_0.json"),
    ("evaluate", ["0"], EVALUATE_OUTPUTS, "plots/eval/fold_0/inner_val_predictions.csv"),
    ("evaluate", ["0"], EVALUATE_OUTPUTS, "plots/eval/fold_0/calibration.csv"),
    ("external", [], EXTERNAL_OUTPUTS, "metrics/external.json"),
    ("external", [], EXTERNAL_OUTPUTS, "plots/external/roc.csv"),
    ("aggregate", [], AGGREGATE_OUTPUTS, "metrics/headline.json"),
    ("aggregate", [], AGGREGATE_OUTPUTS, "plots/cv/training_curves.csv"),
    ("aggregate", [], AGGREGATE_OUTPUTS, "reports/confusion.png"),
    ("aggregate", [], AGGREGATE_OUTPUTS, "reports/audit.md"),
]


def remove(root: Path, outputs: list[str]) -> None:
    for output in outputs:
        path = root / output
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def set_params(root: Path, update) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    update(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def two_workers(params: dict) -> None:
    for section in (params["synthesize"], params["external"]["site"], params["preprocess"]):
        section["workers"] = 2


@pytest.mark.parametrize(
    ("stage", "argv", "outputs", "target"), CASES, ids=[f"{c[0]}:{c[3].split('/')[-1]}" for c in CASES]
)
def test_a_full_disk_in_a_stage_is_one_error_naming_the_file(workspace, monkeypatch, stage, argv, outputs, target):
    remove(workspace, outputs)
    if stage in ("synthesize", "synthesize_external", "preprocess"):  # the workers' writes
        set_params(workspace, two_workers)
    full_disk_at(monkeypatch, target)
    with pytest.raises(GliomilError, match="No space left on device") as caught:
        within(120, lambda: run_stage_main(stage, argv, monkeypatch))
    assert_one_line(caught.value, target)
    assert not (workspace / target).exists() and leftovers(workspace) == []
    folder = next((f for f in ATOMIC_FOLDERS if target.startswith(f + "/")), None)
    if folder is not None:  # a folder built whole: it does not appear
        assert not (workspace / folder).exists()
    if target.startswith(RESUME):  # the fold stays in its resume folder: none of its outputs appears
        assert not any((workspace / output).exists() for output in TRAIN_OUTPUTS)


def test_a_full_disk_in_dvclive_names_the_log_folder(workspace, monkeypatch):
    """DVCLive writes its files itself (``open``): a failed write names the fold's log folder."""
    import dvclive.serialize

    remove(workspace, TRAIN_OUTPUTS)
    real_open = builtins.open

    class FullFile:
        def __init__(self, file):
            self.file = file

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, _):
            raise OSError(errno.ENOSPC, FULL)

    def full_open(file, mode="r", *args, **kwargs):
        opened = real_open(file, mode, *args, **kwargs)
        return FullFile(opened) if "w" in mode and str(file).endswith("metrics.json") else opened

    monkeypatch.setattr(dvclive.serialize, "open", full_open, raising=False)
    with pytest.raises(OutputError, match="No space left on device") as caught:
        run_stage_main("train", ["0"], monkeypatch)
    assert_one_line(caught.value, f"{RESUME}/logs")
    assert not any((workspace / output).exists() for output in TRAIN_OUTPUTS) and leftovers(workspace) == []


@pytest.mark.parametrize("where", ["fold_1.pt", "manifest.json"])
def test_a_full_disk_while_bundling_is_one_error_and_no_bundle(workspace, monkeypatch, where):
    """gliomil.serving.bundle.write_bundle writes the checkpoints and the manifest through the writer, inside its
    atomic folder: the file is named and no bundle appears."""
    remove(workspace, ["bundle"])
    full_disk_at(monkeypatch, f"bundle/{where}")
    with pytest.raises(OutputError, match="No space left on device") as caught:
        run_stage_main("bundle", [], monkeypatch)
    assert_one_line(caught.value, f"bundle/{where}")
    assert not (workspace / "bundle").exists() and leftovers(workspace) == []


def test_a_stage_whose_worker_fills_the_disk_prints_one_line(workspace):
    """The stage as `dvc repro` runs it, its workers forked: the error is one line on stderr, no traceback."""
    remove(workspace, ["data/synthetic"])
    set_params(workspace, lambda p: p["synthesize"].update(workers=2))
    script = workspace / "full_disk.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import errno, os, runpy, sys

            real_write = os.write

            def write(fd, data):
                if ".nii.gz.partial-" in os.readlink(f"/proc/self/fd/{{fd}}"):  # every NIfTI file
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return real_write(fd, data)

            os.write = write
            sys.path.insert(0, {str(REPO / "stages")!r})
            sys.argv = ["stages/synthesize.py"]
            runpy.run_path({str(REPO / "stages" / "synthesize.py")!r}, run_name="__main__")
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=workspace,
        env=tool_env(REPO / "src"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    last = result.stderr.rstrip("\n").rsplit("\n", 1)[-1].rsplit("\r", 1)[-1]
    assert last == f"error: {SYNTHETIC_CASE}_flair.nii.gz: cannot write ({FULL})"
    assert "Traceback" not in result.stderr
    assert not (workspace / "data" / "synthetic").exists() and leftovers(workspace) == []
