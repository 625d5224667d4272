"""The model options judged by `gliomil repeats` in docs/models.md: the encoder's pooling of a slice
(``train.model.slice_pooling``), instance supervision with the grade as its target (``train.instance_target``) and
the geometric augmentation (``train.augment_geometry``)."""

import copy
import math

import numpy as np
import pytest
import torch
from test_instance_supervision import toy_data  # noqa: F401  (a fixture)
from test_train import tiny_config

import gliomil.params as P
from gliomil.data.bags import augment_bag
from gliomil.errors import ParamsError
from gliomil.model.dsmil import SliceEncoder
from gliomil.model.mil import ModelConfig
from gliomil.training import loop
from gliomil.training.losses import instance_grade_loss


# -- slice pooling ---------------------------------------------------------------------------------------------------
def test_each_slice_pooling_reduces_the_last_feature_map_as_named():
    torch.manual_seed(0)
    encoders = {pooling: SliceEncoder(4, width=4, depth=2, pooling=pooling).eval() for pooling in ("mean", "max")}
    encoders["mean_max"] = SliceEncoder(4, width=4, depth=2, pooling="mean_max").eval()
    state = encoders["mean"].state_dict()
    for encoder in encoders.values():  # one set of weights: the pooling is the only difference
        encoder.load_state_dict(state)
    x = torch.randn(3, 4, 12, 12)
    maps = encoders["mean"].features(x)  # (3, 8, 3, 3)
    assert torch.allclose(encoders["mean"](x), maps.mean(dim=(2, 3)))
    assert torch.allclose(encoders["max"](x), maps.flatten(2).max(dim=2).values)
    both = encoders["mean_max"](x)
    assert encoders["mean_max"].out_features == 16 and both.shape == (3, 16)
    assert torch.allclose(both, torch.cat([maps.mean(dim=(2, 3)), maps.flatten(2).max(dim=2).values], dim=1))
    with pytest.raises(ValueError, match="pooling must be one of"):
        SliceEncoder(4, pooling="median")


def test_max_pooling_keeps_a_small_bright_spot_that_the_mean_dilutes():
    # One channel, no learning: a single bright pixel's response scales with 1 / area under the mean only.
    small, large = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 32, 32)
    small[..., 3, 3] = large[..., 3, 3] = 1.0
    for pooling, same in (("max", True), ("mean", False)):
        encoder = SliceEncoder(1, width=1, depth=1, pooling=pooling).eval()
        with torch.no_grad():
            encoder.features[0].weight.fill_(0.0)
            encoder.features[0].weight[0, 0, 1, 1] = 1.0  # identity kernel
        assert torch.isclose(encoder(small), encoder(large)).item() is same


@pytest.mark.parametrize("pooling", ["max", "mean_max"])
def test_every_aggregator_builds_on_each_slice_pooling(pooling):
    for aggregator in ("dsmil", "mean", "max", "abmil"):
        prediction = "both_streams" if aggregator == "dsmil" else "bag_stream"
        model = ModelConfig(width=4, depth=2, aggregator=aggregator, prediction=prediction, slice_pooling=pooling)
        out = model.build()(torch.randn(5, 4, 8, 8), [2, 3])
        assert out.bag_logits.shape == (2,)


# -- instance supervision with the grade as its target --------------------------------------------------------------
def bce(logit: float, target: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_the_grade_loss_matches_a_hand_computation():
    logits = torch.tensor([0.5, -1.0, 2.0, 0.0, 1.0])
    tumour = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])
    labels = torch.tensor([1, 0])  # bag 1 (HGG): slices 0-2; bag 2 (LGG): slices 3-4
    bag_1 = (bce(0.5, 1) + bce(-1.0, 0) + bce(2.0, 1)) / 3  # its tumour slices are HGG, the other slice is not
    bag_2 = (bce(0.0, 0) + bce(1.0, 0)) / 2  # an LGG bag's tumour slice is not HGG either
    assert instance_grade_loss(logits, [3, 2], tumour, labels).item() == pytest.approx((bag_1 + bag_2) / 2, abs=1e-6)


