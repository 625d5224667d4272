"""Training loop: learning on a toy task, reproducibility, class weights, sampling, diagnostics, reporting,
one step, model selection and the config built from params."""

import json

import numpy as np
import pytest
import torch
from dvclive import Live

from gliomil import params as P
from gliomil.data.bags import BagSet, augment_bag, epoch_order, sample_slices
from gliomil.errors import ParamsError
from gliomil.evaluation.diagnostics import LOGGED_KEYS, CollapseThresholds
from gliomil.evaluation.metrics import epoch_metrics
from gliomil.evaluation.scoring import score_bags
from gliomil.model.checkpoint import load_checkpoint
from gliomil.model.mil import ModelConfig
from gliomil.training.loop import BestCheckpoint, TrainConfig, epoch_record, train_fold, train_step
from gliomil.training.losses import mil_loss
from gliomil.training.reporting import EpochReporter

TINY_MODEL = ModelConfig(width=8, depth=2)


def toy_bags(n_hgg: int, n_lgg: int, seed: int) -> BagSet:
    """Bags of 16x16 slices where HGG bags hide two slices with a bright square in channel 2 (t1ce)."""
    rng = np.random.default_rng(seed)
    bags, tumour, position, labels, ids = [], [], [], [], []
    for i, label in enumerate([1] * n_hgg + [0] * n_lgg):
        n = int(rng.integers(6, 12))
        bag = rng.normal(size=(n, 4, 16, 16)).astype(np.float16)
        marked = rng.choice(n, size=2, replace=False)
        bag[marked, :, 5:11, 5:11] += 1.5  # a lesion in every bag ...
        if label:
            bag[marked, 2, 5:11, 5:11] += 3.0  # ... that enhances only in HGG
        fraction = np.zeros(n)
        fraction[marked] = 36 / 256
        bags.append(bag)
        tumour.append(fraction)
        position.append(np.linspace(0, 1, n))
        labels.append(label)
        ids.append(f"{'H' if label else 'L'}{i:03d}")
    return BagSet(ids, np.array(labels), bags, tumour, position)


def tiny_config(**overrides) -> TrainConfig:
    settings = dict(epochs=6, batch_size=4, bag_size=8, lr=3e-3, patience=10, amp=False, model=TINY_MODEL, seed=1)
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def toy_data():
    return toy_bags(24, 16, seed=0), toy_bags(8, 8, seed=1)


def test_tiny_training_run_beats_chance(toy_data, tmp_path):
    train_set, val_set = toy_data
    logs = []
    result = train_fold(tiny_config(), 0, train_set, val_set, tmp_path / "best.pt", log=logs.append)
    assert result.best["auc"] >= 0.8
    model, checkpoint = load_checkpoint(tmp_path / "best.pt")
    assert checkpoint["epoch"] == result.best_epoch
    scores = score_bags(model, val_set.bags, torch.device("cpu"))
    assert epoch_metrics(val_set.labels, scores.probabilities)["auc"] == pytest.approx(result.best["auc"])
    # the attention stream learns to look at the marked (tumour) slices
    assert result.history[result.best_epoch - 1]["val/mil/attention_tumour_lift"] > 1.0


def test_same_seed_gives_bit_identical_checkpoints_and_metrics(toy_data, tmp_path):
    train_set, val_set = toy_data
    config = tiny_config(epochs=2)
    # same file name in two folders: torch.save records the file's stem inside the archive
    first = train_fold(config, 0, train_set, val_set, tmp_path / "a" / "best.pt", log=lambda _: None)
    second = train_fold(config, 0, train_set, val_set, tmp_path / "b" / "best.pt", log=lambda _: None)
    assert (tmp_path / "a/best.pt").read_bytes() == (tmp_path / "b/best.pt").read_bytes()
    assert first.history == second.history
    other = train_fold(tiny_config(epochs=2, seed=2), 0, train_set, val_set, tmp_path / "c.pt", log=lambda _: None)
    assert other.history != first.history


def test_class_weights_are_logged_and_follow_the_counts(toy_data, tmp_path):
    train_set, val_set = toy_data
    logs = []
    result = train_fold(tiny_config(epochs=1), 3, train_set, val_set, tmp_path / "w.pt", log=logs.append)
    # 24 HGG + 16 LGG: balanced weights 40 / (2 * 16) and 40 / (2 * 24)
    assert result.class_weights == pytest.approx((1.25, 40 / 48))
    assert "fold 3: class weights: LGG=1.2500, HGG=0.8333" in logs
    unweighted = train_fold(
        tiny_config(epochs=1, use_class_weights=False), 3, train_set, val_set, tmp_path / "u.pt", log=logs.append
    )
    assert unweighted.class_weights is None


def test_collapse_epochs_are_counted_and_warned(toy_data, tmp_path):
    train_set, val_set = toy_data
    always_uniform = CollapseThresholds(uniform_entropy=0.01, uniform_max_ratio=1e6)
    logs = []
    result = train_fold(
        tiny_config(epochs=2, collapse=always_uniform), 4, train_set, val_set, tmp_path / "c.pt", log=logs.append
    )
    assert result.collapse_epochs == {"uniform": 4, "one-hot": 0}  # train and val bags, 2 epochs
    assert any(line.startswith("WARNING: fold 4 epoch 2: uniform attention collapse") for line in logs)


