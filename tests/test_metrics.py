"""Metrics on predictions with known answers: per-epoch logging, held-out folds, thresholds, pooled AUC."""

import math

import numpy as np
import pytest

from gliomil.evaluation.metrics import (
    calibration_fit,
    curve_tables,
    epoch_metrics,
    expected_calibration_error,
    external_validation,
    fold_metrics,
    pooled_auc_with_ci,
    proportion_with_ci,
    ranking_metrics,
    threshold_metrics,
    youden_threshold,
)

LABELS = np.array([1, 1, 1, 1, 0, 0, 0])
PROBS = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.2, 0.1])


def test_epoch_metrics_counts_predicted_hgg():
    labels = np.array([1, 1, 1, 0, 0])
    metrics = epoch_metrics(labels, np.array([0.9, 0.8, 0.2, 0.6, 0.1]))
    assert metrics["predicted_hgg"] == 3 and metrics["true_hgg"] == 3
    assert metrics["accuracy"] == pytest.approx(0.6)
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert metrics["auc"] == pytest.approx(5 / 6)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_epoch_metrics_of_one_class_has_no_auc():
    metrics = epoch_metrics(np.array([1, 1]), np.array([0.9, 0.2]))
    assert math.isnan(metrics["auc"]) and metrics["predicted_hgg"] == 1 and metrics["true_hgg"] == 2


