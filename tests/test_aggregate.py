"""The cross-validation summary: per-fold status, mean and spread over folds, the audit's per-fold table."""

import numpy as np
import pytest

from gliomil.evaluation.aggregate import StatusRules, fold_status, fold_statuses, mean_and_std, seed_table


def _at(predicted_hgg, predicted_lgg, sensitivity, specificity, balanced_accuracy):
    return dict(
        predicted_hgg=predicted_hgg,
        predicted_lgg=predicted_lgg,
        sensitivity=sensitivity,
        specificity=specificity,
        balanced_accuracy=balanced_accuracy,
    )


def test_status_rules():
    rules = StatusRules(min_recall=0.5)
    assert fold_status(_at(0, 57, 0.0, 1.0, 0.5), rules) == "Critical"  # the seed's fold 4
    assert fold_status(_at(57, 0, 1.0, 0.0, 0.5), rules) == "Critical"
    assert fold_status(_at(5, 52, 3 / 42, 1.0, 0.54), rules) == "Needs improvement"  # the seed's fold 0
    assert fold_status(_at(40, 17, 0.9, 0.4, 0.65), rules) == "Needs improvement"
    assert fold_status(_at(40, 17, 0.9, 0.8, 0.85), rules) == "Good"


def test_best_is_the_good_fold_with_the_highest_balanced_accuracy():
    folds = [
        _at(0, 57, 0, 1, 0.5),
        _at(40, 17, 0.9, 0.8, 0.85),
        _at(40, 17, 0.95, 0.8, 0.875),
        _at(5, 52, 0.1, 1.0, 0.55),
    ]
    assert fold_statuses(folds, StatusRules()) == ["Critical", "Good", "Best", "Needs improvement"]
    assert fold_statuses([_at(0, 57, 0, 1, 0.5)], StatusRules()) == ["Critical"]


def test_mean_and_std_over_folds():
    folds = [
        {"fold": 0, "auc": 0.8, "at_0.5": {"f1": 0.5, "hgg_detected": "1/2 HGG"}},
        {"fold": 1, "auc": 0.9, "at_0.5": {"f1": 0.7, "hgg_detected": "2/2 HGG"}},
    ]
    summary = mean_and_std(folds)
    assert set(summary) == {"auc", "at_0.5/f1"}
    assert summary["auc"]["mean"] == pytest.approx(0.85)
    assert summary["auc"]["std"] == pytest.approx(np.std([0.8, 0.9], ddof=1))


def test_seed_table_has_the_audit_columns():
    folds = [{"fold": 0, "auc": 0.91, "at_0.5": {"f1": 0.77, "accuracy": 0.79, "hgg_detected": "3/42 HGG"}}]
    table = seed_table(folds, ["Needs improvement"])
    assert list(table.columns) == ["Fold", "AUC", "F1", "Acc", "Class balance", "Status"]
    assert table.iloc[0].tolist() == [0, 0.91, 0.77, 0.79, "3/42 HGG", "Needs improvement"]


def test_headline_takes_the_pooled_numbers_and_counts_flagged_folds():
    from gliomil.evaluation.aggregate import headline

    summary = {
        "pooled": {"auc": 0.85, "ci_low": 0.8, "ci_high": 0.9},
        "pooled_inner_val": {"auc": 0.84},
        "status_at_0.5": {"Critical": 1, "Needs improvement": 2, "Good": 1, "Best": 1},
    }
    at_half = {"balanced_accuracy": 0.75, "sensitivity": 0.7, "specificity": 0.8}
    assert headline(summary, at_half) == {
        "auc": 0.85,
        "auc_ci_low": 0.8,
        "auc_ci_high": 0.9,
        "inner_val_auc": 0.84,
        "balanced_accuracy": 0.75,
        "hgg_recall": 0.7,
        "lgg_recall": 0.8,
        "folds_flagged": 3,
    }