def test_the_grade_loss_is_low_only_when_hgg_tumour_slices_score_high():
    tumour = torch.tensor([1.0, 0.0, 1.0, 0.0])
    labels = torch.tensor([1, 0])
    right = torch.tensor([6.0, -6.0, -6.0, -6.0])  # only the HGG bag's tumour slice scores high
    wrong = torch.tensor([-6.0, -6.0, 6.0, -6.0])  # the LGG bag's tumour slice scores high
    assert instance_grade_loss(right, [2, 2], tumour, labels).item() < 0.01
    assert instance_grade_loss(wrong, [2, 2], tumour, labels).item() > 3.0


def test_the_grade_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="must describe the same slices"):
        instance_grade_loss(torch.zeros(4), [2, 3], torch.zeros(4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="one label per bag"):
        instance_grade_loss(torch.zeros(4), [2, 2], torch.zeros(4), torch.tensor([0, 1, 1]))


def test_the_grade_target_trains_otherwise_than_the_tumour_target_and_saves_only_the_model(toy_data, tmp_path):  # noqa: F811
    train_set, val_set = toy_data
    runs = {}
    for target in ("tumour", "grade"):
        config = tiny_config(epochs=2, instance_supervision=1.0, instance_target=target)
        runs[target] = loop.train_fold(config, 0, train_set, val_set, tmp_path / target / "best.pt", log=lambda _: None)
    assert runs["grade"].history != runs["tumour"].history
    keys = [set(torch.load(tmp_path / t / "best.pt", weights_only=False)["model"]) for t in ("tumour", "grade")]
    assert keys[0] == keys[1]


def test_params_refuse_the_grade_target_for_an_aggregator_without_instance_scores():
    params = P.load_params("params.yaml")
    P.check_params(params)
    edited = copy.deepcopy(params)
    edited["train"].update(instance_supervision=0.5, instance_target="grade")
    edited["train"]["model"].update(aggregator="abmil", prediction="bag_stream")
    with pytest.raises(ParamsError, match="instance_target grade supervises instance scores") as info:
        P.check_params(edited)
    assert "\n" not in str(info.value)
    edited["train"]["instance_supervision"] = 0.0  # off: the target does not matter
    P.check_params(edited)
    edited["train"]["model"]["slice_pooling"] = "median"
    with pytest.raises(ParamsError, match="train.model.slice_pooling must be one of mean, max, mean_max"):
        P.check_params(edited)


# -- geometric augmentation ------------------------------------------------------------------------------------------
def test_geometric_augmentation_applies_one_of_the_eight_symmetries_of_the_square_to_the_whole_bag():
    rng = np.random.default_rng(0)
    bag = rng.normal(size=(3, 4, 6, 6)).astype(np.float32)
    symmetries = set()
    for seed in range(40):
        out = augment_bag(bag, np.random.default_rng(seed), gain_sigma=0.0, geometry=True)
        matches = [
            (k, flip_lr, flip_ap)
            for k in range(4)
            for flip_lr in (False, True)
            for flip_ap in (False, True)
            if np.array_equal(
                out,
                np.rot90(bag[..., ::-1, :] if flip_lr else bag, k, axes=(-2, -1))[..., ::-1]
                if flip_ap
                else np.rot90(bag[..., ::-1, :] if flip_lr else bag, k, axes=(-2, -1)),
            )
        ]
        assert matches, f"seed {seed}: not a symmetry of the square"
        symmetries.add(out.tobytes())
    assert len(symmetries) == 8  # all eight are drawn


def test_without_geometry_the_draws_are_those_of_before():
    bag = np.random.default_rng(1).normal(size=(2, 4, 6, 6)).astype(np.float32)
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    assert np.array_equal(augment_bag(bag, a), augment_bag(bag, b, geometry=False))
    assert a.bit_generator.state == b.bit_generator.state
    with pytest.raises(ValueError, match="needs square slices"):
        augment_bag(np.zeros((1, 4, 6, 8), np.float32), np.random.default_rng(0), geometry=True)