def test_threshold_metrics_on_a_known_confusion_matrix():
    m = threshold_metrics(LABELS, PROBS, 0.5)
    # predicted HGG: 0.9, 0.8, 0.6 (true) and 0.7 (false) -> tp 3, fn 1, fp 1, tn 2
    assert m["confusion"] == {"tn": 2, "fp": 1, "fn": 1, "tp": 3}
    assert m["sensitivity"] == pytest.approx(3 / 4) and m["specificity"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    mcc = (3 * 2 - 1 * 1) / math.sqrt((3 + 1) * (3 + 1) * (2 + 1) * (2 + 1))
    assert m["mcc"] == pytest.approx(mcc)
    assert m["hgg_detected"] == "3/4 HGG" and m["predicted_hgg"] == 4 and m["predicted_lgg"] == 3


def test_a_model_that_predicts_every_patient_lgg():
    m = threshold_metrics(LABELS, np.full(7, 0.2), 0.5)
    assert m["hgg_detected"] == "0/4 HGG" and m["predicted_hgg"] == 0
    assert m["sensitivity"] == 0 and m["specificity"] == 1 and m["f1"] == 0 and m["mcc"] == 0


def test_ranking_metrics():
    m = ranking_metrics(LABELS, PROBS)
    # 12 HGG/LGG pairs; 0.6 and 0.3 rank below the LGG at 0.7, the other 10 pairs are right
    assert m["auc"] == pytest.approx(10 / 12)
    assert m["brier"] == pytest.approx(np.mean((PROBS - LABELS) ** 2))
    # average precision: ranked 0.9 H, 0.8 H, 0.7 L, 0.6 H, 0.3 H, ...; precision at each HGG is 1/1, 2/2, 3/4, 4/5
    assert m["pr_auc"] == pytest.approx((1 + 1 + 3 / 4 + 4 / 5) / 4)


def test_expected_calibration_error():
    # two bins: [0.1, 0.1] observed 0/2 -> error 0.1; [0.9, 0.9] observed 1/2 -> error 0.4
    labels = np.array([0, 0, 1, 0])
    probs = np.array([0.1, 0.1, 0.9, 0.9])
    assert expected_calibration_error(labels, probs) == pytest.approx(0.5 * 0.1 + 0.5 * 0.4)
    assert expected_calibration_error(np.array([0, 1]), np.array([0.0, 1.0])) == 0


def test_youden_threshold_maximises_sensitivity_plus_specificity():
    # J at 0.9, 0.8, 0.6, 0.3: 1/4, 1/2, 3/4 + 2/3 - 1, 1 + 2/3 - 1 -> 0.3 is best
    assert youden_threshold(LABELS, PROBS) == pytest.approx(0.3)


def test_youden_threshold_stays_a_probability_and_ties_take_the_highest():
    # Separated: J = 1 at 0.9 (HGG 0.9 in, LGG 0.2 out).
    assert youden_threshold(np.array([0, 1]), np.array([0.2, 0.9])) == 0.9
    # Reversed: J = 0 calling nobody HGG (scikit-learn's threshold +inf) or everybody (0.2), -1 at 0.9; the tie
    # goes to the highest threshold, +inf, which comes back as 1.0.
    assert youden_threshold(np.array([1, 0]), np.array([0.2, 0.9])) == 1.0


def test_fold_metrics_labels_both_thresholds():
    m = fold_metrics(LABELS, PROBS, youden=0.25)
    assert m["at_0.5"]["threshold"] == 0.5 and m["at_youden_inner_val"]["threshold"] == 0.25
    assert m["at_youden_inner_val"]["hgg_detected"] == "4/4 HGG"


def test_curve_tables():
    tables = curve_tables(LABELS, PROBS)
    assert tables["roc"]["fpr"].iloc[-1] == 1 and tables["roc"]["tpr"].iloc[-1] == 1
    assert tables["roc"]["threshold"].max() <= 1
    assert tables["calibration"]["patients"].sum() == 7


def bootstrap_auc_interval_by_hand(labels, scores, n_bootstrap: int, seed: int) -> tuple[float, float, float]:
    """The stratified percentile bootstrap written out: each resample draws the HGG then the LGG patients with
    replacement (``rng.choice``), its AUC is the share of HGG-LGG pairs ranked right (ties one half), and the
    interval is the 2.5th and 97.5th percentiles (linear interpolation between order statistics)."""

    def pairwise_auc(positive_scores, negative_scores):
        difference = positive_scores[:, None] - negative_scores[None, :]
        return float(np.mean((difference > 0) + 0.5 * (difference == 0)))

    rng = np.random.default_rng(seed)
    positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    aucs = []
    for _ in range(n_bootstrap):
        drawn_positives = rng.choice(positives, len(positives))
        drawn_negatives = rng.choice(negatives, len(negatives))
        aucs.append(pairwise_auc(scores[drawn_positives], scores[drawn_negatives]))
    ordered = sorted(aucs)

    def percentile(q):
        position = q * (n_bootstrap - 1)
        below = math.floor(position)
        above = min(below + 1, n_bootstrap - 1)
        return ordered[below] + (ordered[above] - ordered[below]) * (position - below)

    return pairwise_auc(scores[positives], scores[negatives]), percentile(0.025), percentile(0.975)


def test_pooled_auc_interval_is_the_stratified_percentile_bootstrap_and_near_delong_on_asah(asah):
    labels, markers = asah
    result = pooled_auc_with_ci(labels, markers["ndka"], n_bootstrap=500, seed=1)
    auc, low, high = bootstrap_auc_interval_by_hand(labels, markers["ndka"], n_bootstrap=500, seed=1)
    assert result["auc"] == pytest.approx(0.611957994579946, abs=1e-12) == pytest.approx(auc, abs=1e-12)  # pROC
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((low, high), abs=1e-12)
    assert result["n_bootstrap"] == 500
    # The percentile interval lands near pROC's DeLong interval for ndka (seeds 0-4 all within 0.008).
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((0.501244999271703, 0.722670989888189), abs=0.01)
    # wfns is a 5-level score: 453 tied (Poor, Good) pairs, each counted 1/2 by the hand AUC as by the code
    result = pooled_auc_with_ci(labels, markers["wfns"], n_bootstrap=300, seed=2)
    auc, low, high = bootstrap_auc_interval_by_hand(labels, markers["wfns"], n_bootstrap=300, seed=2)
    assert result["auc"] == pytest.approx(0.823678861788618, abs=1e-12) == pytest.approx(auc, abs=1e-12)  # pROC
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((low, high), abs=1e-12)
    seeded = pooled_auc_with_ci(labels, markers["ndka"], n_bootstrap=100, seed=1)
    assert seeded == pooled_auc_with_ci(labels, markers["ndka"], n_bootstrap=100, seed=1)
    assert seeded != pooled_auc_with_ci(labels, markers["ndka"], n_bootstrap=100, seed=2)


def wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson (1927) score interval written out: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)."""
    p = k / n
    centre = p + z * z / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


@pytest.mark.parametrize("k, n", [(35, 40), (20, 40), (7, 7), (0, 12), (1, 3)])
def test_proportion_interval_is_wilsons(k, n):
    result = proportion_with_ci(k, n)
    low, high = wilson_by_hand(k, n)
    assert result["value"] == k / n and result["n"] == n
    assert result["ci_low"] == pytest.approx(low, abs=1e-12) and result["ci_high"] == pytest.approx(high, abs=1e-12)


def test_proportion_of_nothing_is_nan():
    assert math.isnan(proportion_with_ci(0, 0)["value"])


def test_calibration_slope_recovers_known_miscalibration():
    rng = np.random.default_rng(1)
    logit = rng.normal(0, 1.5, 20000)
    labels = (rng.random(logit.size) < 1 / (1 + np.exp(-logit))).astype(int)
    calibrated = calibration_fit(labels, 1 / (1 + np.exp(-logit)))
    assert calibrated["slope"] == pytest.approx(1, abs=0.05) and calibrated["intercept"] == pytest.approx(0, abs=0.05)
    too_extreme = calibration_fit(labels, 1 / (1 + np.exp(-2 * logit)))  # logits doubled: slope 1/2
    assert too_extreme["slope"] == pytest.approx(0.5, abs=0.03)
    shifted = calibration_fit(labels, 1 / (1 + np.exp(-(logit + 1))))  # logits shifted by +1: intercept -1
    assert shifted["slope"] == pytest.approx(1, abs=0.05) and shifted["intercept"] == pytest.approx(-1, abs=0.06)


def test_calibration_in_the_large_by_hand():
    # One predicted probability for everybody: the intercept moves its logit onto the observed rate's logit.
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])  # observed rate 0.3
    intercept = calibration_fit(labels, np.full(10, 0.6))["intercept"]
    assert intercept == pytest.approx(math.log(0.3 / 0.7) - math.log(0.6 / 0.4), abs=1e-9)


def test_external_validation_counts_and_intervals():
    m = external_validation(LABELS, PROBS, threshold=0.5, n_bootstrap=500, seed=0)
    # at 0.5: HGG 0.9, 0.8, 0.6 detected (3/4), LGG 0.2, 0.1 correct (2/3)
    at = m["at_bundle_threshold"]
    assert (at["tn"], at["fp"], at["fn"], at["tp"]) == (2, 1, 1, 3)
    assert at["sensitivity"] == 3 / 4 and at["specificity"] == 2 / 3
    assert (at["sensitivity_ci_low"], at["sensitivity_ci_high"]) == pytest.approx(wilson_by_hand(3, 4))
    assert at["balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert at["balanced_accuracy_ci_low"] <= at["balanced_accuracy"] <= at["balanced_accuracy_ci_high"]
    assert m["auc"] == pytest.approx(10 / 12) and m["auc_ci_low"] < m["auc"] < m["auc_ci_high"]
    assert (m["patients"], m["hgg"], m["lgg"]) == (7, 4, 3)
    assert m == external_validation(LABELS, PROBS, threshold=0.5, n_bootstrap=500, seed=0)
    # plain numbers only: `dvc metrics show` lists them as columns
    nested = [v for d in m.values() if isinstance(d, dict) for v in d.values()]
    assert all(isinstance(v, (int, float)) for v in [*nested, *(v for v in m.values() if not isinstance(v, dict))])
