"""Stage bundle: every fold's best checkpoint and the manifest that scores new patients -> bundle/.

The decision threshold is Youden's J on the pooled inner-validation predictions (never the held-out
patients); see gliomil.serving.bundle. `gliomil predict --bundle bundle ...` then needs nothing else.
"""

import _src  # noqa: F401  (first: gliomil from this checkout, see stages/_src.py)

# isort: split

from dataclasses import asdict

import pandas as pd

from gliomil import params as P
from gliomil import paths
from gliomil.data.preprocess import PreprocessSettings
from gliomil.data.slices import read_manifest
from gliomil.runtime.stage import run_stage
from gliomil.serving.bundle import (
    InferenceSettings,
    build_manifest,
    pooled_inner_val_threshold,
    training_cohort,
    write_bundle,
)
from gliomil.training.loop import TrainConfig

# Recorded in the manifest: every param that shaped the models.
RECORDED = ("seed", "folds", "label_smoothing", "use_class_weights", "data", "preprocess", "split", "train")
TOP_LEVEL = ("seed", "label_smoothing", "use_class_weights")


def main():
    params = P.load_params()
    folds = P.value(params, "folds")
    options = P.section(params, "preprocess")
    inner_val = pd.concat([pd.read_csv(paths.fold_eval_plots(k) / "inner_val_predictions.csv") for k in folds])
    manifest = build_manifest(
        preprocess=PreprocessSettings(
            image_size=options["image_size"],
            clip_percentiles=options["clip_percentiles"],
            min_brain_fraction=options["min_brain_fraction"],
        ),
        suffixes=P.section(params, "data.suffixes"),
        prediction=P.value(params, "train.model.prediction"),
        threshold=pooled_inner_val_threshold(inner_val),
        inference=InferenceSettings(
            amp=P.value(params, "train.amp"),
            eval_chunk=P.value(params, "train.eval_chunk"),
            threads=P.value(params, "train.threads"),
        ),
        training={
            **training_cohort(read_manifest(paths.PREPROCESSED)),
            # The effective training configuration; importing the training code also puts it under the manifest's
            # code hash (gliomil.serving.bundle.code_version), as it is under this stage's deps.
            "config": asdict(
                TrainConfig.from_settings({key: P.value(params, key) for key in TOP_LEVEL}, P.section(params, "train"))
            ),
        },
        params={key: P.value(params, key) if key in P.SPEC else P.section(params, key) for key in RECORDED},
    )
    write_bundle(paths.BUNDLE, {k: paths.fold_model(k) / "best.pt" for k in folds}, manifest)
    threshold = manifest["threshold"]
    print(
        f"bundle: {len(folds)} fold models -> {paths.BUNDLE}; threshold {threshold['value']:.4f} "
        f"(Youden's J on {threshold['predictions']} pooled inner-validation predictions)"
    )


if __name__ == "__main__":
    run_stage(main)
