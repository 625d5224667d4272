"""params.yaml, read once at the edge: every key declared in :data:`SPEC`, checked whole before anything runs.

Stage scripts call :func:`load_params`, then :func:`value` or :func:`section` for the keys their
``dvc.yaml`` entry declares, and build the library's settings from those plain, checked values.
Library modules never import this one. Every problem raises :class:`ParamsError` with one line that
names the key, e.g. ``params.yaml: preprocess.image_size must be an integer in [8, 1024], got 'big'``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gliomil.errors import ParamsError
from gliomil.nested import MISSING, assign, flatten, lookup
from gliomil.vocabulary import (
    AGGREGATORS,
    HAS_INSTANCE_SCORES,
    INSTANCE_TARGETS,
    LAYOUTS,
    MODALITIES,
    PIXEL_TARGETS,
    SEGMENTATION,
    SLICE_POOLINGS,
    SPLIT_GROUPS,
)

PARAMS_FILE = Path("params.yaml")


@dataclass(frozen=True)
class Rule:
    """What a key's value must be: ``expected`` reads "must be <expected>"; ``accepts`` decides."""

    expected: str
    accepts: Callable[[Any], bool]
    convert: Callable[[Any], Any] = lambda v: v


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _range_text(low, high) -> str:
    if low is not None and high is not None:
        return f" in [{low}, {high}]"
    if low is not None:
        return f" >= {low}"
    return f" <= {high}" if high is not None else ""


def _within(v, low, high) -> bool:
    return (low is None or v >= low) and (high is None or v <= high)


def integer(low: int | None = None, high: int | None = None) -> Rule:
    """An int (bools rejected) within [low, high]."""
    return Rule("an integer" + _range_text(low, high), lambda v: _is_int(v) and _within(v, low, high))


def number(low: float | None = None, high: float | None = None) -> Rule:
    """A real number within [low, high], returned as float."""
    return Rule("a number" + _range_text(low, high), lambda v: _is_number(v) and _within(v, low, high), float)


def boolean() -> Rule:
    return Rule("true or false", lambda v: isinstance(v, bool))


def choice(options: tuple[str, ...]) -> Rule:
    return Rule("one of " + ", ".join(options), lambda v: v in options)


def text() -> Rule:
    return Rule("a non-empty string", lambda v: isinstance(v, str) and bool(v))


def integer_list(length: int, low: int | None = None) -> Rule:
    return Rule(
        f"a list of {length} integers" + _range_text(low, None),
        lambda v: isinstance(v, list) and len(v) == length and all(_is_int(i) and _within(i, low, None) for i in v),
        tuple,
    )


def number_list(length: int, low: float | None = None, high: float | None = None, increasing: bool = False) -> Rule:
    def accepts(v) -> bool:
        return (
            isinstance(v, list)
            and len(v) == length
            and all(_is_number(i) and _within(i, low, high) for i in v)
            and not (increasing and any(a >= b for a, b in zip(v, v[1:])))
        )

    return Rule(
        f"a list of {length} numbers" + _range_text(low, high) + (" in increasing order" if increasing else ""),
        accepts,
        lambda v: tuple(float(i) for i in v),
    )


def fold_list() -> Rule:
    """0, 1, ..., K-1 with K >= 2 (one ``train@k`` and ``evaluate@k`` stage each)."""
    return Rule(
        "the list 0, 1, ..., K-1 with K >= 2",
        lambda v: isinstance(v, list) and len(v) >= 2 and all(_is_int(i) for i in v) and v == list(range(len(v))),
    )


#: Every key of params.yaml and what its value must be. Adding a param means adding it here.
SPEC: dict[str, Rule] = {
    "seed": integer(low=0),
    "label_smoothing": number(0.0, 0.99),
    "use_class_weights": boolean(),
    "folds": fold_list(),
    "synthesize.seed": integer(low=0),
    "synthesize.n_hgg": integer(low=1),
    "synthesize.n_lgg": integer(low=1),
    "synthesize.shape": integer_list(3, low=16),
    "synthesize.workers": integer(low=1),
    "synthesize.sites": integer(1, 4),
    "synthesize.confound": boolean(),
    "data.root": text(),
    "data.layout": choice(LAYOUTS),
    **{f"data.suffixes.{key}": text() for key in (*MODALITIES, SEGMENTATION)},
    "preprocess.image_size": integer(8, 1024),
    "preprocess.clip_percentiles": number_list(2, 0, 100, increasing=True),
    "preprocess.min_brain_fraction": number(0.0, 1.0),
    "preprocess.on_error": choice(("fail", "skip")),
    "preprocess.workers": integer(low=1),
    "split.inner_val_fraction": number(0.01, 0.5),
    "split.group_by": choice(SPLIT_GROUPS),
    "train.epochs": integer(low=1),
    "train.batch_size": integer(low=1),
    "train.bag_size": integer(low=1),
    "train.weighted_sampler": boolean(),
    "train.augment": boolean(),
    "train.augment_geometry": boolean(),
    "train.lr": number(0.0, 1.0),
    "train.lr_min": number(0.0, 1.0),
    "train.betas": number_list(2, 0.0, 0.9999),
    "train.weight_decay": number(low=0.0),
    "train.patience": integer(low=1),
    "train.instance_supervision": number(0.0, None),
    "train.instance_target": choice(INSTANCE_TARGETS),
    "train.pixel_supervision": number(0.0, None),
    "train.pixel_target": choice(tuple(PIXEL_TARGETS)),
    "train.tumour_blind": boolean(),
    "train.select_metric": choice(("loss", "auc")),
    "train.amp": boolean(),
    "train.threads": integer(low=0),
    "train.plot_every": integer(low=0),
    "train.eval_chunk": integer(low=1),
    "train.model.width": integer(1, 512),
    "train.model.depth": integer(1, 8),
    "train.model.aggregator": choice(AGGREGATORS),
    "train.model.nonlinear_q": boolean(),
    "train.model.passing_v": boolean(),
    "train.model.dropout_v": number(0.0, 0.99),
    "train.model.prediction": choice(("bag_stream", "both_streams")),
    "train.model.slice_pooling": choice(SLICE_POOLINGS),
    "train.model.context_slices": integer(0, 4),
    "train.model.tumour_moments": boolean(),
    "train.model.tumour_shape": boolean(),
    "train.diagnostics.top_k": integer(low=1),
    "train.diagnostics.uniform_entropy": number(0.01, 1.0),
    "train.diagnostics.uniform_max_ratio": number(low=1.0),
    "train.diagnostics.onehot_max_attention": number(0.01, 1.0),
    "external.root": text(),
    "external.layout": choice(LAYOUTS),
    "external.on_error": choice(("fail", "skip")),
    "external.n_bootstrap": integer(low=100),
    "external.site.seed": integer(low=0),
    "external.site.n_hgg": integer(low=1),
    "external.site.n_lgg": integer(low=1),
    "external.site.shape": integer_list(3, low=16),
    "external.site.contrast": number(0.1, 3.0),
    "external.site.bias": number_list(2, 0.0, 1.0, increasing=True),
    "external.site.noise": number_list(2, 0.0, 1.0, increasing=True),
    "external.site.workers": integer(low=1),
    "aggregate.min_recall": number(0.0, 1.0),
    "aggregate.n_bootstrap": integer(low=100),
}