def test_early_stopping_after_patience(toy_data, tmp_path):
    train_set, val_set = toy_data
    result = train_fold(
        tiny_config(epochs=30, lr=0.0, lr_min=0.0, patience=2, select_metric="loss"),
        0,
        train_set,
        val_set,
        tmp_path / "e.pt",
        log=lambda _: None,
    )
    # with a learning rate of 0 nothing improves after epoch 1
    assert len(result.history) == 3 and result.best_epoch == 1


def test_sample_slices_draws_distinct_sorted_slices():
    rng = np.random.default_rng(0)
    picks = sample_slices(40, 8, rng)
    assert len(picks) == 8 and len(set(picks)) == 8 and list(picks) == sorted(picks)
    np.testing.assert_array_equal(sample_slices(5, 8, rng), np.arange(5))


def test_epoch_order_without_and_with_the_weighted_sampler():
    labels = np.array([1] * 90 + [0] * 10)
    rng = np.random.default_rng(0)
    plain = epoch_order(labels, rng, weighted_sampler=False)
    assert sorted(plain) == list(range(100))
    drawn = np.concatenate([epoch_order(labels, rng, weighted_sampler=True) for _ in range(50)])
    assert abs(labels[drawn].mean() - 0.5) < 0.03  # each class about half of the draws


def test_augment_bag_flips_left_right_and_scales_each_modality():
    bag = np.zeros((3, 4, 5, 6), dtype=np.float32)
    bag[:, :, 0, :] = 1.0  # the first row along the left-right axis
    seen_flip = seen_plain = False
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = augment_bag(bag, rng)
        assert out.shape == bag.shape and out.dtype == bag.dtype
        assert np.all(out[:, :, 1:4, :] == 0)  # background stays 0
        gains = out.max(axis=(0, 2, 3))
        assert np.all((gains > 0.5) & (gains < 2.0)) and len(np.unique(gains)) == 4
        flipped = out[:, :, -1, :].any()
        seen_flip |= flipped
        seen_plain |= not flipped
    assert seen_flip and seen_plain


def test_the_checkpoint_keeps_the_prediction_rule(toy_data, tmp_path):
    train_set, val_set = toy_data
    model_config = ModelConfig(width=8, depth=2, prediction="both_streams")
    train_fold(
        tiny_config(epochs=1, model=model_config), 0, train_set, val_set, tmp_path / "best.pt", log=lambda _: None
    )
    model, _ = load_checkpoint(tmp_path / "best.pt")
    scores = score_bags(model, val_set.bags, torch.device("cpu"))
    assert model.prediction == scores.prediction == "both_streams"
    bag = 1 / (1 + np.exp(-scores.bag_logits))
    instance = 1 / (1 + np.exp(-scores.max_instance_logits))
    np.testing.assert_allclose(scores.probabilities, (bag + instance) / 2, rtol=1e-6)


def test_reporter_logs_every_epoch_and_plots_with_fixed_names(toy_data, tmp_path):
    train_set, val_set = toy_data
    live = Live(dir=str(tmp_path / "live"), dvcyaml=False, save_dvc_exp=False)
    reporter = EpochReporter(live, tmp_path / "plots", plot_every=2, fold=0, val_set=val_set)
    train_fold(tiny_config(epochs=4), 0, train_set, val_set, tmp_path / "r.pt", log=lambda _: None, on_epoch=reporter)
    live.end()
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    kinds = ("attention", "confusion", "curves", "roc")
    assert names == [f"epoch_{e:03d}_{kind}.png" for e in (2, 4) for kind in kinds]
    loss_rows = (tmp_path / "live/plots/metrics/val/loss.tsv").read_text().splitlines()
    assert len(loss_rows) == 1 + 4  # header + one row per epoch
    summary = json.loads((tmp_path / "live/metrics.json").read_text())
    assert {"loss", "auc", "f1", "balanced_accuracy", "predicted_hgg", "true_hgg", "mil"} <= set(summary["val"])


def test_a_failing_plot_is_logged_and_training_goes_on(toy_data, tmp_path, monkeypatch):
    train_set, val_set = toy_data
    logs = []
    live = Live(dir=str(tmp_path / "live"), dvcyaml=False, save_dvc_exp=False)
    reporter = EpochReporter(live, tmp_path / "plots", 1, 0, val_set, log=logs.append)

    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr("gliomil.training.reporting.plot_roc", broken)
    result = train_fold(
        tiny_config(epochs=2), 0, train_set, val_set, tmp_path / "p.pt", log=logs.append, on_epoch=reporter
    )
    assert len(result.history) == 2
    assert "WARNING: fold 0 epoch 1: plotting failed: RuntimeError: no display" in logs


def config_from(params: dict) -> TrainConfig:
    """What the train stage builds from params.yaml."""
    top = {key: P.value(params, key) for key in ("seed", "label_smoothing", "use_class_weights")}
    return TrainConfig.from_settings(top, P.section(params, "train"))


