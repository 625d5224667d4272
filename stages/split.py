"""Stage split: patient-level stratified folds with an inner validation set -> data/splits/fold_<k>.json."""

import shutil
from pathlib import Path

from gliomil import params as P
from gliomil.preprocess import read_manifest
from gliomil.split import class_counts, make_splits
from gliomil.stage import run_stage, write_json, write_text

PREPROCESSED = "data/preprocessed"
OUT_DIR = Path("data/splits")
METRICS = "metrics/split.json"


def main():
    params = P.load_params()
    seed = P.integer(params, "seed", low=0)
    folds = P.folds(params)
    inner_val_fraction = P.number(params, "split.inner_val_fraction", low=0.01, high=0.5)

    manifest = read_manifest(PREPROCESSED)
    splits = make_splits(manifest, len(folds), inner_val_fraction, seed)
    shutil.rmtree(OUT_DIR, ignore_errors=True)
    for split in splits:
        write_text(OUT_DIR / f"fold_{split.fold}.json", split.to_json())
    write_json(METRICS, class_counts(splits, manifest))
    for split in splits:
        print(f"fold {split.fold}: train {len(split.train)}, inner_val {len(split.inner_val)}, test {len(split.test)}")


if __name__ == "__main__":
    run_stage(main)
