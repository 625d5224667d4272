"""params.yaml checks: every key is declared in SPEC, and each wrong value gives one line naming the key."""

import copy
import re

import pytest

from gliomil import params as P
from gliomil.errors import ParamsError
from gliomil.training.loop import TrainConfig


@pytest.fixture
def params() -> dict:
    return P.load_params()


def test_the_committed_params_file_is_valid(params):
    P.check_params(params)
    assert P.value(params, "folds") == [0, 1, 2, 3, 4]
    assert P.value(params, "label_smoothing") == 0.2
    assert P.value(params, "use_class_weights") is True


def test_values_come_back_converted_and_sections_nested(params):
    assert P.value(params, "synthesize.shape") == (96, 96, 64)
    assert P.value(params, "preprocess.clip_percentiles") == (0.5, 99.5)
    assert isinstance(P.value(params, "train.lr"), float)
    train = P.section(params, "train")
    assert train["model"]["width"] == 16 and train["diagnostics"]["top_k"] == 3
    assert set(train) == {key.split(".")[1] for key in P.SPEC if key.startswith("train.")}
    assert P.section(params, "train.model") == train["model"]


@pytest.mark.parametrize(
    "rule, value, message",
    [
        (P.integer(low=8), "big", "a.b must be an integer >= 8, got 'big'"),
        (P.integer(low=8), 4, "a.b must be an integer >= 8, got 4"),
        (P.integer(), True, "a.b must be an integer, got True"),
        (P.number(0, 1), 1.5, "a.b must be a number in [0, 1], got 1.5"),
        (P.boolean(), "yes", "a.b must be true or false, got 'yes'"),
        (P.choice(("fail", "skip")), "ignore", "a.b must be one of fail, skip, got 'ignore'"),
        (P.text(), "", "a.b must be a non-empty string, got ''"),
        (P.integer_list(length=3, low=16), [96, 96], "a.b must be a list of 3 integers >= 16"),
        (P.number_list(2, 0, 100, increasing=True), [99, 1], "in increasing order"),
        (P.fold_list(), [0, 2], "a.b must be the list 0, 1, ..., K-1 with K >= 2, got [0, 2]"),
    ],
)
def test_wrong_values_name_the_key_and_the_value(rule, value, message, monkeypatch):
    assert not rule.accepts(value)
    monkeypatch.setitem(P.SPEC, "a.b", rule)  # a rule checked through value() like any declared key
    with pytest.raises(ParamsError, match=re.escape(message)) as info:
        P.value({"a": {"b": value}}, "a.b")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "rule, value",
    [
        (P.integer(low=8), 8),
        (P.integer(8, 1024), 1024),
        (P.number(0, 1), 1),
        (P.number(), -2.5),
        (P.boolean(), False),
        (P.choice(("fail", "skip")), "skip"),
        (P.text(), "t1ce"),
        (P.integer_list(3, low=16), [16, 17, 18]),
        (P.number_list(2, 0, 100, increasing=True), [0, 99.5]),
        (P.fold_list(), [0, 1]),
    ],
)
def test_right_values_are_accepted(rule, value):
    assert rule.accepts(value)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("preprocess.image_size", "big", "preprocess.image_size must be an integer in [8, 1024], got 'big'"),
        ("preprocess.image_size", 4, "preprocess.image_size must be an integer in [8, 1024], got 4"),
        ("train.epochs", True, "train.epochs must be an integer >= 1, got True"),
        ("label_smoothing", 1.5, "label_smoothing must be a number in [0.0, 0.99], got 1.5"),
        ("use_class_weights", "yes", "use_class_weights must be true or false, got 'yes'"),
        ("preprocess.on_error", "ignore", "preprocess.on_error must be one of fail, skip, got 'ignore'"),
        ("synthesize.shape", [96, 96], "synthesize.shape must be a list of 3 integers >= 16, got [96, 96]"),
        ("preprocess.clip_percentiles", [99, 1], "in increasing order, got [99, 1]"),
    ],
)
def test_wrong_values_of_declared_keys(params, key, value, message):
    *parents, leaf = key.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[leaf] = value
    for check in (lambda: P.value(params, key), lambda: P.check_params(params)):
        with pytest.raises(ParamsError, match=re.escape(message)) as info:
            check()
        assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_key_is_named():
    with pytest.raises(ParamsError, match="missing key 'preprocess.image_size'"):
        P.value({"preprocess": {}}, "preprocess.image_size")


@pytest.mark.parametrize("folds", [[1, 2, 3], [0], [0, 2], "0,1"])
def test_folds_must_be_zero_to_k_minus_one(folds):
    with pytest.raises(ParamsError, match="folds must be"):
        P.value({"folds": folds}, "folds")


def test_unreadable_params_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: [1, 2\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        P.load_params(bad)
    with pytest.raises(ParamsError, match="file not found"):
        P.load_params(tmp_path / "missing.yaml")


def _check_params_message(params: dict) -> str:
    with pytest.raises(ParamsError, match="^params.yaml: ") as info:
        P.check_params(params)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_check_params_names_the_nearest_key_of_an_unknown_one(params):
    typo = copy.deepcopy(params)
    typo["train"]["epoch"] = 5  # beside train.epochs
    assert _check_params_message(typo) == "params.yaml: unknown key 'train.epoch' (did you mean 'train.epochs'?)"
    misspelt = copy.deepcopy(params)
    misspelt["label_smothing"] = misspelt.pop("label_smoothing")
    assert (
        _check_params_message(misspelt) == "params.yaml: unknown key 'label_smothing' (did you mean 'label_smoothing'?)"
    )


def test_check_params_names_a_missing_key_and_a_bad_value(params):
    missing = copy.deepcopy(params)
    del missing["train"]["patience"]
    assert _check_params_message(missing) == "params.yaml: missing key 'train.patience'"
    negative = copy.deepcopy(params)
    negative["train"]["bag_size"] = -1
    assert _check_params_message(negative) == "params.yaml: train.bag_size must be an integer >= 1, got -1"


def test_collapse_thresholds_are_read_from_params_and_checked(params):
    params["train"]["diagnostics"] = {
        "top_k": 5,
        "uniform_entropy": 0.9,
        "uniform_max_ratio": 2.5,
        "onehot_max_attention": 0.8,
    }  # none of them CollapseThresholds' defaults (0.98, 1.5, 0.95) or params.yaml's (top_k 3)
    assert P.section(params, "train.diagnostics") == {
        "top_k": 5,
        "uniform_entropy": 0.9,
        "uniform_max_ratio": 2.5,
        "onehot_max_attention": 0.8,
    }
    top = {key: P.value(params, key) for key in ("seed", "label_smoothing", "use_class_weights")}
    config = TrainConfig.from_settings(top, P.section(params, "train"))  # as the train stage builds it
    assert config.top_k == 5
    assert (
        config.collapse.uniform_entropy,
        config.collapse.uniform_max_ratio,
        config.collapse.onehot_max_attention,
    ) == (0.9, 2.5, 0.8)
    params["train"]["diagnostics"]["uniform_max_ratio"] = 0.5
    with pytest.raises(ParamsError, match=r"train.diagnostics.uniform_max_ratio must be a number >= 1.0, got 0.5"):
        P.value(params, "train.diagnostics.uniform_max_ratio")
