"""params.yaml checks: each wrong value gives one line naming the key."""

import pytest

from gliomil import params as P
from gliomil.errors import ParamsError


def test_the_committed_params_file_is_valid():
    params = P.load_params()
    assert P.folds(params) == [0, 1, 2, 3, 4]
    assert P.number(params, "label_smoothing", 0, 1) == 0.2
    assert P.boolean(params, "use_class_weights") is True


@pytest.mark.parametrize("check, value, message", [
    (lambda p: P.integer(p, "a.b", low=8), "big", "a.b must be an integer >= 8, got 'big'"),
    (lambda p: P.integer(p, "a.b", low=8), 4, "a.b must be an integer >= 8, got 4"),
    (lambda p: P.integer(p, "a.b"), True, "a.b must be an integer, got True"),
    (lambda p: P.number(p, "a.b", 0, 1), 1.5, "a.b must be a number in [0, 1], got 1.5"),
    (lambda p: P.boolean(p, "a.b"), "yes", "a.b must be true or false, got 'yes'"),
    (lambda p: P.choice(p, "a.b", ("fail", "skip")), "ignore", "a.b must be one of fail, skip, got 'ignore'"),
    (lambda p: P.integer_list(p, "a.b", length=3, low=16), [96, 96], "a.b must be a list of 3 integers >= 16"),
    (lambda p: P.number_list(p, "a.b", 2, 0, 100, increasing=True), [99, 1], "in increasing order"),
])
def test_wrong_values_name_the_key_and_the_value(check, value, message):
    with pytest.raises(ParamsError) as info:
        check({"a": {"b": value}})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_key_is_named():
    with pytest.raises(ParamsError, match="missing key 'preprocess.image_size'"):
        P.integer({"preprocess": {}}, "preprocess.image_size")


@pytest.mark.parametrize("folds", [[1, 2, 3], [0], [0, 2], "0,1"])
def test_folds_must_be_zero_to_k_minus_one(folds):
    with pytest.raises(ParamsError, match="folds must be"):
        P.folds({"folds": folds})


def test_unreadable_params_file(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: [1, 2\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        P.load_params(bad)
    with pytest.raises(ParamsError, match="file not found"):
        P.load_params(tmp_path / "missing.yaml")


def test_collapse_thresholds_are_read_from_params_and_checked():
    from gliomil.diagnostics import CollapseThresholds, collapse_thresholds_from_params

    params = P.load_params()
    assert collapse_thresholds_from_params(params) == CollapseThresholds(**{
        k: params["train"]["diagnostics"][k] for k in ("uniform_entropy", "uniform_max_ratio", "onehot_max_attention")})
    params["train"]["diagnostics"]["uniform_max_ratio"] = 0.5
    with pytest.raises(ParamsError, match=r"train.diagnostics.uniform_max_ratio must be a number >= 1"):
        collapse_thresholds_from_params(params)
