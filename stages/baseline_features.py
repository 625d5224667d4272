"""Stage baseline_features: the hand-made features of every preprocessed subject -> data/baseline_features.csv.

Read from the subjects' NIfTI files (the manifest's source_files), once per cohort: the baselines stage refits on
every new split without reading them again.
"""

import _src  # noqa: F401  (first: gliomil from this checkout, see stages/_src.py)

# isort: split

import gliomil.runtime.blas  # noqa: F401  (first: pins OpenBLAS kernels before numpy loads)

# isort: split

from gliomil import params as P
from gliomil import paths
from gliomil.baselines.features import feature_table
from gliomil.data.slices import read_manifest
from gliomil.runtime.files import write_text
from gliomil.runtime.stage import run_stage


def main():
    params = P.load_params()
    table = feature_table(read_manifest(paths.PREPROCESSED), P.value(params, "preprocess.workers"))
    write_text(paths.BASELINE_FEATURES, table.to_csv(index=False))
    print(f"baseline features: {len(table)} subjects, {table.shape[1] - 2} features -> {paths.BASELINE_FEATURES}")


if __name__ == "__main__":
    run_stage(main)
