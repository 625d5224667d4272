"""Paired comparison statistics against published pROC answers and hand-computed examples."""

import math
from functools import partial

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import balanced_accuracy_score, brier_score_loss, recall_score, roc_auc_score

from gliomil.comparison.statistics import (
    BootstrapResult,
    corrected_repeated_cv_ttest,
    holm,
    mcnemar_exact,
    paired_bootstrap_ci,
    sign_agreement,
    verdict,
)
from gliomil.evaluation.intervals import delong_auc_ci, delong_test, stratified_bootstrap_indices
from gliomil.evaluation.metrics import balanced_accuracy, brier_score, sensitivity, specificity

# ---------------------------------------------------------------------------------------------- DeLong


def test_asah_aucs_match_proc_and_sklearn(asah):
    labels, markers = asah
    assert (labels.sum(), (labels == 0).sum()) == (41, 72)
    expected = {"wfns": 0.823678861788618, "s100b": 0.731368563685637, "ndka": 0.611957994579946}
    for name, auc in expected.items():
        got = delong_auc_ci(labels, markers[name]).auc
        assert got == pytest.approx(auc, abs=1e-6)
        assert got == pytest.approx(roc_auc_score(labels, markers[name]), abs=1e-12)


# pROC's "A vs B" is AUC(A) - AUC(B), so A is our `after` and B our `before`.
@pytest.mark.parametrize(
    "after, before, z, p, ci_low, ci_high",
    [
        ("wfns", "s100b", 2.20898359144091, 0.0271757822291882, 0.0104061769564846, 0.174214419249478),
        ("wfns", "ndka", 2.79777591868904, 0.00514557970691098, 0.0634011709339876, 0.3600405634833566),
        ("ndka", "s100b", -1.39077002573558, 0.164295175223054, -0.2876917446341914, 0.0488706064228094),
    ],
)
def test_delong_test_matches_proc_on_asah(asah, after, before, z, p, ci_low, ci_high):
    labels, markers = asah
    r = delong_test(labels, before=markers[before], after=markers[after])
    assert r.z == pytest.approx(z, abs=1e-6)
    assert r.p == pytest.approx(p, abs=1e-6)
    assert (r.ci_low, r.ci_high) == pytest.approx((ci_low, ci_high), abs=1e-6)
    assert r.difference == pytest.approx(roc_auc_score(labels, markers[after]) - roc_auc_score(labels, markers[before]))
    # Swapping the runs flips the sign of everything but p.
    swapped = delong_test(labels, before=markers[after], after=markers[before])
    assert swapped.z == pytest.approx(-z, abs=1e-6) and swapped.p == pytest.approx(p, abs=1e-6)
    assert (swapped.ci_low, swapped.ci_high) == pytest.approx((-ci_high, -ci_low), abs=1e-6)


def test_delong_auc_ci_matches_proc_on_asah(asah):
    labels, markers = asah
    ci = delong_auc_ci(labels, markers["ndka"])
    assert (ci.ci_low, ci.ci_high) == pytest.approx((0.501244999271703, 0.722670989888189), abs=1e-6)


def test_delong_variance_matches_the_pairwise_definition():
    # DeLong's structural components straight from the definition, O(m n) pairwise comparisons with ties
    # counting 1/2, on rounded scores so that ties occur within and across classes.
    rng = np.random.default_rng(3)
    labels = np.r_[np.ones(23, int), np.zeros(17, int)]
    a = np.round(rng.normal(labels * 0.8, 1.0), 1)
    b = np.round(a + rng.normal(0, 0.7, labels.size), 1)
    components = []
    for s in (a, b):
        x, y = s[labels == 1], s[labels == 0]
        psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
        components.append((psi.mean(axis=1), psi.mean(axis=0)))
    (v10a, v01a), (v10b, v01b) = components
    m, n = 23, 17
    var_a = np.var(v10a, ddof=1) / m + np.var(v01a, ddof=1) / n
    var_b = np.var(v10b, ddof=1) / m + np.var(v01b, ddof=1) / n
    cov = np.cov(v10a, v10b)[0, 1] / m + np.cov(v01a, v01b)[0, 1] / n
    r = delong_test(labels, a, b)
    assert (r.auc_before, r.auc_after) == pytest.approx((v10a.mean(), v10b.mean()), abs=1e-12)
    assert (r.var_before, r.var_after, r.covariance) == pytest.approx((var_a, var_b, cov), abs=1e-12)
    assert r.z == pytest.approx((v10b.mean() - v10a.mean()) / math.sqrt(var_a + var_b - 2 * cov), abs=1e-9)
    assert delong_auc_ci(labels, a).variance == pytest.approx(var_a, abs=1e-12)


