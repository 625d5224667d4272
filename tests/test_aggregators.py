"""train.model.aggregator: DSMIL, mean, max and gated attention (ABMIL) on the same encoder."""

import math

import numpy as np
import pytest
import torch
from test_train import tiny_config, toy_bags

from gliomil import params as P
from gliomil.errors import ParamsError
from gliomil.evaluation.audit import checklist, item_verdict, mil_history
from gliomil.evaluation.diagnostics import LOGGED_KEYS, CollapseThresholds, applicable_keys, available_summary
from gliomil.evaluation.scoring import patient_predictions, score_bags
from gliomil.model.checkpoint import load_checkpoint
from gliomil.model.mil import MILModel, ModelConfig
from gliomil.model.pooling import GatedAttention, MaxPooling, MeanPooling
from gliomil.training import loop
from gliomil.training.losses import mil_loss
from gliomil.vocabulary import AGGREGATORS, HAS_ATTENTION, HAS_INSTANCE_SCORES

SIZES = [3, 1, 5]  # ragged bags, one of a single slice


def slices(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 4, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("aggregator", AGGREGATORS)
def test_every_aggregator_runs_forward_and_backward_on_ragged_bags(aggregator):
    torch.manual_seed(0)
    model = MILModel(width=4, depth=2, aggregator=aggregator)
    out = model(slices(sum(SIZES)), SIZES)
    assert out.bag_logits.shape == (3,)
    assert (out.attention is not None) == HAS_ATTENTION[aggregator]
    assert (out.instance_logits is not None) == HAS_INSTANCE_SCORES[aggregator]
    if out.attention is not None:
        sums = [part.sum().item() for part in torch.split(out.attention, SIZES)]
        assert sums == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)
    second = out.max_instance_logits
    assert (second is not None) == (aggregator == "dsmil")
    loss = mil_loss(out.bag_logits, second, torch.tensor([1, 0, 1]))
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    assert any(p.grad.abs().sum() > 0 for p in model.encoder.parameters())


def test_a_bag_alone_scores_as_in_a_batch_for_every_aggregator():
    for aggregator in AGGREGATORS:
        torch.manual_seed(0)
        model = MILModel(width=4, depth=2, aggregator=aggregator).eval()
        batch = slices(sum(SIZES))
        together = model(batch, SIZES).bag_logits
        alone = torch.stack([model(part, [len(part)]).bag_logits[0] for part in torch.split(batch, SIZES)])
        torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_gated_attention_by_hand():
    """Two instances with K = 2 features, L = 1, weights set by hand (Ilse et al. 2018, eq. 9)."""
    gated = GatedAttention(in_features=2, hidden=1)
    with torch.no_grad():
        gated.attention_v[0].weight.copy_(torch.tensor([[1.0, 0.0]]))
        gated.attention_v[0].bias.zero_()
        gated.attention_u[0].weight.copy_(torch.tensor([[0.0, 1.0]]))
        gated.attention_u[0].bias.zero_()
        gated.attention_w.weight.fill_(2.0)
        gated.attention_w.bias.fill_(0.3)
        gated.classifier.weight.copy_(torch.tensor([[1.0, -1.0]]))
        gated.classifier.bias.fill_(0.5)
    h = torch.tensor([[1.0, 2.0], [-1.0, 0.0]])
    scores = [2 * math.tanh(1.0) / (1 + math.exp(-2.0)) + 0.3, 2 * math.tanh(-1.0) * 0.5 + 0.3]
    a0 = math.exp(scores[0]) / (math.exp(scores[0]) + math.exp(scores[1]))
    z = [a0 * 1.0 + (1 - a0) * -1.0, a0 * 2.0]
    out = gated(h)
    assert out.attention[:, 0].tolist() == pytest.approx([a0, 1 - a0], abs=1e-6)
    assert out.bag_logits.item() == pytest.approx(z[0] - z[1] + 0.5, abs=1e-6)
    assert out.instance_logits is None and out.critical is None and out.max_instance_logits is None


def test_mean_and_max_pooling_by_hand():
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [1.0, -1.0]])
    scores = [0.0, 1.0, 5.0, -2.0]  # 1*x + 2*y - 1 per instance
    mean, biggest = MeanPooling(2), MaxPooling(2)
    for pooling in (mean, biggest):
        with torch.no_grad():
            pooling.classifier.weight.copy_(torch.tensor([[1.0, 2.0]]))
            pooling.classifier.bias.fill_(-1.0)
    out = mean(h, [3, 1])
    assert out.instance_logits[:, 0].tolist() == scores
    assert out.bag_logits[:, 0].tolist() == pytest.approx([2.0, -2.0])
    assert out.attention is None and out.critical is None
    out = biggest(h, [3, 1])
    assert out.bag_logits[:, 0].tolist() == [5.0, -2.0]
    assert out.critical[:, 0].tolist() == [2, 0]


