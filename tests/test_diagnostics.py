"""Tests for gliomil.evaluation.diagnostics: hand-computed values, edge cases, collapse verdicts."""

import math

import numpy as np
import pytest

from gliomil.evaluation.diagnostics import (
    BagDiagnostics,
    CollapseThresholds,
    bag_diagnostics,
    batch_diagnostics,
    collapse_warning,
    detect_collapse,
    summarize,
)


def _scores(n, peak=0):
    scores = np.zeros(n)
    scores[peak] = 1.0
    return scores


# --------------------------------------------------------------------------- single bag


@pytest.mark.parametrize("n", [2, 5, 32])
def test_uniform_attention(n):
    d = bag_diagnostics(np.full(n, 1.0 / n), _scores(n))
    assert d.n_instances == n
    assert d.entropy == pytest.approx(math.log(n))
    assert d.normalized_entropy == pytest.approx(1.0)
    assert d.effective_instances == pytest.approx(n)
    assert d.max_attention == pytest.approx(1.0 / n)
    assert d.top_k_mass == pytest.approx(min(3, n) / n)
    assert d.gini == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("n", [2, 5, 32])
def test_one_hot_attention(n):
    attention = np.zeros(n)
    attention[n // 2] = 1.0
    d = bag_diagnostics(attention, _scores(n))
    assert d.entropy == pytest.approx(0.0, abs=1e-12)
    assert d.normalized_entropy == pytest.approx(0.0, abs=1e-12)
    assert d.effective_instances == pytest.approx(1.0)
    assert d.max_attention == 1.0
    assert d.top_k_mass == 1.0
    assert d.gini == pytest.approx((n - 1) / n)


def test_single_instance_bag_is_defined_not_a_crash():
    d = bag_diagnostics([1.0], [0.3], tumour_fraction=[0.2])
    assert d.n_instances == 1
    assert math.isnan(d.normalized_entropy)
    assert d.entropy == 0.0
    assert d.effective_instances == 1.0
    assert d.max_attention == 1.0
    assert d.gini == 0.0
    assert d.score_spread == 0.0
    assert d.critical_index == 0
    assert d.critical_position == 0.5
    assert d.critical_is_tumour == 1.0


def test_hand_computed_small_bag():
    # a = [0.5, 0.25, 0.25]: H = 0.5 ln 2 + 2 * 0.25 ln 4 = 1.5 ln 2.
    d = bag_diagnostics([0.5, 0.25, 0.25], [0.0, 2.0, -2.0], top_k=2)
    h = 1.5 * math.log(2)
    assert d.entropy == pytest.approx(h)
    assert d.normalized_entropy == pytest.approx(h / math.log(3))
    assert d.effective_instances == pytest.approx(2**1.5)
    assert d.max_attention == 0.5
    assert d.top_k_mass == pytest.approx(0.75)
    # Gini = sum_ij |a_i - a_j| / (2 N^2 mean) = (4 * 0.25) / (2 * 9 * 1/3) = 1/6.
    assert d.gini == pytest.approx(1.0 / 6.0)
    assert d.score_spread == pytest.approx(math.sqrt(8.0 / 3.0))  # population std of [0, 2, -2]
    assert d.critical_index == 1
    assert d.critical_position == pytest.approx(0.5)  # index 1 of 0..2


def test_gini_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    a = rng.dirichlet(np.full(9, 0.7))
    expected = np.abs(a[:, None] - a[None, :]).sum() / (2 * a.size**2 * a.mean())
    assert bag_diagnostics(a, rng.normal(size=9)).gini == pytest.approx(expected)


def test_top_k_clipped_to_bag_size():
    assert bag_diagnostics([0.6, 0.4], [0.0, 1.0], top_k=5).top_k_mass == pytest.approx(1.0)


def test_critical_position_uses_slice_positions_when_given():
    d = bag_diagnostics([0.25] * 4, [0.0, 0.0, 3.0, 1.0], slice_positions=[0.1, 0.3, 0.55, 0.8])
    assert d.critical_index == 2
    assert d.critical_position == pytest.approx(0.55)


def test_critical_index_first_on_ties():
    assert bag_diagnostics([0.25] * 4, [0.0, 2.0, 2.0, 1.0]).critical_index == 1


def test_float32_attention_accepted_and_bounded():
    logits = np.random.default_rng(1).normal(size=155).astype(np.float32)
    a = np.exp(logits) / np.exp(logits).sum()
    d = bag_diagnostics(a.astype(np.float32), logits)
    assert 0.0 <= d.normalized_entropy <= 1.0
    assert d.max_attention >= 1.0 / 155


# --------------------------------------------------------------------------- tumour


def test_tumour_statistics_on_constructed_bag():
    # Slices 1 and 2 hold tumour; 0.7 of the attention sits on them; the critical slice (3) is not tumour.
    attention = [0.1, 0.3, 0.4, 0.2]
    scores = [0.0, 1.0, 0.5, 2.0]
    tumour = [0.0, 0.05, 0.3, 0.0]
    d = bag_diagnostics(attention, scores, tumour_fraction=tumour)
    assert d.tumour_attention_mass == pytest.approx(0.7)
    assert d.tumour_share == pytest.approx(0.5)
    assert d.critical_is_tumour == 0.0
    # A stricter threshold drops slice 1 (5% tumour).
    strict = bag_diagnostics(attention, scores, tumour_fraction=tumour, tumour_threshold=0.1)
    assert strict.tumour_attention_mass == pytest.approx(0.4)
    assert strict.tumour_share == pytest.approx(0.25)


def test_tumour_statistics_nan_without_tumour_info():
    d = bag_diagnostics([0.5, 0.5], [0.0, 1.0])
    assert math.isnan(d.tumour_attention_mass)
    assert math.isnan(d.tumour_share)
    assert math.isnan(d.critical_is_tumour)


def test_summary_tumour_lift_and_critical_rate():
    bags = [
        # share 0.5, mass 0.7, critical slice 1 is tumour
        bag_diagnostics([0.1, 0.3, 0.4, 0.2], [0.0, 2.0, 0.5, 1.0], tumour_fraction=[0, 0.2, 0.3, 0]),
        # share 0.25, mass 0.4, critical slice 3 is not tumour
        bag_diagnostics([0.4, 0.2, 0.2, 0.2], [0.0, 0.0, 0.0, 1.0], tumour_fraction=[0.9, 0, 0, 0]),
        # no segmentation: left out of the tumour means
        bag_diagnostics([0.25] * 4, [0.0, 0.0, 0.0, 1.0]),
    ]
    s = summarize(bags)
    assert s["n_bags"] == 3
    assert s["tumour_attention_mass"] == pytest.approx(0.55)
    assert s["tumour_share"] == pytest.approx(0.375)
    assert s["attention_tumour_lift"] == pytest.approx(0.55 / 0.375)
    assert s["critical_is_tumour_rate"] == pytest.approx(0.5)


def test_bag_with_unsegmented_slice_gets_nan_tumour_stats():
    batch = batch_diagnostics(
        [0.5, 0.5, 0.5, 0.5], [0.0, 1.0, 1.0, 0.0], bag_sizes=[2, 2], tumour_fraction=[0.1, 0.0, np.nan, 0.2]
    )
    assert batch["tumour_share"][0] == pytest.approx(0.5)
    assert np.isnan(batch["tumour_share"][1])
    assert np.isnan(batch["critical_is_tumour"][1])


# --------------------------------------------------------------------------- batch + summary


def _random_bags(rng, sizes, sharpness=1.0):
    logits = rng.normal(scale=sharpness, size=int(np.sum(sizes)))
    bounds = np.cumsum(sizes)[:-1]
    attention = np.concatenate([np.exp(x) / np.exp(x).sum() for x in np.split(logits, bounds)])
    scores = rng.normal(size=logits.size)
    tumour = np.clip(rng.normal(0.0, 0.2, size=logits.size), 0, 1)
    positions = rng.uniform(size=logits.size)
    return attention, scores, tumour, positions


def test_batch_matches_per_bag():
    rng = np.random.default_rng(2)
    sizes = np.array([1, 5, 3, 12, 2])
    attention, scores, tumour, positions = _random_bags(rng, sizes)
    batch = batch_diagnostics(
        attention, scores, bag_sizes=sizes, tumour_fraction=tumour, slice_positions=positions, top_k=2
    )
    bounds = np.cumsum(sizes)[:-1]
    parts = [np.split(x, bounds) for x in (attention, scores, tumour, positions)]
    for b, (a, s, t, p) in enumerate(zip(*parts)):
        single = bag_diagnostics(a, s, tumour_fraction=t, slice_positions=p, top_k=2)
        for name, value in vars(single).items():
            np.testing.assert_allclose(batch[name][b], value, rtol=1e-12, atol=1e-12, err_msg=name)


def test_equal_size_matrix_matches_flat():
    rng = np.random.default_rng(3)
    attention, scores, tumour, _ = _random_bags(rng, [8] * 6)
    flat = batch_diagnostics(attention, scores, bag_sizes=[8] * 6, tumour_fraction=tumour)
    matrix = batch_diagnostics(attention.reshape(6, 8), scores.reshape(6, 8), tumour_fraction=tumour.reshape(6, 8))
    for name in flat:
        np.testing.assert_allclose(matrix[name], flat[name], err_msg=name)


def test_summarize_accepts_batch_dict_and_list_alike():
    rng = np.random.default_rng(4)
    sizes = np.array([4, 7, 1, 9])
    attention, scores, tumour, _ = _random_bags(rng, sizes)
    batch = batch_diagnostics(attention, scores, bag_sizes=sizes, tumour_fraction=tumour)
    bounds = np.cumsum(sizes)[:-1]
    bags = [
        bag_diagnostics(a, s, tumour_fraction=t)
        for a, s, t in zip(*(np.split(x, bounds) for x in (attention, scores, tumour)))
    ]
    from_batch, from_list = summarize(batch), summarize(bags)
    assert from_batch.keys() == from_list.keys()
    for key in from_batch:
        np.testing.assert_allclose(from_batch[key], from_list[key], err_msg=key)


def test_summary_leaves_single_instance_bags_out_of_means():
    uniform = bag_diagnostics([0.25] * 4, _scores(4))
    single = bag_diagnostics([1.0], [0.0])
    s = summarize([uniform, single, single])
    assert s["n_bags"] == 3
    assert s["n_single_instance_bags"] == 2
    assert s["mean_normalized_entropy"] == pytest.approx(1.0)
    assert s["mean_max_attention"] == pytest.approx(0.25)
    assert s["mean_uniform_weight"] == pytest.approx(0.25)
    assert detect_collapse(s, CollapseThresholds()) == "uniform"


def test_summary_of_only_single_instance_bags_is_nan_without_warnings():
    with np.errstate(all="raise"):
        s = summarize([bag_diagnostics([1.0], [0.0])])
    assert math.isnan(s["mean_normalized_entropy"])
    assert math.isnan(s["attention_tumour_lift"])
    assert detect_collapse(s, CollapseThresholds()) is None


def test_summary_has_the_documented_keys():
    s = summarize([bag_diagnostics([0.5, 0.5], [0.0, 1.0])])
    assert set(s) == {
        "mean_normalized_entropy", "mean_effective_instances", "mean_max_attention", "mean_top_k_mass",
        "mean_gini", "mean_score_spread", "mean_critical_position", "mean_n_instances",
        "mean_uniform_weight", "tumour_attention_mass", "tumour_share", "attention_tumour_lift",
        "critical_is_tumour_rate", "n_bags", "n_single_instance_bags",
    }  # fmt: skip
    assert all(isinstance(v, float) for v in s.values())


# --------------------------------------------------------------------------- collapse


def _summary(entropy, max_attention, uniform_weight=1 / 32):
    return {
        "mean_normalized_entropy": entropy,
        "mean_max_attention": max_attention,
        "mean_uniform_weight": uniform_weight,
        "mean_effective_instances": 1.2,
    }


@pytest.mark.parametrize(
    ("entropy", "max_attention", "expected"),
    [
        (0.995, 0.034, "uniform"),
        (0.995, 0.10, None),  # entropy high but one slice gets 3x its share: attention works
        (0.90, 0.034, None),
        (0.02, 0.99, "one-hot"),
        (0.30, 0.80, None),
        (0.60, 0.25, None),
    ],
)
def test_detect_collapse(entropy, max_attention, expected):
    assert detect_collapse(_summary(entropy, max_attention), CollapseThresholds()) == expected


def test_detect_collapse_on_real_diagnostics():
    rng = np.random.default_rng(6)
    sizes = np.full(50, 32)
    for sharpness, expected in ((0.01, "uniform"), (1.0, None), (200.0, "one-hot")):
        attention, scores, _, _ = _random_bags(rng, sizes, sharpness=sharpness)
        s = summarize(batch_diagnostics(attention, scores, bag_sizes=sizes))
        assert detect_collapse(s, CollapseThresholds()) == expected, sharpness


def test_collapse_warning_names_fold_epoch_and_numbers():
    line = collapse_warning("uniform", 3, 12, _summary(0.995, 0.034, 0.03125))
    assert line == (
        "WARNING: fold 3 epoch 12: uniform attention collapse "
        "(mean normalised entropy 0.995, max weight 0.034 ~ 1/N 0.031)"
    )
    one_hot = collapse_warning("one-hot", 0, 7, _summary(0.02, 0.99))
    assert one_hot.startswith("WARNING: fold 0 epoch 7: one-hot attention collapse (")
    assert "\n" not in one_hot
    with pytest.raises(ValueError, match="collapse kind"):
        collapse_warning("sideways", 0, 1, _summary(0.5, 0.5))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"uniform_entropy": 0.0}, r"uniform_entropy must lie in \(0, 1\], got 0.0"),
        ({"uniform_entropy": 1.2}, r"uniform_entropy must lie in \(0, 1\], got 1.2"),
        ({"uniform_max_ratio": 0.9}, "uniform_max_ratio must be >= 1, got 0.9"),
        ({"onehot_max_attention": 1.5}, r"onehot_max_attention must lie in \(0, 1\], got 1.5"),
    ],
)
def test_thresholds_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CollapseThresholds(**kwargs)