@pytest.mark.parametrize("transform", [lambda s: s, lambda s: 3 * s + 1, np.exp])
def test_delong_run_against_itself_has_no_difference(asah, transform):
    # A monotone transform ranks the patients identically: same AUC, zero variance of the difference.
    labels, markers = asah
    r = delong_test(labels, markers["s100b"], transform(markers["s100b"]))
    assert r.difference == pytest.approx(0.0, abs=1e-12)
    assert (r.z, r.p, r.sd_difference) == (0.0, 1.0, 0.0)
    assert r.ci_low == pytest.approx(0.0, abs=1e-12) and r.ci_high == pytest.approx(0.0, abs=1e-12)


def test_delong_rejects_too_few_patients_of_a_grade():
    with pytest.raises(ValueError, match="at least 2"):
        delong_test([1, 0, 0, 0], [0.9, 0.1, 0.2, 0.3], [0.8, 0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="shape"):
        delong_test([1, 1, 0, 0], [0.9, 0.1, 0.2], [0.8, 0.1, 0.2, 0.3])


# ---------------------------------------------------------------------------------------------- McNemar


def _pairs(b: int, c: int, both_right: int, both_wrong: int) -> tuple[np.ndarray, np.ndarray]:
    before = np.array([True] * b + [False] * c + [True] * both_right + [False] * both_wrong)
    after = np.array([False] * b + [True] * c + [True] * both_right + [False] * both_wrong)
    return before, after


@pytest.mark.parametrize(
    "b, c, p",
    [
        (0, 6, 2 * 0.5**6),  # all 6 discordant go one way: 2 * (1/2)^6 = 0.03125
        (1, 7, 2 * (1 + 8) / 2**8),  # P(X <= 1), X ~ Bin(8, 1/2) = (C(8,0) + C(8,1)) / 256, doubled
        (4, 4, 1.0),  # balanced discordance
        (0, 0, 1.0),  # no discordant patient: nothing to test
    ],
)
def test_mcnemar_exact_on_hand_computed_cases(b, c, p):
    before, after = _pairs(b, c, both_right=10, both_wrong=3)
    r = mcnemar_exact(before, after)
    assert (r.b, r.c, r.n) == (b, c, b + c + 13)
    assert (r.n_right_before, r.n_right_after) == (b + 10, c + 10)
    assert r.p == pytest.approx(p, rel=1e-12)


def test_mcnemar_refuses_non_boolean_input():
    with pytest.raises(ValueError, match="boolean"):
        mcnemar_exact(np.array([1, 0, 1]), np.array([1, 1, 1]))


# ---------------------------------------------------------------------------------------------- bootstrap statistics


def test_threshold_statistics_agree_with_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    probs = np.round(rng.uniform(0, 1, 60), 1)  # some exactly at 0.5: >= 0.5 is HGG, as in gliomil.evaluation.metrics
    pred = (probs >= 0.5).astype(int)
    assert sensitivity(labels, probs) == pytest.approx(recall_score(labels, pred, pos_label=1))
    assert specificity(labels, probs) == pytest.approx(recall_score(labels, pred, pos_label=0))
    assert balanced_accuracy(labels, probs) == pytest.approx(balanced_accuracy_score(labels, pred))
    assert brier_score(labels, probs) == pytest.approx(brier_score_loss(labels, probs))
    pred_03 = (probs >= 0.3).astype(int)
    assert partial(sensitivity, threshold=0.3)(labels, probs) == pytest.approx(recall_score(labels, pred_03))


# Fixed cohort for the bootstrap tests: 30 HGG, 12 LGG.
BOOT_LABELS = np.r_[np.ones(30, int), np.zeros(12, int)]


def _noisy_run(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0.35 + 0.3 * BOOT_LABELS, 0.2), 0, 1)


