"""The audit checklist is decided from the pipeline's own logs, so each item can fail."""

import io
import math

import numpy as np
import pandas as pd
import pytest

from gliomil.evaluation.audit import (
    FoldRecord,
    checklist,
    epochs_with_all_diagnostics,
    mil_history,
    recount_collapse,
    render_report,
)
from gliomil.evaluation.diagnostics import LOGGED_KEYS, CollapseThresholds

THRESHOLDS = CollapseThresholds(uniform_entropy=0.98, uniform_max_ratio=1.5, onehot_max_attention=0.95)
HEALTHY = {"mean_normalized_entropy": 0.7, "mean_max_attention": 0.2, "mean_uniform_weight": 1 / 32}
UNIFORM = {"mean_normalized_entropy": 0.995, "mean_max_attention": 0.035, "mean_uniform_weight": 1 / 32}
ONE_HOT = {"mean_normalized_entropy": 0.05, "mean_max_attention": 0.98, "mean_uniform_weight": 1 / 32}


def history(train_rows: list[dict], val_rows: list[dict]) -> pd.DataFrame:
    """A mil_history frame; keys not given in a row are filled with a harmless 0.5."""
    rows = [
        {"split": split, "step": step, **{k: 0.5 for k in LOGGED_KEYS}, **row}
        for split, split_rows in (("train", train_rows), ("val", val_rows))
        for step, row in enumerate(split_rows)
    ]
    return pd.DataFrame(rows)[["split", "step", *LOGGED_KEYS]]


def record(mil_history: pd.DataFrame, warned: dict, epochs: int, fold: int = 0) -> FoldRecord:
    at = {
        "sensitivity": 0.8,
        "specificity": 0.8,
        "hgg_detected": "34/42 HGG",
        "predicted_hgg": 36,
        "confusion": {"tn": 12, "fp": 3, "fn": 8, "tp": 34},
    }
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


def as_written(rows: list[dict]) -> pd.DataFrame:
    """A fold's history as the train stage writes models/fold_<k>/history.csv and the aggregate stage reads it."""
    return pd.read_csv(io.StringIO(pd.DataFrame(rows).to_csv(index=False)))


def test_mil_history_reads_the_recorded_history():
    rows = []
    for epoch in range(1, 4):
        row = {"epoch": epoch, "lr": 1e-3, "train/loss": 0.5, "val/auc": 0.7}
        for key in LOGGED_KEYS:
            row[f"train/mil/{key}"] = 0.1 * (epoch - 1)
            # one value missing (NaN) in the last validation epoch
            row[f"val/mil/{key}"] = math.nan if key == "tumour_share" and epoch == 3 else 0.2 * (epoch - 1)
        rows.append(row)
    frame = mil_history(as_written(rows))
    assert list(frame.columns) == ["split", "step", *LOGGED_KEYS]
    assert frame.groupby("split").size().to_dict() == {"train": 3, "val": 3}
    val = frame[frame["split"] == "val"].set_index("step")
    assert val.loc[2, "mean_max_attention"] == pytest.approx(0.4)
    assert math.isnan(val.loc[2, "tumour_share"])
    assert epochs_with_all_diagnostics(frame) == 2


def test_mil_history_of_a_column_never_recorded_is_nan():
    rows = [
        {
            "epoch": 1,
            **{
                f"{split}/mil/{key}": 0.5
                for split in ("train", "val")
                for key in LOGGED_KEYS
                if key != "critical_is_tumour_rate"
            },
        }
    ]
    frame = mil_history(as_written(rows))
    assert frame["critical_is_tumour_rate"].isna().all() and frame["step"].tolist() == [0, 0]
    assert epochs_with_all_diagnostics(frame) == 0


def test_mil_history_of_a_fold_that_recorded_no_epoch():
    frame = mil_history(pd.DataFrame(columns=["epoch"]))
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
    assert item(
        checklist([record(complete, {"uniform": 0, "one-hot": 0}, 3)], 1, 0.5, THRESHOLDS), "MIL diagnostics logged"
    ).passed
    failed = item(
        checklist([record(gappy, {"uniform": 0, "one-hot": 0}, 3)], 1, 0.5, THRESHOLDS), "MIL diagnostics logged"
    )
    assert not failed.passed and "fold 0: 2/3" in failed.evidence


def test_render_report_names_the_knobs_and_the_checklist():
    frame = history([HEALTHY] * 2, [HEALTHY] * 2)
    rec = record(frame, {"uniform": 0, "one-hot": 0}, epochs=2)
    mil = {
        "mean_normalized_entropy": 0.7,
        "tumour_attention_mass": 0.5,
        "tumour_share": 0.3,
        "critical_is_tumour_rate": 0.8,
        "attention_tumour_lift": 2.0,
    }
    rec = FoldRecord(
        **{
            **rec.__dict__,
            "held_out": {**rec.held_out, "mil": mil},
            "class_weights": {**rec.class_weights, "train_counts": {"LGG": 40, "HGG": 110}},
        }
    )
    stats = {
        key: {"mean": 0.8, "std": 0.05}
        for key in ("auc", "at_0.5/f1", "at_youden_inner_val/f1", "at_0.5/accuracy", "at_0.5/balanced_accuracy")
    }
    summary = {
        "folds_mean_std": stats,
        "pooled": {"auc": 0.81, "ci_low": 0.75, "ci_high": 0.86},
        "patients": 57,
        "pooled_inner_val": {"auc": 0.79},
    }
    table = pd.DataFrame({"Fold": [0], "AUC": [0.8]})
    items = checklist([rec], 1, 0.5, THRESHOLDS)
    text = render_report(table, summary, [rec], items, {"seed": 42, "use_class_weights": True}, ["plots/roc.png"])
    assert "Knobs: `seed=42`, `use_class_weights=true`." in text
    assert "- AUC: 0.8000 ± 0.0500" in text and "| 0 | 0.8 |" in text
    assert "- [x] Attention collapse warnings appear if needed: **passed**." in text
    assert text.rstrip().endswith("![roc](roc.png)")
