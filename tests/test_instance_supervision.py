"""train.instance_supervision: a training-only loss on the instance stream, from the segmentation's tumour slices."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from test_train import tiny_config, toy_bags

from gliomil.errors import GliomilError
from gliomil.model.checkpoint import load_checkpoint
from gliomil.training import loop
from gliomil.training.losses import instance_supervision_loss, tumour_targets


@pytest.fixture(scope="module")
def toy_data():
    return toy_bags(16, 12, seed=0), toy_bags(6, 6, seed=1)


def test_the_loss_is_minus_the_log_softmax_share_of_the_tumour_slices_by_hand():
    logits = torch.tensor([0.0, 1.0, 2.0, 3.0])
    tumour = torch.tensor([0.0, 0.0, 1.0, 1.0])
    by_hand = -math.log((math.e**2 + math.e**3) / (1 + math.e + math.e**2 + math.e**3))  # 0.12693...
    assert instance_supervision_loss(logits, [4], tumour).item() == pytest.approx(by_hand, abs=1e-6)
    # two bags: the first (slices 0, 1) holds no tumour and adds 0; the mean runs over both bags
    second = -math.log((math.e**2 + math.e**3) / (math.e**2 + math.e**3))  # every slice of bag 2 is tumour: 0
    assert instance_supervision_loss(logits, [2, 2], tumour).item() == pytest.approx((0 + second) / 2, abs=1e-7)
    one_tumour = torch.tensor([0.0, 1.0, 0.0, 0.0])
    expected = -math.log(math.e / (1 + math.e)) / 2  # bag 1: slice 1 of (0, 1); bag 2: none
    assert instance_supervision_loss(logits, [2, 2], one_tumour).item() == pytest.approx(expected, abs=1e-6)


def test_the_loss_is_zero_without_tumour_slices_and_positive_with_them():
    logits = torch.randn(10, generator=torch.Generator().manual_seed(0))
    assert instance_supervision_loss(logits, [6, 4], torch.zeros(10)).item() == 0.0
    some = torch.zeros(10)
    some[[1, 7]] = 1
    assert instance_supervision_loss(logits, [6, 4], some).item() > 0.0


def test_the_loss_ignores_the_level_of_a_bags_logits_and_gives_it_no_gradient():
    """The level of the instance logits carries the grade; the supervision only orders slices within a bag."""
    logits = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0], requires_grad=True)
    tumour = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0])
    loss = instance_supervision_loss(logits, [3, 2], tumour)
    shifted = instance_supervision_loss(logits.detach() + torch.tensor([4.0, 4.0, 4.0, -7.0, -7.0]), [3, 2], tumour)
    assert shifted.item() == pytest.approx(loss.item(), abs=1e-6)
    loss.backward()
    assert logits.grad[:3].sum().item() == pytest.approx(0.0, abs=1e-7)
    assert logits.grad[3:].sum().item() == pytest.approx(0.0, abs=1e-7)
    assert logits.grad[0] < 0 < logits.grad[2]  # raise the tumour slice, lower the others


def test_tumour_targets_flag_slices_with_tumour_and_refuse_unknown_fractions():
    assert tumour_targets([0.0, 0.2, 0.0, 1e-6]).tolist() == [0.0, 1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="no segmentation"):
        tumour_targets([0.0, np.nan])


def test_weight_zero_never_computes_the_loss(toy_data, tmp_path, monkeypatch):
    """Weight 0 takes the training path of a model without instance supervision: same checkpoint bits as a run in
    which the loss cannot be called at all."""
    train_set, val_set = toy_data
    config = tiny_config(epochs=2)
    assert config.instance_supervision == 0.0
    first = loop.train_fold(config, 0, train_set, val_set, tmp_path / "a" / "best.pt", log=lambda _: None)

    def refuse(*args, **kwargs):
        raise AssertionError("instance_supervision_loss called with weight 0")

    monkeypatch.setattr(loop, "instance_supervision_loss", refuse)
    second = loop.train_fold(config, 0, train_set, val_set, tmp_path / "b" / "best.pt", log=lambda _: None)
    assert (tmp_path / "a/best.pt").read_bytes() == (tmp_path / "b/best.pt").read_bytes()
    assert first.history == second.history


def test_a_positive_weight_changes_training_and_saves_only_the_model(toy_data, tmp_path):
    train_set, val_set = toy_data
    plain = loop.train_fold(
        tiny_config(epochs=2), 0, train_set, val_set, tmp_path / "a" / "best.pt", log=lambda _: None
    )
    supervised = loop.train_fold(
        tiny_config(epochs=2, instance_supervision=1.0),
        0,
        train_set,
        val_set,
        tmp_path / "b" / "best.pt",
        log=lambda _: None,
    )
    assert supervised.history != plain.history
    _, checkpoint = load_checkpoint(tmp_path / "b" / "best.pt")
    # the checkpoint holds only the model: the same keys as without supervision, nothing of the segmentation
    assert set(checkpoint["model"]) == set(load_checkpoint(tmp_path / "a" / "best.pt")[1]["model"])
    assert checkpoint["model_config"] == load_checkpoint(tmp_path / "a" / "best.pt")[1]["model_config"]


def test_a_positive_weight_without_segmentations_fails_before_training_naming_the_param_and_subject(toy_data, tmp_path):
    train_set, val_set = toy_data
    fractions = list(train_set.tumour_fraction)
    fractions[3] = np.full(len(fractions[3]), np.nan)
    no_seg = dataclasses.replace(train_set, tumour_fraction=fractions)
    logs = []
    with pytest.raises(GliomilError, match=rf"train\.instance_supervision > 0 .*{train_set.subject_ids[3]} has none"):
        loop.train_fold(
            tiny_config(instance_supervision=0.5), 0, no_seg, val_set, tmp_path / "best.pt", log=logs.append
        )
    assert not (tmp_path / "best.pt").exists()
    assert not any("epoch" in line for line in logs)
    # without supervision the same data trains
    loop.train_fold(tiny_config(epochs=1), 0, no_seg, val_set, tmp_path / "ok.pt", log=lambda _: None)