def test_bootstrap_of_identical_runs_is_exactly_zero():
    probs = _noisy_run(1)
    for stat in (balanced_accuracy, brier_score, sensitivity):
        r = paired_bootstrap_ci(BOOT_LABELS, probs, probs.copy(), stat, n_resamples=500, seed=0)
        assert (r.observed, r.ci_low, r.ci_high) == (0.0, 0.0, 0.0)


def test_bootstrap_ci_excludes_zero_when_after_is_better_on_every_patient():
    before = _noisy_run(2)
    # After is closer to the truth on every single patient, so every resample's Brier score drops.
    after = before + 0.5 * (BOOT_LABELS - before)
    r = paired_bootstrap_ci(BOOT_LABELS, before, after, brier_score, n_resamples=1000, seed=0)
    assert r.observed < 0 and r.ci_high < 0
    # Before misclassifies 5 HGG and 4 LGG, after none: balanced accuracy rises in (almost) every resample.
    before_ba = np.where(BOOT_LABELS == 1, 0.8, 0.2)
    before_ba[:5], before_ba[-4:] = 0.3, 0.7
    after_ba = np.where(BOOT_LABELS == 1, 0.8, 0.2)
    r = paired_bootstrap_ci(BOOT_LABELS, before_ba, after_ba, balanced_accuracy, n_resamples=1000, seed=0)
    assert r.observed == pytest.approx((5 / 30 + 4 / 12) / 2)
    assert 0 < r.ci_low < r.observed < r.ci_high


def test_bootstrap_resamples_keep_each_grade_count():
    seen = []

    def counting(labels, probs):
        seen.append((labels.size, int(labels.sum())))
        return 0.0

    paired_bootstrap_ci(BOOT_LABELS, _noisy_run(3), _noisy_run(4), counting, n_resamples=300, seed=0)
    assert len(seen) == 2 + 2 * 300  # observed (before, after) + both runs on every resample
    assert set(seen) == {(42, 30)}
    idx = stratified_bootstrap_indices(BOOT_LABELS, 300, seed=1)
    assert idx.shape == (300, 42)
    assert (BOOT_LABELS[idx[:, :12]] == 0).all() and (BOOT_LABELS[idx[:, 12:]] == 1).all()
    # Sampling with replacement: some patient is drawn twice in (nearly) every row.
    assert np.mean([np.unique(row).size < 42 for row in idx]) > 0.99


def test_bootstrap_is_deterministic_for_a_seed():
    before, after = _noisy_run(5), _noisy_run(6)
    run = partial(paired_bootstrap_ci, BOOT_LABELS, before, after, balanced_accuracy, n_resamples=500)
    first, again, other = run(seed=7), run(seed=7), run(seed=8)
    assert first == again
    assert isinstance(first, BootstrapResult) and first.observed == other.observed
    assert (first.ci_low, first.ci_high) != (other.ci_low, other.ci_high)


# ---------------------------------------------------------------------------------------------- corrected t-test


def test_corrected_repeated_cv_ttest_hand_example():
    d = [0.02, -0.01, 0.03, 0.00, 0.01, 0.02]
    # n = 6, mean = 0.07 / 6 = 7/600.
    # sum d^2 = 0.0004 + 0.0001 + 0.0009 + 0 + 0.0001 + 0.0004 = 0.0019; n mean^2 = 0.0049 / 6
    # s2 = (0.0019 - 0.0049/6) / 5 = (13/12000) / 5 = 13/60000.
    # correction 1/n + n_test/n_train = 1/6 + 45/180 = 1/6 + 1/4 = 5/12
    # se = sqrt(5/12 * 13/60000) = sqrt(13/144000); t = (7/600) / sqrt(13/144000) = 1.22788...
    mean, s2 = 7 / 600, 13 / 60000
    se = math.sqrt(5 / 12 * s2)
    r = corrected_repeated_cv_ttest(d, n_train=180, n_test=45)
    assert r.mean == pytest.approx(mean) and r.variance == pytest.approx(s2)
    assert r.t == pytest.approx(mean / se) and r.t == pytest.approx(1.22788, abs=1e-5)
    assert r.df == 5 and r.n == 6
    assert r.p == pytest.approx(2 * sps.t.sf(mean / se, 5))
    t975 = 2.570581835636314  # Student t, 5 df, 97.5th percentile (tables: 2.571)
    assert (r.ci_low, r.ci_high) == pytest.approx((mean - t975 * se, mean + t975 * se))
    # The naive paired t-test (variance s2 / n, here se = sqrt(s2 / 6), t = 1.94145) is anti-conservative.
    naive = sps.ttest_1samp(d, 0.0)
    assert naive.statistic == pytest.approx(1.94145, abs=1e-5)
    assert r.p > naive.pvalue and abs(r.t) < abs(naive.statistic)
    naive_ci = naive.confidence_interval(0.95)
    assert r.ci_low < naive_ci.low and r.ci_high > naive_ci.high


