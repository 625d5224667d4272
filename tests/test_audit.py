"""The audit checklist is decided from the pipeline's own logs, so each item can fail."""

import math

import numpy as np
import pandas as pd
import pytest
from dvclive import Live

from gliomil.audit import FoldRecord, checklist, epochs_with_all_diagnostics, read_mil_history, recount_collapse
from gliomil.diagnostics import LOGGED_KEYS, CollapseThresholds

THRESHOLDS = CollapseThresholds(uniform_entropy=0.98, uniform_max_ratio=1.5, onehot_max_attention=0.95)
HEALTHY = {"mean_normalized_entropy": 0.7, "mean_max_attention": 0.2, "mean_uniform_weight": 1 / 32}
UNIFORM = {"mean_normalized_entropy": 0.995, "mean_max_attention": 0.035, "mean_uniform_weight": 1 / 32}
ONE_HOT = {"mean_normalized_entropy": 0.05, "mean_max_attention": 0.98, "mean_uniform_weight": 1 / 32}


def history(train_rows: list[dict], val_rows: list[dict]) -> pd.DataFrame:
    """A mil_history frame; keys not given in a row are filled with a harmless 0.5."""
    rows = [{"split": split, "step": step, **{k: 0.5 for k in LOGGED_KEYS}, **row}
            for split, split_rows in (("train", train_rows), ("val", val_rows))
            for step, row in enumerate(split_rows)]
    return pd.DataFrame(rows)[["split", "step", *LOGGED_KEYS]]


def record(mil_history: pd.DataFrame, warned: dict, epochs: int, fold: int = 0) -> FoldRecord:
    at = {"sensitivity": 0.8, "specificity": 0.8, "hgg_detected": "34/42 HGG", "predicted_hgg": 36,
          "confusion": {"tn": 12, "fp": 3, "fn": 8, "tp": 34}}
    return FoldRecord(
        fold=fold,
        held_out={"at_0.5": at, "n_test": 57, "mil": {"attention_tumour_lift": 2.0}},
        training={"collapse_epochs": warned},
        class_weights={"use_class_weights": True, "LGG": 1.9, "HGG": 0.68},
        mil_history=mil_history,
        epochs_trained=epochs,
        figures=4 * epochs,
    )


def item(items, start: str):
    (found,) = [i for i in items if i.text.startswith(start)]
    return found


def test_read_mil_history_reads_what_dvclive_writes(tmp_path):
    with Live(dir=str(tmp_path), dvcyaml=False, save_dvc_exp=False) as live:
        for step in range(3):
            for key in LOGGED_KEYS:
                live.log_metric(f"train/mil/{key}", 0.1 * step)
                if key != "tumour_share" or step < 2:  # one value missing in the last validation epoch
                    live.log_metric(f"val/mil/{key}", 0.2 * step)
            live.next_step()
    frame = read_mil_history(tmp_path)
    assert list(frame.columns) == ["split", "step", *LOGGED_KEYS]
    assert frame.groupby("split").size().to_dict() == {"train": 3, "val": 3}
    val = frame[frame["split"] == "val"].set_index("step")
    assert val.loc[2, "mean_max_attention"] == pytest.approx(0.4)
    assert math.isnan(val.loc[2, "tumour_share"])
    assert epochs_with_all_diagnostics(frame) == 2


def test_read_mil_history_of_a_fold_that_logged_nothing(tmp_path):
    frame = read_mil_history(tmp_path)
    assert len(frame) == 0 and epochs_with_all_diagnostics(frame) == 0


def test_recount_collapse_applies_the_thresholds_per_logged_epoch():
    frame = history([HEALTHY, UNIFORM, UNIFORM], [ONE_HOT, HEALTHY, UNIFORM])
    assert recount_collapse(frame, THRESHOLDS) == {"uniform": 3, "one-hot": 1}
    # A stricter entropy threshold no longer calls entropy 0.995 uniform.
    strict = CollapseThresholds(uniform_entropy=0.999, uniform_max_ratio=1.5, onehot_max_attention=0.95)
    assert recount_collapse(frame, strict) == {"uniform": 0, "one-hot": 1}


def test_collapse_item_passes_only_when_the_warnings_match_the_logs():
    frame = history([HEALTHY, UNIFORM], [HEALTHY, ONE_HOT])
    honest = record(frame, {"uniform": 1, "one-hot": 1}, epochs=2)
    silent = record(frame, {"uniform": 0, "one-hot": 0}, epochs=2)
    assert item(checklist([honest], 1, 0.5, THRESHOLDS), "Attention collapse").passed
    failed = item(checklist([silent], 1, 0.5, THRESHOLDS), "Attention collapse")
    assert not failed.passed
    assert "warned 0 uniform, 0 one-hot; recounted 1, 1" in failed.evidence


def test_diagnostics_item_fails_when_an_epoch_misses_a_value():
    complete = history([HEALTHY] * 3, [HEALTHY] * 3)
    gappy = complete.copy()
    gappy.loc[gappy.index[-1], "attention_tumour_lift"] = np.nan
    assert item(checklist([record(complete, {"uniform": 0, "one-hot": 0}, 3)], 1, 0.5, THRESHOLDS),
                "MIL diagnostics logged").passed
    failed = item(checklist([record(gappy, {"uniform": 0, "one-hot": 0}, 3)], 1, 0.5, THRESHOLDS),
                  "MIL diagnostics logged")
    assert not failed.passed and "fold 0: 2/3" in failed.evidence
