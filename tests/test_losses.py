"""Tests of the MIL loss and balanced class weights against hand computations."""

import math

import pytest
import torch
from torch.nn import functional as F

from gliomil.training.losses import class_weights_from_counts, mil_loss


def bce(logit, target):
    """Binary cross-entropy on a logit, written out: -[t log s(z) + (1 - t) log(1 - s(z))]."""
    p = 1.0 / (1.0 + math.exp(-logit))
    return -(target * math.log(p) + (1.0 - target) * math.log(1.0 - p))


BAG = [1.5, -0.3, 0.2, -2.0]
INST = [0.4, 0.8, -1.1, -0.5]
LABELS = [1, 0, 1, 0]


def tensors():
    return torch.tensor(BAG), torch.tensor(INST), torch.tensor(LABELS)


def hand_loss(smoothing, weights):
    num = den = 0.0
    for z_bag, z_inst, y in zip(BAG, INST, LABELS):
        t = y * (1 - smoothing) + 0.5 * smoothing
        w = 1.0 if weights is None else weights[y]
        num += w * (0.5 * bce(z_bag, t) + 0.5 * bce(z_inst, t))
        den += w
    return num / den


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.2])
@pytest.mark.parametrize("weights", [None, (1.9, 0.68), (1.0, 1.0), (3.0, 0.5)])
def test_loss_matches_hand_computation(smoothing, weights):
    loss = mil_loss(*tensors(), label_smoothing=smoothing, class_weights=weights)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(hand_loss(smoothing, weights), rel=1e-6)


def test_smoothed_targets_are_towards_one_half():
    # With s = 0.2 the targets are 0.9 and 0.1: check one sample of each label.
    z = torch.tensor([0.7])
    loss_pos = mil_loss(z, z, torch.tensor([1]), label_smoothing=0.2)
    loss_neg = mil_loss(z, z, torch.tensor([0]), label_smoothing=0.2)
    assert loss_pos.item() == pytest.approx(bce(0.7, 0.9), rel=1e-6)
    assert loss_neg.item() == pytest.approx(bce(0.7, 0.1), rel=1e-6)


def test_no_smoothing_equals_plain_bce():
    bag, inst, y = tensors()
    expected = 0.5 * F.binary_cross_entropy_with_logits(bag, y.float()) + 0.5 * F.binary_cross_entropy_with_logits(
        inst, y.float()
    )
    torch.testing.assert_close(mil_loss(bag, inst, y), expected)
    torch.testing.assert_close(mil_loss(bag, inst, y, class_weights=(2.0, 2.0)), expected)


def test_weights_use_the_true_label_and_cancel_in_single_class_batch():
    bag, inst, _ = tensors()
    y = torch.ones(4, dtype=torch.long)
    torch.testing.assert_close(mil_loss(bag, inst, y, 0.2, (5.0, 0.3)), mil_loss(bag, inst, y, 0.2))


def test_loss_gradient_matches_the_hand_derivative_and_dtypes():
    # d bce(z, t) / dz = sigmoid(z) - t, so with weights w_i and W = sum w_i:
    # dL/dz_i = 0.5 * w_i * (sigmoid(z_i) - t_i) / W for the bag logit and the instance logit alike.
    bag = torch.tensor([1.5, -0.25], requires_grad=True)
    inst = torch.tensor([0.5, -1.25], dtype=torch.bfloat16, requires_grad=True)  # exact in bfloat16
    loss = mil_loss(bag, inst, torch.tensor([1.0, 0.0]), 0.2, torch.tensor([1.9, 0.68]))
    assert loss.dtype == torch.float32
    loss.backward()
    targets, weights = (0.9, 0.1), (0.68, 1.9)  # smoothed targets; (w_lgg, w_hgg) picked by label 1, 0
    total = sum(weights)

    def derivative(z, t, w):
        return 0.5 * w * (1.0 / (1.0 + math.exp(-z)) - t) / total

    expected_bag = [derivative(z, t, w) for z, t, w in zip([1.5, -0.25], targets, weights)]
    expected_inst = [derivative(z, t, w) for z, t, w in zip([0.5, -1.25], targets, weights)]
    assert bag.grad.dtype == torch.float32 and inst.grad.dtype == torch.bfloat16
    assert bag.grad.tolist() == pytest.approx(expected_bag, rel=1e-6)
    assert inst.grad.float().tolist() == pytest.approx(expected_inst, rel=2**-7)  # bfloat16: 8 bits of mantissa


def test_loss_rejects_bad_input():
    bag, inst, y = tensors()
    with pytest.raises(ValueError, match=r"labels must be 0 \(LGG\) or 1 \(HGG\), got \[1, 0, 2, 0\]"):
        mil_loss(bag, inst, torch.tensor([1, 0, 2, 0]))
    with pytest.raises(ValueError, match=r"must share one shape \(B,\), got \(4,\), \(3,\), \(4,\)"):
        mil_loss(bag, inst[:3], y)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\), got 1.0"):
        mil_loss(bag, inst, y, label_smoothing=1.0)
    with pytest.raises(ValueError, match="class_weights must be two finite non-negative numbers"):
        mil_loss(bag, inst, y, class_weights=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="class_weights must be two finite non-negative numbers"):
        mil_loss(bag, inst, y, class_weights=(-1.0, 2.0))


def test_class_weights_from_counts():
    w_lgg, w_hgg = class_weights_from_counts(75, 210)
    assert w_lgg == pytest.approx(285 / 150) and w_hgg == pytest.approx(285 / 420)
    # Balanced: each class carries half of the total weight.
    assert 75 * w_lgg == pytest.approx(210 * w_hgg) == pytest.approx(285 / 2)
    assert class_weights_from_counts(10, 10) == (1.0, 1.0)
    for bad in ((0, 5), (5, 0), (-1, 5)):
        with pytest.raises(ValueError, match=f"class counts must be positive .* n_lgg={bad[0]}, n_hgg={bad[1]}"):
            class_weights_from_counts(*bad)