def test_both_streams_needs_dsmil_in_the_model_and_in_params():
    with pytest.raises(ValueError, match="both_streams needs DSMIL's second stream; aggregator mean has"):
        MILModel(aggregator="mean", prediction="both_streams")
    params = P.load_params()
    params["train"]["model"]["aggregator"] = "abmil"
    with pytest.raises(ParamsError, match="set train.model.prediction: bag_stream$"):
        P.check_params(params)
    params["train"]["model"]["prediction"] = "bag_stream"
    P.check_params(params)
    params["train"]["model"]["aggregator"] = "attention"
    with pytest.raises(ParamsError, match="train.model.aggregator"):
        P.check_params(params)


def test_diagnostics_an_aggregator_does_not_have_are_omitted():
    sizes = np.array([3, 2])
    attention = np.array([0.2, 0.5, 0.3, 0.6, 0.4])
    scores = np.array([0.1, 2.0, -1.0, 0.3, 0.0])
    tumour = np.array([0.0, 0.3, 0.0, 0.2, 0.0])
    full = available_summary(attention, scores, sizes, tumour, None, 1)
    no_attention = available_summary(None, scores, sizes, tumour, None, 1)
    no_scores = available_summary(attention, None, sizes, tumour, None, 1)
    assert "attention_tumour_lift" in full and "mean_score_spread" in full
    assert "mean_normalized_entropy" not in no_attention and "attention_tumour_lift" not in no_attention
    assert no_attention["critical_is_tumour_rate"] == full["critical_is_tumour_rate"] == 1.0  # argmax 1 and 3
    assert "critical_is_tumour_rate" not in no_scores and "mean_score_spread" not in no_scores
    assert no_scores["attention_tumour_lift"] == full["attention_tumour_lift"]
    assert available_summary(None, None, sizes, tumour, None, 1) == {}
    assert set(applicable_keys(LOGGED_KEYS, False, True)) == set(LOGGED_KEYS) & set(no_attention)


@pytest.mark.parametrize("aggregator", ["mean", "max", "abmil"])
def test_a_fold_trains_with_each_aggregator_logging_only_its_diagnostics(aggregator, tmp_path):
    train_set, val_set = toy_bags(12, 8, seed=0), toy_bags(4, 4, seed=1)
    model = ModelConfig(width=8, depth=2, aggregator=aggregator, prediction="bag_stream")
    logs = []
    result = loop.train_fold(
        tiny_config(epochs=2, model=model, instance_supervision=0.5),
        0,
        train_set,
        val_set,
        tmp_path / "best.pt",
        log=logs.append,
    )
    logged = {key.split("/")[-1] for key in result.history[-1] if "/mil/" in key}
    assert logged == set(applicable_keys(LOGGED_KEYS, HAS_ATTENTION[aggregator], HAS_INSTANCE_SCORES[aggregator]))
    if not HAS_ATTENTION[aggregator]:  # no attention, nothing to collapse
        assert result.collapse_epochs == {"uniform": 0, "one-hot": 0}
    assert ("attention entropy" in logs[-1]) == HAS_ATTENTION[aggregator]
    model, checkpoint = load_checkpoint(tmp_path / "best.pt")
    assert checkpoint["model_config"]["aggregator"] == aggregator
    scores = score_bags(model, val_set.bags, torch.device("cpu"))
    table = patient_predictions(val_set, scores, 0.5)
    assert table["critical_slice"].isna().all() == (aggregator != "max")  # only max pooling has a deciding slice
    assert (table["most_attended_slices"] == "").all() == (not HAS_ATTENTION[aggregator])


def test_the_audit_says_not_applicable_for_a_collapse_an_aggregator_cannot_have():
    import pandas as pd

    from gliomil.evaluation.audit import FoldRecord

    history = pd.DataFrame({"epoch": [1, 2], "train/mil/mean_score_spread": [0.1, 0.2]})
    history["val/mil/mean_score_spread"] = [0.1, 0.2]
    for key in ("mean_critical_position", "tumour_share", "critical_is_tumour_rate"):
        history[f"train/mil/{key}"] = history[f"val/mil/{key}"] = [0.5, 0.5]
    keys = applicable_keys(LOGGED_KEYS, False, True)
    record = FoldRecord(
        fold=0,
        held_out={
            "at_0.5": {
                "sensitivity": 1,
                "specificity": 1,
                "hgg_detected": "1/1",
                "predicted_hgg": 1,
                "confusion": {"tn": 1, "fp": 0},
            },
            "n_test": 2,
            "mil": {"critical_is_tumour_rate": 0.5},
        },
        training={"collapse_epochs": {"uniform": 0, "one-hot": 0}},
        class_weights={"use_class_weights": True, "LGG": 1.0, "HGG": 1.0},
        mil_history=mil_history(history, keys),
        epochs_trained=2,
        figures=6,
    )
    items = {item.text: item for item in checklist([record], 1, 0.5, CollapseThresholds(), "max")}
    collapse = items["Attention collapse warnings appear if needed"]
    assert item_verdict(collapse) == "not applicable" and not collapse.passed
    assert item_verdict(items["MIL diagnostics logged in all epochs"]) == "passed"
    assert item_verdict(items["Plots saved per epoch (plot_every=1)"]) == "passed"  # 3 figures an epoch
    assert "highest-scoring slice holds tumour in 0.50" in items["Final metrics include MIL diagnostics"].evidence