def load_params(path: str | Path = PARAMS_FILE) -> dict:
    """The parsed params file as a dict (not yet checked: see :func:`check_params`)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: file not found (run from the repository root)")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of keys to values")
    return params


def value(params: dict, key: str) -> Any:
    """The checked value of a :data:`SPEC` key."""
    node = lookup(params, key)
    if node is MISSING:
        raise ParamsError(f"params.yaml: missing key '{key}'")
    rule = SPEC[key]
    if not rule.accepts(node):
        raise ParamsError(f"params.yaml: {key} must be {rule.expected}, got {node!r}")
    return rule.convert(node)


def section(params: dict, prefix: str) -> dict:
    """The checked values of every :data:`SPEC` key under ``prefix``, nested as in the file
    (``section(p, "train")["model"]["width"]``)."""
    start = prefix + "."
    values: dict = {}
    for key in SPEC:
        if key.startswith(start):
            assign(values, key[len(start) :], value(params, key))
    return values


def check_params(params: dict) -> None:
    """Reject an unknown key (naming the nearest valid one), a missing key or a bad value: one line each."""
    for key in flatten(params):
        children = [k for k in SPEC if k.startswith(key + ".")]
        if children:
            raise ParamsError(f"params.yaml: {key} must be a mapping of its keys ({', '.join(children[:3])}, ...)")
        if key not in SPEC:
            nearest = difflib.get_close_matches(key, SPEC, n=1, cutoff=0.0)
            raise ParamsError(f"params.yaml: unknown key '{key}' (did you mean '{nearest[0]}'?)")
    for key in SPEC:
        value(params, key)
    if value(params, "synthesize.confound") and value(params, "synthesize.sites") < 2:
        raise ParamsError("params.yaml: synthesize.confound ties grade to site and needs synthesize.sites >= 2")
    aggregator = value(params, "train.model.aggregator")
    if aggregator != "dsmil" and value(params, "train.model.prediction") == "both_streams":
        raise ParamsError(
            f"params.yaml: train.model.prediction both_streams reads DSMIL's second stream, which aggregator "
            f"{aggregator} has not; set train.model.prediction: bag_stream"
        )
    if (
        value(params, "train.instance_supervision") > 0
        and value(params, "train.instance_target") == "grade"
        and not HAS_INSTANCE_SCORES[aggregator]
    ):
        raise ParamsError(
            f"params.yaml: train.instance_target grade supervises instance scores, which aggregator {aggregator} "
            "has not; use train.instance_target: tumour or another aggregator"
        )
    if value(params, "train.model.tumour_moments") and value(params, "train.pixel_supervision") == 0:
        raise ParamsError(
            "params.yaml: train.model.tumour_moments measures the tumour with a segmenter that "
            "train.pixel_supervision teaches; set train.pixel_supervision > 0 (e.g. 1.0)"
        )
    if value(params, "train.model.tumour_shape") and not value(params, "train.model.tumour_moments"):
        raise ParamsError(
            "params.yaml: train.model.tumour_shape is the outline of the tumour-moments stream's mask; "
            "set train.model.tumour_moments: true as well"
        )
    cell = 2 ** (value(params, "train.model.depth") - 1)
    if value(params, "train.pixel_supervision") > 0 and value(params, "preprocess.image_size") % cell:
        raise ParamsError(
            f"params.yaml: train.pixel_supervision scores the tumour map on cells of {cell} x {cell} pixels "
            f"(train.model.depth {value(params, 'train.model.depth')}); preprocess.image_size "
            f"{value(params, 'preprocess.image_size')} is not a multiple of {cell}"
        )