def test_committed_params_give_a_valid_config_and_bad_values_are_named():
    params = P.load_params()
    config = config_from(params)
    assert config.label_smoothing == 0.2 and config.use_class_weights and config.weighted_sampler
    train = params["train"]
    assert config.model == ModelConfig(**train["model"]) and config.top_k == train["diagnostics"]["top_k"]
    assert config.collapse == CollapseThresholds(**{k: v for k, v in train["diagnostics"].items() if k != "top_k"})
    assert config.betas == tuple(train["betas"]) and config.epochs == train["epochs"]
    params["train"]["bag_size"] = 0
    with pytest.raises(ParamsError, match="train.bag_size must be an integer >= 1, got 0"):
        config_from(params)


def adam_by_hand(parameter, gradient, state, lr, betas, weight_decay, eps=1e-8):
    """One Adam step (Kingma & Ba 2015, with L2 weight decay added to the gradient, as torch.optim.Adam),
    in float64: g = grad + wd * p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)."""
    p, g = parameter.double(), gradient.double() + weight_decay * parameter.double()
    t = state["t"] = state.get("t", 0) + 1
    m = state["m"] = betas[0] * state.get("m", 0.0) + (1 - betas[0]) * g
    v = state["v"] = betas[1] * state.get("v", 0.0) + (1 - betas[1]) * g * g
    return p - lr * (m / (1 - betas[0] ** t)) / (torch.sqrt(v / (1 - betas[1] ** t)) + eps)


def test_train_step_takes_adam_steps_by_hand_and_returns_the_outputs():
    import copy

    torch.manual_seed(0)
    model = TINY_MODEL.build().train()
    lr, betas, weight_decay = 0.01, (0.5, 0.9), 1e-3  # the fold loop's Adam, params.yaml's betas
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=betas, weight_decay=weight_decay)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    sizes = [3, 5]
    labels = torch.tensor([1, 0])
    states = [{} for _ in model.parameters()]
    for step in range(2):  # the second step uses the moments of the first
        slices = torch.randn(sum(sizes), 4, 16, 16)
        # The gradient at the current weights, from a copy of the model (train mode: batch statistics).
        twin = copy.deepcopy(model)
        twin_out = twin(slices, sizes)
        mil_loss(twin_out.bag_logits, twin_out.max_instance_logits, labels).backward()
        expected = [
            adam_by_hand(p.detach(), q.grad, state, lr, betas, weight_decay)
            for p, q, state in zip(model.parameters(), twin.parameters(), states)
        ]
        loss, out = train_step(model, optimizer, scaler, mil_loss, slices, sizes, labels, None)
        assert loss.dim() == 0 and out.bag_logits.shape == (2,) and out.attention.shape == (8,)
        assert loss.item() == pytest.approx(
            mil_loss(twin_out.bag_logits, twin_out.max_instance_logits, labels).item(), rel=1e-6
        ), step
        for (name, p), want in zip(model.named_parameters(), expected):
            torch.testing.assert_close(p.detach().double(), want, rtol=1e-5, atol=1e-6, msg=f"step {step}: {name}")


def test_best_checkpoint_by_loss_and_by_auc():
    by_loss = BestCheckpoint("loss", patience=2)
    assert by_loss.update(1, {"loss": 0.6, "auc": 0.7})
    assert not by_loss.update(2, {"loss": 0.7, "auc": 0.9}) and not by_loss.should_stop
    assert by_loss.update(3, {"loss": 0.5, "auc": 0.6}) and by_loss.epoch == 3
    assert not by_loss.update(4, {"loss": 0.5, "auc": 0.9})  # equal loss is no improvement
    assert not by_loss.update(5, {"loss": 0.9, "auc": 0.9}) and by_loss.should_stop
    by_auc = BestCheckpoint("auc", patience=5)
    assert by_auc.update(1, {"loss": 0.6, "auc": float("nan")})
    assert by_auc.update(2, {"loss": 0.9, "auc": 0.6})  # any AUC beats NaN
    assert by_auc.update(3, {"loss": 0.8, "auc": 0.6})  # tie on AUC: lower loss wins
    assert not by_auc.update(4, {"loss": 0.1, "auc": 0.55})
    assert by_auc.epoch == 3 and by_auc.best == {"loss": 0.8, "auc": 0.6}


def test_epoch_record_names_every_logged_value():
    metrics = {"train": {"loss": 0.5, "auc": 0.6}, "val": {"loss": 0.7, "auc": 0.8}}
    mil = {split: {key: i / 10 for i, key in enumerate(LOGGED_KEYS)} for split in ("train", "val")}
    record = epoch_record(4, 1e-3, metrics, mil)
    assert record["epoch"] == 4 and record["lr"] == 1e-3
    assert record["train/loss"] == 0.5 and record["val/auc"] == 0.8
    assert record[f"val/mil/{LOGGED_KEYS[2]}"] == pytest.approx(0.2)
    assert len(record) == 2 + 2 * (2 + len(LOGGED_KEYS))
