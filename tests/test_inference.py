"""Scoring with a trained model: precision choice, checkpoints, whole-bag scores, patient predictions."""

import numpy as np
import pytest
import torch

from gliomil.data import BagSet
from gliomil.inference import (
    BagScores,
    autocast_dtype,
    load_checkpoint,
    patient_predictions,
    precision_name,
    save_checkpoint,
    score_bags,
)
from gliomil.model import ModelConfig

TINY_MODEL = ModelConfig(width=4, depth=2, prediction="both_streams")


def small_bags(sizes, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, 4, 16, 16)).astype(np.float16) for n in sizes]


def test_autocast_choice():
    assert autocast_dtype(torch.device("cpu"), amp=False) is None
    assert autocast_dtype(torch.device("cuda"), amp=True) == torch.float16
    assert autocast_dtype(torch.device("cpu"), amp=True) in (None, torch.bfloat16)
    assert precision_name(None) == "float32" and precision_name(torch.float16) == "float16 autocast"


def test_probability_rules_read_one_or_both_streams():
    logits = dict(
        bag_logits=np.array([0.0, np.log(3.0)]),
        max_instance_logits=np.array([np.log(3.0), -np.log(3.0)]),
        instance_logits=np.zeros(5),
        attention=np.full(5, 0.2),
        critical=np.array([0, 1]),
        bag_sizes=np.array([2, 3]),
    )
    bag_only = BagScores(**logits, prediction="bag_stream")
    both = BagScores(**logits, prediction="both_streams")
    np.testing.assert_allclose(bag_only.probabilities, [0.5, 0.75])
    np.testing.assert_allclose(both.probabilities, [(0.5 + 0.75) / 2, (0.75 + 0.25) / 2])
    assert BagScores.concat([both, both]).prediction == "both_streams"
    assert [len(a) for a in both.attention_per_bag()] == [2, 3]


def test_a_checkpoint_round_trip_gives_the_same_scores(tmp_path):
    torch.manual_seed(0)
    model = TINY_MODEL.build().eval()
    bags = small_bags([5, 1, 9])
    before = score_bags(model, bags, torch.device("cpu"), chunk=4)
    save_checkpoint(model, TINY_MODEL, tmp_path / "fold_0" / "best.pt", fold=0, epoch=3)
    loaded, record = load_checkpoint(tmp_path / "fold_0" / "best.pt")
    assert record["fold"] == 0 and record["epoch"] == 3 and record["model_config"]["prediction"] == "both_streams"
    assert not loaded.training and loaded.prediction == "both_streams"
    after = score_bags(loaded, bags, torch.device("cpu"), chunk=2)
    np.testing.assert_array_equal(after.bag_sizes, [5, 1, 9])
    np.testing.assert_allclose(after.probabilities, before.probabilities, rtol=1e-6)
    np.testing.assert_array_equal(after.critical, before.critical)
    for attention in after.attention_per_bag():
        assert attention.sum() == pytest.approx(1.0, abs=1e-5)


def test_patient_predictions_one_row_per_patient():
    scores = BagScores(
        bag_logits=np.array([2.0, -2.0, 0.1]),
        max_instance_logits=np.zeros(3),
        instance_logits=np.zeros(7),
        attention=np.array([0.1, 0.6, 0.3, 1.0, 0.2, 0.2, 0.6]),
        critical=np.array([1, 0, 2]),
        bag_sizes=np.array([3, 1, 3]),
    )
    bag_set = BagSet(
        ["H1", "L1", "H2"],
        np.array([1, 0, 1]),
        small_bags([3, 1, 3]),
        [np.zeros(3), np.zeros(1), np.zeros(3)],
        [np.zeros(3), np.zeros(1), np.zeros(3)],
    )
    table = patient_predictions(bag_set, scores, threshold=0.6, top=2)
    assert table["subject_id"].tolist() == ["H1", "L1", "H2"]
    assert table["grade"].tolist() == ["HGG", "LGG", "HGG"]
    assert table["predicted_at_0.5"].tolist() == [1, 0, 1]  # sigmoid(0.1) = 0.525
    assert table["predicted_at_youden"].tolist() == [1, 0, 0]
    assert table["critical_slice"].tolist() == [1, 0, 2]
    assert table["most_attended_slices"].tolist() == ["1 2", "0", "2 0"]  # ties: the earlier slice first


def test_set_threads_pins_torch_and_zero_keeps_the_count():
    import torch

    from gliomil.inference import set_threads

    before = torch.get_num_threads()
    try:
        assert set_threads(2) == 2 == torch.get_num_threads()
        assert set_threads(0) == 2
    finally:
        torch.set_num_threads(before)
