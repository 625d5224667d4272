"""Stage train@<fold>: train DSMIL on one fold; the best checkpoint by inner validation goes to models/fold_<k>/.

Usage: python stages/train.py <fold>
"""

import sys
from pathlib import Path

from dvclive import Live

from gliomil import params as P
from gliomil.data import BagSet
from gliomil.reporting import EpochReporter
from gliomil.split import FoldSplit
from gliomil.stage import fold_argument, run_stage, write_json
from gliomil.train import config_from_params, train_fold

PREPROCESSED = "data/preprocessed"


def main():
    params = P.load_params()
    fold = fold_argument(sys.argv[1:], P.folds(params), "train.py")
    config = config_from_params(params)

    split = FoldSplit.read(f"data/splits/fold_{fold}.json")
    train_set = BagSet.load(PREPROCESSED, split.train)
    val_set = BagSet.load(PREPROCESSED, split.inner_val)
    model_dir = Path(f"models/fold_{fold}")
    live = Live(dir=f"metrics/train/fold_{fold}", dvcyaml=False, save_dvc_exp=False)
    reporter = EpochReporter(live, Path(f"plots/train/fold_{fold}"), config.plot_every, fold, val_set)
    result = train_fold(config, fold, train_set, val_set, model_dir / "best.pt", on_epoch=reporter)

    write_json(model_dir / "class_weights.json", {
        "use_class_weights": config.use_class_weights,
        "LGG": result.class_weights[0] if result.class_weights else 1.0,
        "HGG": result.class_weights[1] if result.class_weights else 1.0,
        "train_counts": dict(zip(("LGG", "HGG"), train_set.class_counts())),
    })
    live.summary["best"] = {"epoch": result.best_epoch, **{f"val_{k}": v for k, v in result.best.items()}}
    live.summary["collapse_epochs"] = result.collapse_epochs
    live.end()
    print(f"fold {fold}: best epoch {result.best_epoch}, inner-validation AUC {result.best['auc']:.3f}, "
          f"collapse epochs {result.collapse_epochs}, {result.seconds:.0f} s "
          f"(diagnostics {100 * result.diagnostics_seconds / result.seconds:.2f}%)")


if __name__ == "__main__":
    run_stage(main)
