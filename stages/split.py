"""Stage split: patient-level stratified folds with an inner validation set -> data/splits/fold_<k>.json."""

import _src  # noqa: F401  (first: gliomil from this checkout, see stages/_src.py)

# isort: split

from gliomil import params as P
from gliomil import paths
from gliomil.data.slices import read_manifest
from gliomil.data.split import class_counts, make_splits
from gliomil.runtime.files import atomic_directory, write_json, write_text
from gliomil.runtime.stage import run_stage

METRICS = "metrics/split.json"


def main():
    params = P.load_params()
    folds = P.value(params, "folds")
    manifest = read_manifest(paths.PREPROCESSED)
    settings = P.section(params, "split")
    splits = make_splits(
        manifest, len(folds), settings["inner_val_fraction"], P.value(params, "seed"), settings["group_by"]
    )
    with atomic_directory(paths.SPLITS) as tmp:
        for split in splits:
            write_text(tmp / paths.fold_split(split.fold).name, split.to_json())
    write_json(METRICS, class_counts(splits, manifest))
    for split in splits:
        print(f"fold {split.fold}: train {len(split.train)}, inner_val {len(split.inner_val)}, test {len(split.test)}")


if __name__ == "__main__":
    run_stage(main)
