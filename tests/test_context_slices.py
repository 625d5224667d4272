"""2.5D input (``train.model.context_slices``): each slice with its neighbours as channels, in training's drawn bags
and in whole-bag scoring alike."""

import copy
import dataclasses

import numpy as np
import pytest
import torch
from test_train import TINY_MODEL, tiny_config, toy_bags

import gliomil.params as P
from gliomil.data.bags import draw_bags, neighbour_indices, with_neighbours
from gliomil.errors import ParamsError
from gliomil.evaluation.scoring import score_bags
from gliomil.model.checkpoint import load_checkpoint
from gliomil.model.mil import ModelConfig
from gliomil.training import loop


def test_neighbours_run_from_below_to_above_and_repeat_the_end_slices():
    assert neighbour_indices(np.array([0, 2, 4]), 5, 1).tolist() == [[0, 0, 1], [1, 2, 3], [3, 4, 4]]
    assert neighbour_indices(np.array([1]), 3, 2).tolist() == [[0, 0, 1, 2, 2]]
    assert neighbour_indices(np.array([0, 2]), 5, 0).tolist() == [[0], [2]]
    with pytest.raises(ValueError, match="context must be >= 0"):
        neighbour_indices(np.array([0]), 5, -1)


def test_drawn_bags_stack_the_neighbours_and_keep_every_draw():
    bag_set = toy_bags(6, 6, seed=2)
    chosen = np.array([0, 4, 7, 11])
    for augment, geometry in ((False, False), (True, False), (True, True)):
        plain = draw_bags(bag_set, chosen, 5, np.random.default_rng(3), augment, geometry)
        stacked = draw_bags(bag_set, chosen, 5, np.random.default_rng(3), augment, geometry, context=1)
        assert stacked.slices.shape == (len(plain.slices), 12, 16, 16)
        assert all(np.array_equal(a, b) for a, b in zip(plain.picks, stacked.picks))
        # the centre slice is what a bag without context draws, augmentation included
        assert np.array_equal(stacked.slices[:, 4:8], plain.slices)
    # unaugmented, the neighbours are the stored slices: below first, above last
    drawn = draw_bags(bag_set, np.array([4]), 5, np.random.default_rng(9), False, context=1)
    bag, picks = bag_set.bags[4].astype(np.float32), drawn.picks[0]
    assert np.array_equal(drawn.slices[:, :4], bag[np.clip(picks - 1, 0, len(bag) - 1)])
    assert np.array_equal(drawn.slices[:, 8:], bag[np.clip(picks + 1, 0, len(bag) - 1)])


def test_a_whole_bag_is_scored_with_the_neighbours_stacked():
    bag = np.random.default_rng(0).normal(size=(7, 4, 8, 8)).astype(np.float32)
    stacked = with_neighbours(bag, 1)
    assert stacked.shape == (7, 12, 8, 8) and with_neighbours(bag, 0) is bag
    assert np.array_equal(stacked[3], np.concatenate([bag[2], bag[3], bag[4]]))
    assert np.array_equal(stacked[0], np.concatenate([bag[0], bag[0], bag[1]]))
    torch.manual_seed(0)
    model = ModelConfig(width=4, depth=2, context_slices=1).build().eval()
    assert model.encoder.in_channels == 12
    with torch.no_grad():
        expected = model(torch.from_numpy(stacked), [7])
    scored = score_bags(model, [bag], torch.device("cpu"), chunk=3)
    assert np.allclose(scored.bag_logits, expected.bag_logits.numpy(), atol=1e-6)
    assert np.allclose(scored.instance_logits, expected.instance_logits.numpy(), atol=1e-6)


def test_a_model_trained_with_context_predicts_from_the_stored_slices(tmp_path):
    train_set, val_set = toy_bags(12, 8, seed=0), toy_bags(4, 4, seed=1)
    config = tiny_config(epochs=2, model=dataclasses.replace(TINY_MODEL, context_slices=1))
    loop.train_fold(config, 0, train_set, val_set, tmp_path / "best.pt", log=lambda _: None)
    model, checkpoint = load_checkpoint(tmp_path / "best.pt")
    assert checkpoint["model_config"]["context_slices"] == 1 and model.encoder.in_channels == 12
    scores = score_bags(model, val_set.bags[:2], torch.device("cpu"), chunk=4)  # the stored (S, 4, H, W) slices
    assert scores.bag_logits.shape == (2,)


def test_params_take_up_to_four_neighbours_a_side():
    params = P.load_params("params.yaml")
    edited = copy.deepcopy(params)
    edited["train"]["model"]["context_slices"] = 4
    P.check_params(edited)
    edited["train"]["model"]["context_slices"] = 5
    with pytest.raises(ParamsError, match="context_slices"):
        P.check_params(edited)
