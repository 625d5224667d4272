"""Stage train@<fold>: train DSMIL on one fold; the best checkpoint by inner validation goes to models/fold_<k>/.

Usage: python stages/train.py <fold>

A stopped run (Ctrl-C, a scheduler's SIGTERM, a killed machine) continues where it stopped: the fold is built in
.dvc/tmp/gliomil/train_fold_<k>/ (gliomil.paths.fold_resume), with its state saved after every epoch, and
only a finished fold is moved into its outputs. The state is kept outside the outputs because DVC deletes a
stage's outputs before running it, and a `persist: true` output would take the stage out of DVC's run-cache.
"""

import _src  # noqa: F401  (first: gliomil from this checkout, see stages/_src.py)

# isort: split

import hashlib
import json
import shutil
import sys
from dataclasses import asdict

import pandas as pd
import torch

from gliomil import code_version, paths
from gliomil import params as P
from gliomil.data.bags import BagSet
from gliomil.data.folds import FoldSplit
from gliomil.errors import Interrupted
from gliomil.runtime.device import autocast_dtype, default_device, make_deterministic, set_threads
from gliomil.runtime.files import exclusive, make_directory, replace_directory, write_json, write_text
from gliomil.runtime.stage import fold_argument, run_stage
from gliomil.training.loop import TrainConfig, load_resume_state, train_fold
from gliomil.training.reporting import EpochReporter, live_writes, open_live
from gliomil.vocabulary import GRADES

TOP_LEVEL = ("seed", "label_smoothing", "use_class_weights")
PARTS = ("model", "figures", "logs")  # built under the fold's resume folder, then moved to their outputs


def run_key(config: TrainConfig, fold: int) -> str:
    """What a resume state must have been saved under: everything that changes the fold's result (the training
    config, the split, the slices, the code, torch's thread count and the device's precision)."""
    device = default_device()
    inputs = {
        "config": asdict(config),
        "fold": fold,
        "split": hashlib.sha256(paths.fold_split(fold).read_bytes()).hexdigest(),
        "slices": hashlib.sha256((paths.PREPROCESSED / "manifest.csv").read_bytes()).hexdigest(),
        "code": code_version()["source_sha256"],
        "threads": torch.get_num_threads(),
        "device": f"{device.type} {autocast_dtype(device, config.amp)}",
    }
    if device.type == "cuda":  # another GPU model, CUDA or cuDNN picks other kernels: other bits
        inputs["gpu"] = [torch.cuda.get_device_name(device), torch.version.cuda, torch.backends.cudnn.version()]
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def main():
    params = P.load_params()
    fold = fold_argument(sys.argv[1:], P.value(params, "folds"), "train.py")
    train = P.section(params, "train")
    config = TrainConfig.from_settings({key: P.value(params, key) for key in TOP_LEVEL}, train)
    make_deterministic()
    print(f"fold {fold}: {set_threads(train['threads'])} torch threads")

    split = FoldSplit.read(paths.fold_split(fold))
    train_set = BagSet.load(paths.PREPROCESSED, split.train, tumour_maps=config.pixel_supervision > 0)
    val_set = BagSet.load(paths.PREPROCESSED, split.inner_val)
    if config.tumour_blind:  # the confound control: no tumour voxel reaches the model
        train_set, val_set = train_set.without_tumour_slices(), val_set.without_tumour_slices()
    work = paths.fold_resume(fold)
    state_path = work / "state.pt"
    # One writer per fold in this workspace: a second process (an orphan of a killed `dvc`, a second `dvc repro`)
    # is refused. Other workspaces (gliomil fanout's worktrees, clones) have their own .dvc/tmp and outputs.
    with exclusive(paths.fold_lock(fold), f"fold {fold}"):
        key = run_key(config, fold)
        resume = load_resume_state(state_path, key)
        complete = all((work / part).is_dir() for part in PARTS) and (work / "model" / "best.pt").is_file()
        if resume is not None and not complete:
            print(f"{work}: not resuming: its outputs so far are incomplete; training starts from epoch 1")
            resume = None
        if resume is None:
            shutil.rmtree(work, ignore_errors=True)
            for part in PARTS:
                make_directory(work / part)
        live = open_live(work / "logs", resume["epoch"] if resume else 0)
        history = resume["history"] if resume else []
        reporter = EpochReporter(live, work / "figures", train["plot_every"], fold, val_set, history=history)
        try:
            result = train_fold(
                config,
                fold,
                train_set,
                val_set,
                work / "model" / "best.pt",
                on_epoch=reporter,
                state_path=state_path,
                resume=resume,
                run_key=key,
            )
        except Interrupted as exc:
            saved = reporter.history[-1]["epoch"] if reporter.history else 0
            if saved:
                exc.resume = f"its state after epoch {saved} is in {work}: `dvc repro` continues from epoch {saved + 1}"
            raise
        weights = result.class_weights or (1.0, 1.0)
        write_json(
            work / "model" / "class_weights.json",
            {
                "use_class_weights": config.use_class_weights,
                **dict(zip(GRADES, weights)),
                "train_counts": dict(zip(GRADES, train_set.class_counts())),
            },
        )
        write_text(work / "model" / "history.csv", pd.DataFrame(result.history).to_csv(index=False))
        live.summary["best"] = {"epoch": result.best_epoch, **{f"val_{k}": v for k, v in result.best.items()}}
        live.summary["collapse_epochs"] = result.collapse_epochs
        with live_writes(work / "logs"):
            live.end()
        summary = (work / "logs" / "metrics.json").read_text()
        state_path.unlink()  # from here a stopped run starts the fold again: its parts are being moved
        for part, output in zip(
            PARTS, (paths.fold_model(fold), paths.fold_train_figures(fold), paths.fold_train_log(fold))
        ):
            replace_directory(work / part, output)
        write_text(paths.fold_train_metrics(fold), summary)
        shutil.rmtree(work)
    print(
        f"fold {fold}: best epoch {result.best_epoch}, inner-validation AUC {result.best['auc']:.3f}, "
        f"collapse epochs {result.collapse_epochs}, {result.seconds:.0f} s "
        f"(diagnostics {100 * result.diagnostics_seconds / result.seconds:.2f}%)"
    )


if __name__ == "__main__":
    run_stage(main)