# --------------------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (([0.5, 0.6], [0, 0]), {}, "sum to 1"),
        (([1.2, -0.2], [0, 0]), {}, "non-negative"),
        (([0.5, np.nan], [0, 0]), {}, "NaN"),
        (([0.5, 0.5], [0, 0, 0]), {}, "shape"),
        (([0.5, 0.5], [0, np.inf]), {}, "instance_scores"),
        (([], []), {}, "at least one instance"),
        (([[0.5, 0.5]], [[0, 0]]), {}, "1-D"),
        (([0.5, 0.5], [0, 0]), {"tumour_fraction": [0.1]}, "tumour_fraction"),
        (([0.5, 0.5], [0, 0]), {"tumour_fraction": [0.1, 1.5]}, r"\[0, 1\]"),
        (([0.5, 0.5], [0, 0]), {"slice_positions": [0.1, np.nan]}, "slice_positions"),
        (([0.5, 0.5], [0, 0]), {"top_k": 0}, "top_k"),
        (([0.5, 0.5], [0, 0]), {"tumour_threshold": 1.0}, "tumour_threshold"),
    ],
)
def test_invalid_bag_inputs_raise(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        bag_diagnostics(*args, **kwargs)


@pytest.mark.parametrize(
    ("bag_sizes", "message"),
    [([2, 1], "sum to 3"), ([4, 0], "at least one instance"), ([2.0, 2.0], "integers"), ([[4]], "1-D")],
)
def test_invalid_bag_sizes_raise(bag_sizes, message):
    with pytest.raises(ValueError, match=message):
        batch_diagnostics([0.5, 0.5, 0.5, 0.5], [0, 0, 0, 0], bag_sizes=bag_sizes)


def test_sum_error_names_the_bag():
    with pytest.raises(ValueError, match="bag 1 of 2 instances"):
        batch_diagnostics([0.5, 0.5, 0.5, 0.4], [0, 0, 0, 0], bag_sizes=[2, 2])


def test_bag_diagnostics_is_frozen():
    d = bag_diagnostics([0.5, 0.5], [0.0, 1.0])
    assert isinstance(d, BagDiagnostics)
    with pytest.raises(AttributeError, match="cannot assign to field 'entropy'"):
        d.entropy = 0.0
