"""Stage train@<fold>: train DSMIL on one fold; the best checkpoint by inner validation goes to models/fold_<k>/.

Usage: python stages/train.py <fold>
"""

import _src  # noqa: F401  (first: gliomil from this checkout, see stages/_src.py)

# isort: split

import sys

import pandas as pd
from dvclive import Live

from gliomil import params as P
from gliomil import paths
from gliomil.data import BagSet
from gliomil.files import atomic_directory, exclusive, write_json, write_text
from gliomil.inference import set_threads
from gliomil.reporting import EpochReporter
from gliomil.split import FoldSplit
from gliomil.stage import fold_argument, run_stage
from gliomil.train import TrainConfig, train_fold
from gliomil.vocabulary import GRADES

TOP_LEVEL = ("seed", "label_smoothing", "use_class_weights")


def main():
    params = P.load_params()
    fold = fold_argument(sys.argv[1:], P.value(params, "folds"), "train.py")
    train = P.section(params, "train")
    config = TrainConfig.from_settings({key: P.value(params, key) for key in TOP_LEVEL}, train)
    print(f"fold {fold}: {set_threads(train['threads'])} torch threads")

    split = FoldSplit.read(paths.fold_split(fold))
    train_set = BagSet.load(paths.PREPROCESSED, split.train)
    val_set = BagSet.load(paths.PREPROCESSED, split.inner_val)
    # One writer per fold, and every output built aside and renamed into place at the end: a second process (an
    # orphan of a killed `dvc`) is refused, and a stopped run leaves nothing half-written.
    with (
        exclusive(paths.fold_lock(fold), f"fold {fold}"),
        atomic_directory(paths.fold_model(fold)) as model_dir,
        atomic_directory(paths.fold_train_figures(fold)) as figures,
        atomic_directory(paths.fold_train_log(fold)) as log_dir,
    ):
        live = Live(dir=str(log_dir), dvcyaml=False, save_dvc_exp=False)
        reporter = EpochReporter(live, figures, train["plot_every"], fold, val_set)
        result = train_fold(config, fold, train_set, val_set, model_dir / "best.pt", on_epoch=reporter)
        weights = result.class_weights or (1.0, 1.0)
        write_json(
            model_dir / "class_weights.json",
            {
                "use_class_weights": config.use_class_weights,
                **dict(zip(GRADES, weights)),
                "train_counts": dict(zip(GRADES, train_set.class_counts())),
            },
        )
        write_text(model_dir / "history.csv", pd.DataFrame(result.history).to_csv(index=False))
        live.summary["best"] = {"epoch": result.best_epoch, **{f"val_{k}": v for k, v in result.best.items()}}
        live.summary["collapse_epochs"] = result.collapse_epochs
        live.end()
        summary = (log_dir / "metrics.json").read_text()
    write_text(paths.fold_train_metrics(fold), summary)
    print(
        f"fold {fold}: best epoch {result.best_epoch}, inner-validation AUC {result.best['auc']:.3f}, "
        f"collapse epochs {result.collapse_epochs}, {result.seconds:.0f} s "
        f"(diagnostics {100 * result.diagnostics_seconds / result.seconds:.2f}%)"
    )


if __name__ == "__main__":
    run_stage(main)