def test_corrected_ttest_with_zero_variance():
    r = corrected_repeated_cv_ttest([0.0] * 10, n_train=80, n_test=20)
    assert (r.t, r.p, r.ci_low, r.ci_high) == (0.0, 1.0, 0.0, 0.0)
    r = corrected_repeated_cv_ttest([-0.02] * 10, n_train=80, n_test=20)
    assert r.t == -math.inf and r.p == 0.0 and (r.ci_low, r.ci_high) == pytest.approx((-0.02, -0.02))


# ---------------------------------------------------------------------------------------------- Holm, signs, words


def test_holm_hand_examples():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # capped at 1 and monotone: 0.5*2 = 1.0, then max(1.0, 0.6) = 1.0
    assert holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])
    assert holm([0.04, 0.001, 0.3]) == pytest.approx([0.08, 0.003, 0.3])
    assert holm([0.02]) == pytest.approx([0.02]) and holm([]) == []


def test_sign_agreement():
    s = sign_agreement([0.01, -0.02, 0.0, 0.03, 0.005])
    assert (s.positive, s.negative, s.zero, s.n) == (3, 1, 1, 5)


def test_verdicts_follow_the_adjusted_p(asah):
    labels, markers = asah
    r = delong_test(labels, before=markers["s100b"], after=markers["wfns"])
    assert verdict(r) == "AUC improved (dAUC +0.092 [0.010, 0.174], p = 0.027)"
    assert verdict(r, p_adjusted=0.0815) == (
        "no evidence of a difference in ranking (dAUC +0.092 [0.010, 0.174], p = 0.027, Holm-adjusted 0.082)"
    )
    worse = delong_test(labels, before=markers["wfns"], after=markers["ndka"])
    assert verdict(worse).startswith("AUC worsened (dAUC -0.212 [-0.360, -0.063], p = 0.0051")

    m = mcnemar_exact(*_pairs(b=0, c=6, both_right=50, both_wrong=19))
    assert verdict(m, "LGG recall") == "LGG recall improved 50/75 -> 56/75 (McNemar p = 0.031)"
    assert verdict(m, "LGG recall", p_adjusted=0.12) == (
        "no evidence of a difference in LGG recall (50/75 -> 56/75, McNemar p = 0.031, Holm-adjusted 0.12)"
    )
    assert verdict(mcnemar_exact(*_pairs(b=6, c=0, both_right=50, both_wrong=19)), "LGG recall").startswith(
        "LGG recall worsened 56/75 -> 50/75"
    )

    t = corrected_repeated_cv_ttest([0.02, -0.01, 0.03, 0.00, 0.01, 0.02], n_train=180, n_test=45)
    assert verdict(t, "AUC").startswith("no evidence of a difference in AUC (mean dAUC +0.012 [")

    better = BootstrapResult(observed=-0.03, ci_low=-0.05, ci_high=-0.01, level=0.95, n_resamples=1000)
    assert verdict(better, "Brier", higher_is_better=False) == (
        "Brier improved (dBrier -0.030 [-0.050, -0.010], 95% bootstrap CI)"
    )
    with pytest.raises(TypeError, match="no verdict for a float"):
        verdict(0.05)
