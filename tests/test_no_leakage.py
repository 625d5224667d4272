"""The held-out fold cannot influence training, model selection or the decision threshold."""

import json
import shutil
import sys

import pandas as pd
import pytest
import yaml
from conftest import REPO, run_tool, tool_env

from gliomil import paths
from gliomil.data.brats import DEFAULT_SUFFIXES, find_subjects
from gliomil.data.preprocess import PreprocessSettings, preprocess_cohort
from gliomil.data.split import make_splits
from gliomil.vocabulary import grade_of

pytestmark = pytest.mark.slow


def _workspace(root, tiny_cohort, flip_test_labels: bool):
    """A folder with preprocessed data, fold splits and params, as the train and evaluate stages expect."""
    preprocessed = root / "data/preprocessed"
    preprocess_cohort(
        find_subjects(tiny_cohort), preprocessed, PreprocessSettings(image_size=16), DEFAULT_SUFFIXES, progress=False
    )
    manifest = pd.read_csv(preprocessed / "manifest.csv", dtype=str)
    manifest["label"] = manifest["label"].astype(int)
    splits = make_splits(manifest, n_folds=3, inner_val_fraction=0.5, seed=0)
    (root / "data/splits").mkdir(parents=True)
    for split in splits:
        (root / f"data/splits/fold_{split.fold}.json").write_text(split.to_json())
    if flip_test_labels:  # after splitting: the folds stay the same, only the held-out truth changes
        held_out = manifest["subject_id"].isin(splits[0].test)
        manifest.loc[held_out, "label"] = 1 - manifest.loc[held_out, "label"]
        manifest.loc[held_out, "grade"] = manifest.loc[held_out, "label"].map(grade_of)
        manifest.to_csv(preprocessed / "manifest.csv", index=False)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["folds"] = [0, 1, 2]
    params["train"].update(epochs=3, bag_size=8, plot_every=0)
    params["train"]["model"].update(width=4, depth=2)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(REPO / "stages", root / "stages")
    return root


def test_scrambling_held_out_labels_changes_no_training_output_nor_the_threshold(tiny_cohort, tmp_path):
    results = []
    for flip in (False, True):
        root = _workspace(tmp_path / f"flip_{flip}", tiny_cohort, flip)
        for stage in ("train", "evaluate"):
            run_tool([sys.executable, f"stages/{stage}.py", "0"], root, env=tool_env())
        metrics = json.loads((root / "metrics/eval/fold_0.json").read_text())
        results.append(
            {
                "checkpoint": (root / "models/fold_0/best.pt").read_bytes(),
                "training_log": (root / paths.fold_train_metrics(0)).read_text(),
                "history": (root / paths.fold_model(0) / "history.csv").read_text(),
                "threshold": metrics["at_youden_inner_val"]["threshold"],
                "held_out_auc": metrics["auc"],
            }
        )
    honest, scrambled = results
    assert honest["checkpoint"] == scrambled["checkpoint"]
    assert honest["training_log"] == scrambled["training_log"]
    assert honest["history"] == scrambled["history"]
    assert honest["threshold"] == scrambled["threshold"]
    # ... while the held-out evaluation does see the flipped labels
    assert honest["held_out_auc"] == pytest.approx(1 - scrambled["held_out_auc"])
