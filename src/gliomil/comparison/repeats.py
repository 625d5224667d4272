"""Before -> after across repeated cross-validation: two configurations of a seed sweep, paired seed by seed.

    python -m gliomil.comparison.repeats [--before PARAM=VALUE[,PARAM=VALUE...]] [--after PARAM=VALUE[,PARAM=VALUE...]]
        [--report reports/audit_effect.md] [--alpha 0.05] [--level 0.95]

A sweep run in DVC's queue, e.g.::

    dvc exp run --queue -S seed=42,43,44 -S label_smoothing=0.1 -S use_class_weights=false
    dvc exp run --queue -S seed=42,43,44            # the committed (audited) params
    dvc queue start -j 1

gives one experiment per (configuration, seed), each a full k-fold cross-validation whose split, initialisation
and sampling follow the top-level ``seed``. A configuration is every param except ``seed``. ``--before`` and
``--after`` pick the two configurations by ``param=value`` lists (dotted keys for nested params, values read as
YAML, so ``false`` matches False and ``0.1`` matches 0.1); without them the finished experiments must form
exactly two configurations: the one holding the baseline commit's params (the committed defaults, the change
under test in the audit) is *after*, the other *before*; when neither holds them, the configuration run first is
*before*. The output says which is which.

The experiments are those ``dvc.api.exp_show()`` lists for the current commit (queued, running and failed rows
are skipped); the baseline commit's own run counts as the experiment of its seed (the committed default run is
the audited seed-42 run), the ``workspace`` row does not (its files may be edited without being a run). Seeds run
in one configuration only are listed and left out. When a configuration holds a seed twice, the newest run is
used and the older ones are listed as superseded (queuing the committed defaults' seed 42 again repeats the
baseline commit's run, for instance).

Every difference is after - before. Same seed, same split: fold k of the before run pairs with fold k of the
after run. Endpoints, per seed (before -> after, delta), then over the seeds (mean delta with a Student-t
interval over seeds, sign agreement):

1. **primary**: held-out ROC AUC per fold (the per-seed value is the mean over folds), because it is what the
   model is meant to do (rank new patients) and, per fold, gives k * r paired results for the test below;
2. balanced accuracy, HGG recall (sensitivity) and LGG recall (specificity) at 0.5, per fold;
3. described only: the pooled held-out AUC (one number per seed) and the pooled inner-validation AUC (the split
   models were selected on: the tuning side, not evidence for new patients).

The four per-fold endpoints are each tested with the corrected repeated k-fold cross-validation t-test (Nadeau &
Bengio 2003; Bouckaert & Frank 2004, :func:`gliomil.comparison.statistics.corrected_repeated_cv_ttest`) on the
k * r paired per-fold differences. The correction is needed because the k * r results are not independent: within
a repeat the folds' training sets overlap (each patient trains k - 1 of the k models) and across repeats the
same patients are reshuffled, so a plain t-test over the k * r results is anti-conservative (too small a
variance, too many "significant" differences). The corrected variance is (1/(k r) + n_test/n_train) s^2 with
n_train the patients a fold's model saw (its training plus inner-validation patients: the inner validation chose
the checkpoint) and n_test its held-out patients, each the mean over the folds (``metrics/split.json``). Holm's
correction runs over the four p-values and the verdicts use the adjusted p.

The pure functions (:func:`choose_runs`, :func:`analyse`, :func:`render_markdown`, :func:`plot_deltas`) take
:class:`Run` records and need no DVC; :func:`list_runs` and :func:`read_metrics` are the I/O.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats as sps

from gliomil import paths
from gliomil.comparison.runs import read_csv, read_json, read_params, read_text
from gliomil.comparison.statistics import (
    CorrectedTTestResult,
    SignAgreement,
    corrected_repeated_cv_ttest,
    holm,
    sign_agreement,
    verdict,
)
from gliomil.errors import GliomilError
from gliomil.evaluation.intervals import delong_test, format_p
from gliomil.nested import MISSING, assign, flatten, lookup
from gliomil.runtime.files import write_text, write_with
from gliomil.runtime.stage import run_command

DEFAULT_REPORT = Path("reports/audit_effect.md")
CV_SUMMARY = paths.CV_SUMMARY.as_posix()
SPLIT_METRICS = "metrics/split.json"
EXTERNAL_PREDICTIONS = (paths.EXTERNAL_PLOTS / "predictions.csv").as_posix()
SEED = "seed"
LEVEL = 0.95
ALPHA = 0.05


# --------------------------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One finished cross-validation: an experiment or the baseline commit's run.

    name: the experiment name (or the branch / short commit of the baseline); rev: what dvc.api reads it by.
    params: params.yaml as a nested dict. folds: ``metrics/eval/fold_<k>.json`` per fold in ``params["folds"]``
    order; summary: ``metrics/cv_summary.json``; split: ``metrics/split.json`` (empty until read).
    created: ISO timestamp (newest wins among duplicates); baseline: the baseline commit's own run.
    """

    name: str
    params: dict
    folds: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    split: dict = field(default_factory=dict)
    rev: str = ""
    created: str = ""
    baseline: bool = False
    external: pd.DataFrame | None = None  # plots/external/predictions.csv (subject_id, label, probability), if any

    @property
    def seed(self):
        return self.params.get(SEED)


@dataclass(frozen=True)
class SeedPair:
    seed: int
    before: Run
    after: Run


@dataclass(frozen=True)
class Selection:
    """The two configurations and their runs paired by seed.

    before_label / after_label: the params where the two configurations differ ("label_smoothing=0.1, ...").
    how: one sentence on how before and after were chosen. unpaired: (seed, side, run name) of seeds run in one
    configuration only; superseded: (seed, side, older run name, newer run name) of duplicated seeds; notes:
    runs left out before grouping (unfinished experiments, a baseline commit without a run).
    """

    before_label: str
    after_label: str
    how: str
    pairs: list[SeedPair]
    unpaired: list[tuple[int, str, str]]
    superseded: list[tuple[int, str, str, str]]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Endpoint:
    """One quantity compared. fold: value from one fold's held-out metrics (tested per fold); summary: value
    from the CV summary (one number per seed, described only)."""

    name: str
    label: str
    fold: Callable[[dict], float] | None = None
    summary: Callable[[dict], float] | None = None
    where: str = ""
    primary: bool = False

    @property
    def tested(self) -> bool:
        return self.fold is not None


ENDPOINTS = (
    Endpoint("held-out AUC", "Held-out AUC, fold mean", fold=lambda m: m["auc"], where="auc", primary=True),
    Endpoint(
        "balanced accuracy at 0.5",
        "Balanced accuracy at 0.5, fold mean",
        fold=lambda m: m["at_0.5"]["balanced_accuracy"],
        where="at_0.5.balanced_accuracy",
    ),
    Endpoint(
        "HGG recall at 0.5",
        "HGG recall (sensitivity) at 0.5, fold mean",
        fold=lambda m: m["at_0.5"]["sensitivity"],
        where="at_0.5.sensitivity",
    ),
    Endpoint(
        "LGG recall at 0.5",
        "LGG recall (specificity) at 0.5, fold mean",
        fold=lambda m: m["at_0.5"]["specificity"],
        where="at_0.5.specificity",
    ),
    Endpoint(
        "pooled held-out AUC",
        "Pooled held-out AUC",
        summary=lambda s: s["pooled"]["auc"],
        where="pooled.auc",
    ),
    Endpoint(
        "pooled inner-validation AUC",
        "Pooled inner-validation AUC (tuning side)",
        summary=lambda s: s["pooled_inner_val"]["auc"],
        where="pooled_inner_val.auc",
    ),
)


@dataclass(frozen=True)
class EndpointResult:
    """One endpoint over the paired seeds; before / after / deltas align with :attr:`RepeatsResult.seeds`.

    mean_delta: mean over seeds of the per-seed deltas (for a per-fold endpoint also the mean of the k * r fold
    differences); ci_low / ci_high: Student-t interval over seeds (None with one seed). test, p_holm, verdict:
    the corrected CV t-test, its Holm-adjusted p and the plain-words line (None for described-only endpoints).
    """

    name: str
    label: str
    primary: bool
    before: list[float]
    after: list[float]
    deltas: list[float]
    fold_differences: list[float]
    mean_delta: float
    ci_low: float | None
    ci_high: float | None
    signs: SignAgreement
    test: CorrectedTTestResult | None = None
    p_holm: float | None = None
    verdict: str | None = None

    @property
    def tested(self) -> bool:
        return self.test is not None


@dataclass(frozen=True)
class ExternalResult:
    """The external site (secondary): per seed the packaged model's AUC on the same external patients before and
    after, DeLong's paired test of the two (patient sampling; :func:`gliomil.evaluation.intervals.delong_test`),
    and the mean delta over seeds with its Student-t interval (training variation). Not in the Holm family of the
    cross-validation endpoints: a secondary endpoint, reported with its own p-values."""

    patients: int
    before: list[float]
    after: list[float]
    deltas: list[float]
    delong_p: list[float]
    mean_delta: float
    ci_low: float | None
    ci_high: float | None
    signs: SignAgreement


@dataclass(frozen=True)
class RepeatsResult:
    """The comparison: which runs, which seeds, the endpoints (primary first) and the verdict lines."""

    before_label: str
    after_label: str
    how: str
    seeds: list[int]
    before_runs: list[str]
    after_runs: list[str]
    unpaired: list[tuple[int, str, str]]
    superseded: list[tuple[int, str, str, str]]
    folds: list[int]
    n_train: float
    n_test: float
    endpoints: list[EndpointResult]
    verdicts: list[str]
    warnings: list[str]
    alpha: float
    level: float
    notes: list[str] = field(default_factory=list)
    external: ExternalResult | None = None


# --------------------------------------------------------------------------------------------------------------
# Params: parsing BEFORE / AFTER, matching with YAML typing, configurations
# --------------------------------------------------------------------------------------------------------------


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets, braces and quotes ("folds=[0, 1],seed=1" -> two items)."""
    items, depth, quote, current = [], 0, "", []
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def parse_spec(text: str) -> dict:
    """'label_smoothing=0.1,use_class_weights=false' -> {'label_smoothing': 0.1, 'use_class_weights': False}.

    Keys may be dotted (``train.epochs=2``); values are read as YAML, as ``dvc exp run -S`` reads them.
    """
    spec = {}
    for item in _split_top_level(text):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise GliomilError(
                f"'{item}' is not PARAM=VALUE (expected e.g. label_smoothing=0.1,use_class_weights=false)"
            )
        if key == SEED:
            raise GliomilError("seed pairs the runs and cannot pick a configuration; leave it out of --before/--after")
        try:
            spec[key] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as exc:
            raise GliomilError(f"cannot read the value of '{key}' as YAML: {value!r} ({type(exc).__name__})") from None
    if not spec:
        raise GliomilError(f"no PARAM=VALUE in '{text}'")
    return spec


def same_value(a, b) -> bool:
    """Equality with YAML's types kept apart: False does not equal 0, 1 equals 1.0, lists compare elementwise."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def matches(params: dict, spec: dict) -> bool:
    """Whether every ``key: value`` of ``spec`` is in ``params`` (dotted keys, YAML typing)."""
    return all((value := lookup(params, key)) is not MISSING and same_value(value, want) for key, want in spec.items())


def with_absent(params: dict, absent: dict) -> dict:
    """``params`` (nested) with each dotted key of ``absent`` set to its value where the run lacks it: a param added
    after the run was made, whose default reproduces what the run did."""
    params = copy.deepcopy(params)
    for key, value in absent.items():
        if lookup(params, key) is not MISSING:
            continue
        try:
            assign(params, key, value)
        except ValueError as exc:
            raise GliomilError(f"--absent {key}: {exc} of the params") from None
    return params


def without(params: dict, keys: list[str]) -> dict:
    """``params`` (nested) less the dotted ``keys``: params left out of the configurations."""
    params = copy.deepcopy(params)
    for key in keys:
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return params


def configuration(params: dict) -> str:
    """A run's configuration: every param except ``seed``, as a canonical string (a dict key)."""
    return json.dumps({k: v for k, v in params.items() if k != SEED}, sort_keys=True, default=str)


def yaml_value(value) -> str:
    """A value as YAML writes it in flow style: false, 0.1, [0, 1, 2]."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()


def differing(a: dict, b: dict) -> list[str]:
    """Dotted keys (except seed) whose values differ between two params dicts, sorted."""
    fa, fb = flatten(a), flatten(b)
    keys = sorted((set(fa) | set(fb)) - {SEED})
    return [k for k in keys if not (k in fa and k in fb and same_value(fa[k], fb[k]))]


def describe(params: dict, keys: list[str]) -> str:
    """'label_smoothing=0.1, use_class_weights=false' for the given dotted keys ('(absent)' when missing)."""
    parts = []
    for key in keys:
        value = lookup(params, key)
        parts.append(f"{key}={'(absent)' if value is MISSING else yaml_value(value)}")
    return ", ".join(parts) if parts else "(identical params)"


# --------------------------------------------------------------------------------------------------------------
# Choosing and pairing the runs (pure)
# --------------------------------------------------------------------------------------------------------------


def _group(runs: list[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        if not isinstance(run.seed, int) or isinstance(run.seed, bool):
            raise GliomilError(f"run '{run.name}' has no integer top-level seed (got {run.seed!r})")
        groups.setdefault(configuration(run.params), []).append(run)
    return groups


def _labels(groups: dict[str, list[Run]]) -> dict[str, str]:
    """Each configuration described by the params that vary across all of them."""
    firsts = {key: runs[0].params for key, runs in groups.items()}
    varying = sorted({k for a in firsts.values() for b in firsts.values() for k in differing(a, b)})
    return {key: describe(params, varying) for key, params in firsts.items()}


def _pick(groups: dict[str, list[Run]], spec: dict, option: str) -> str:
    found = [key for key, runs in groups.items() if matches(runs[0].params, spec)]
    if len(found) == 1:
        return found[0]
    wanted = ",".join(f"{k}={yaml_value(v)}" for k, v in spec.items())
    labels = _labels(groups)
    if not found:
        unknown = [k for k in spec if all(lookup(r[0].params, k) is MISSING for r in groups.values())]
        if unknown:
            raise GliomilError(f"{option} {wanted}: no run has the param(s) {', '.join(unknown)}")
        listed = "; ".join(labels.values())
        raise GliomilError(f"{option} {wanted} matches no finished run; configurations found: {listed}")
    apart = sorted({k for a in found for b in found for k in differing(groups[a][0].params, groups[b][0].params)})
    raise GliomilError(
        f"{option} {wanted} matches {len(found)} configurations; add the params that tell them apart: "
        + ", ".join(apart)
    )


def _first_created(runs: list[Run]) -> str:
    return min(run.created or "" for run in runs)


def _by_seed(runs: list[Run], side: str) -> tuple[dict[int, Run], list[tuple[int, str, str, str]]]:
    """The newest run of each seed, and (seed, side, older, newer) for each duplicate set aside."""
    chosen: dict[int, Run] = {}
    superseded = []
    for run in sorted(runs, key=lambda r: (r.created or "", not r.baseline, r.name)):
        if run.seed in chosen:
            superseded.append((run.seed, side, chosen[run.seed].name, run.name))
        chosen[run.seed] = run
    return chosen, superseded


def choose_runs(runs: list[Run], before: dict | None = None, after: dict | None = None) -> Selection:
    """Group finished runs by configuration (every param but seed), pick before and after, pair them by seed.

    before / after: param specs (:func:`parse_spec`); either or both may be None when the runs form exactly two
    configurations. Without either, the configuration holding the baseline commit's run is after; when neither
    holds it, the one whose first run was created first is before.
    """
    if not runs:
        raise GliomilError("no finished experiments to compare (dvc exp show lists none that succeeded)")
    groups = _group(runs)
    labels = _labels(groups)
    options = ("--before", "--after")
    keys = [None if spec is None else _pick(groups, spec, option) for spec, option in zip((before, after), options)]
    if keys[0] is not None and keys[0] == keys[1]:
        raise GliomilError(f"--before and --after select the same configuration ({labels[keys[0]]})")
    given = [k for k in keys if k is not None]
    others = [k for k in groups if k not in given]
    if len(given) == 2:
        how = "before and after chosen with --before and --after"
    elif len(given) == 1 and len(others) == 1:
        missing = options[keys.index(None)]
        keys[keys.index(None)] = others[0]
        how = f"{missing} is the only other configuration"
    elif len(given) == 0 and len(groups) == 2:
        first, second = groups
        committed = [k for k in groups if any(run.baseline for run in groups[k])]
        if len(committed) == 1:
            after_key = committed[0]
            how = (
                "no --before/--after: after is the configuration with the baseline commit's (committed) params, "
                "before the other; pass --before/--after to swap"
            )
        else:
            after_key = second if _first_created(groups[first]) <= _first_created(groups[second]) else first
            how = "no --before/--after: before is the configuration run first; pass --before/--after to swap"
        keys = [first if after_key == second else second, after_key]
    else:
        listed = "; ".join(f"{labels[k]} ({len(groups[k])} runs)" for k in groups)
        raise GliomilError(
            f"found {len(groups)} configurations, say which two to compare with --before and --after: {listed}"
        )
    before_key, after_key = keys
    keys_apart = differing(groups[before_key][0].params, groups[after_key][0].params)
    before_runs, superseded = _by_seed(groups[before_key], "before")
    after_runs, superseded_after = _by_seed(groups[after_key], "after")
    unpaired = [(s, "before", r.name) for s, r in before_runs.items() if s not in after_runs]
    unpaired += [(s, "after", r.name) for s, r in after_runs.items() if s not in before_runs]
    pairs = [SeedPair(s, before_runs[s], after_runs[s]) for s in sorted(set(before_runs) & set(after_runs))]
    if not pairs:
        raise GliomilError(
            f"no seed was run in both configurations (before: seeds {sorted(before_runs)}, "
            f"after: seeds {sorted(after_runs)})"
        )
    return Selection(
        before_label=describe(groups[before_key][0].params, keys_apart),
        after_label=describe(groups[after_key][0].params, keys_apart),
        how=how,
        pairs=pairs,
        unpaired=sorted(unpaired),
        superseded=sorted(superseded + superseded_after),
    )


# --------------------------------------------------------------------------------------------------------------
# Analysis (pure)
# --------------------------------------------------------------------------------------------------------------


def _number(value, run: Run, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise GliomilError(f"run '{run.name}': {where} is missing or not a finite number (got {value!r})")
    return float(value)


def _fold_value(endpoint: Endpoint, run: Run, index: int, fold: int) -> float:
    where = f"metrics/eval/fold_{fold}.json: {endpoint.where}"
    try:
        value = endpoint.fold(run.folds[index])
    except (KeyError, TypeError, IndexError):
        value = None
    return _number(value, run, where)


def _summary_value(endpoint: Endpoint, run: Run) -> float:
    try:
        value = endpoint.summary(run.summary)
    except (KeyError, TypeError):
        value = None
    return _number(value, run, f"metrics/cv_summary.json: {endpoint.where}")


def _fold_sizes(run: Run, fold: int) -> tuple[int, int]:
    """(n_train, n_test) of a fold: its train + inner-validation patients, and its held-out patients."""
    try:
        sizes = run.split[f"fold_{fold}"]
        n_train = sum(int(sizes[f"{part}_{grade}"]) for part in ("train", "inner_val") for grade in ("hgg", "lgg"))
        n_test = int(sizes["test_hgg"]) + int(sizes["test_lgg"])
    except (KeyError, TypeError, ValueError):
        raise GliomilError(f"run '{run.name}': metrics/split.json has no patient counts of fold {fold}") from None
    return n_train, n_test


def seed_interval(deltas, level: float = LEVEL) -> tuple[float, float | None, float | None]:
    """Mean of r per-seed deltas and its Student-t interval (df = r - 1); (mean, None, None) for one seed."""
    d = np.asarray(deltas, dtype=float)
    constant = bool(np.all(d == d[0]))
    mean = float(d[0]) if constant else float(d.mean())
    if d.size < 2:
        return mean, None, None
    sd = 0.0 if constant else float(d.std(ddof=1))
    half = float(sps.t.ppf(0.5 + level / 2.0, d.size - 1)) * sd / math.sqrt(d.size)
    return mean, mean - half, mean + half


def _agreement(signs: SignAgreement, mean: float) -> str:
    """'2 of 3 seeds higher': how many seeds agree with the sign of the mean delta."""
    if mean > 0:
        return f"{signs.positive} of {signs.n} seeds higher"
    if mean < 0:
        return f"{signs.negative} of {signs.n} seeds lower"
    return f"{signs.zero} of {signs.n} seeds unchanged"


def _check_folds(pairs: list[SeedPair]) -> list[int]:
    folds = None
    for pair in pairs:
        for run in (pair.before, pair.after):
            run_folds = run.params.get("folds")
            if not isinstance(run_folds, list) or not run_folds:
                raise GliomilError(f"run '{run.name}' has no folds list in its params")
            if folds is None:
                folds = run_folds
            elif run_folds != folds:
                raise GliomilError(
                    f"run '{run.name}' has folds {run_folds}, others {folds}: fold k cannot pair with fold k"
                )
            if len(run.folds) != len(run_folds):
                raise GliomilError(f"run '{run.name}': {len(run.folds)} fold metrics for folds {run_folds}")
    return [int(k) for k in folds]


def external_site(pairs: list[SeedPair], level: float = LEVEL) -> ExternalResult | None:
    """The external-site comparison of :class:`ExternalResult`; None when a run has no external predictions.
    Raises GliomilError when a seed's two runs scored other external patients (not paired)."""
    if any(run.external is None for pair in pairs for run in (pair.before, pair.after)):
        return None
    before, after, p_values, patients = [], [], [], 0
    for pair in pairs:
        merged = pair.before.external.merge(pair.after.external, on="subject_id", suffixes=("_before", "_after"))
        if len(merged) != len(pair.before.external) or len(merged) != len(pair.after.external):
            raise GliomilError(
                f"seed {pair.seed}: runs '{pair.before.name}' and '{pair.after.name}' scored other external "
                "patients: the external site cannot be paired"
            )
        labels = merged["label_before"].to_numpy()
        test = delong_test(labels, merged["probability_before"].to_numpy(), merged["probability_after"].to_numpy())
        before.append(test.auc_before)
        after.append(test.auc_after)
        p_values.append(test.p)
        patients = len(merged)
    deltas = [a - b for b, a in zip(before, after)]
    mean, low, high = seed_interval(deltas, level)
    return ExternalResult(patients, before, after, deltas, p_values, mean, low, high, sign_agreement(deltas))


def analyse(selection: Selection, alpha: float = ALPHA, level: float = LEVEL) -> RepeatsResult:
    """Per-seed deltas, their mean over seeds, the corrected CV t-tests with Holm, and the verdicts.

    The runs of ``selection.pairs`` must carry their metrics (folds, summary, split). The per-fold endpoints'
    k * r differences are ordered seed by seed, fold by fold; n_train / n_test are the mean fold sizes over the
    k * r folds of both configurations (a fold's train + inner-validation patients, its held-out patients).
    """
    pairs = selection.pairs
    folds = _check_folds(pairs)
    warnings = []
    sizes = []
    for pair in pairs:
        for fold in folds:
            before, after = _fold_sizes(pair.before, fold), _fold_sizes(pair.after, fold)
            if before != after:
                warnings.append(
                    f"seed {pair.seed}, fold {fold}: the fold sizes differ (train + inner validation, test: "
                    f"{before} before, {after} after), so the splits differ and fold {fold} pairs other patients"
                )
            sizes += [before, after]
    n_train = float(np.mean([s[0] for s in sizes]))
    n_test = float(np.mean([s[1] for s in sizes]))
    results = []
    for endpoint in ENDPOINTS:
        before_values, after_values, fold_differences = [], [], []
        for pair in pairs:
            if endpoint.tested:
                b = [_fold_value(endpoint, pair.before, i, k) for i, k in enumerate(folds)]
                a = [_fold_value(endpoint, pair.after, i, k) for i, k in enumerate(folds)]
                fold_differences += [y - x for x, y in zip(b, a)]
                before_values.append(float(np.mean(b)))
                after_values.append(float(np.mean(a)))
            else:
                before_values.append(_summary_value(endpoint, pair.before))
                after_values.append(_summary_value(endpoint, pair.after))
        deltas = [a - b for b, a in zip(before_values, after_values)]
        mean, low, high = seed_interval(deltas, level)
        test = None
        if endpoint.tested:
            try:
                test = corrected_repeated_cv_ttest(fold_differences, n_train, n_test, level)
            except ValueError as exc:
                raise GliomilError(f"{endpoint.name}: cannot run the corrected CV t-test: {exc}") from None
            mean = test.mean  # the mean of the k * r differences: the same number, without re-rounding
        results.append(
            EndpointResult(
                name=endpoint.name,
                label=endpoint.label,
                primary=endpoint.primary,
                before=before_values,
                after=after_values,
                deltas=deltas,
                fold_differences=fold_differences,
                mean_delta=mean,
                ci_low=low,
                ci_high=high,
                signs=sign_agreement(deltas),
                test=test,
            )
        )
    tested = [r for r in results if r.tested]
    adjusted = holm([r.test.p for r in tested])
    holm_by_name = {r.name: p for r, p in zip(tested, adjusted)}
    final, verdicts = [], []
    for r in results:
        if r.tested:
            short = "dAUC" if r.name.endswith("AUC") else "difference"
            words = verdict(
                r.test, endpoint=r.name, p_adjusted=holm_by_name[r.name], alpha=alpha, difference_label=short
            )
            words += f"; {_agreement(r.signs, r.mean_delta)}"
            if r.primary:
                words = f"Primary endpoint: {words}"
            r = replace(r, p_holm=holm_by_name[r.name], verdict=words)
            verdicts.append(words)
        final.append(r)
    external = external_site(pairs, level)
    if external is None:
        warnings.append("the external site is not compared: not every run has external-site predictions")
    elif external.patients:
        words = (
            f"External site (secondary, same {external.patients} patients, not in the Holm family): mean dAUC "
            f"{_mean_ci_values(external.mean_delta, external.ci_low, external.ci_high)} over seeds, "
            f"{_agreement(external.signs, external.mean_delta)}; DeLong per seed p = "
            + ", ".join(_p(p) for p in external.delong_p)
        )
        verdicts.append(words)
    return RepeatsResult(
        external=external,
        before_label=selection.before_label,
        after_label=selection.after_label,
        how=selection.how,
        seeds=[p.seed for p in pairs],
        before_runs=[p.before.name for p in pairs],
        after_runs=[p.after.name for p in pairs],
        unpaired=selection.unpaired,
        superseded=selection.superseded,
        folds=folds,
        n_train=n_train,
        n_test=n_test,
        endpoints=final,
        verdicts=verdicts,
        warnings=warnings,
        alpha=alpha,
        level=level,
        notes=list(selection.notes),
    )


def compare_runs(
    runs: list[Run], before: dict | None = None, after: dict | None = None, alpha: float = ALPHA, level: float = LEVEL
) -> RepeatsResult:
    """:func:`choose_runs` then :func:`analyse`, for runs that already carry their metrics."""
    return analyse(choose_runs(runs, before, after), alpha, level)


# --------------------------------------------------------------------------------------------------------------
# Markdown and figure (pure)
# --------------------------------------------------------------------------------------------------------------


def _p(p: float | None) -> str:
    return format_p(p, digits=3)


def _mean_ci(r: EndpointResult) -> str:
    return _mean_ci_values(r.mean_delta, r.ci_low, r.ci_high)


def _mean_ci_values(mean: float, low: float | None, high: float | None) -> str:
    if low is None:
        return f"{mean:+.3f} (1 seed: no CI)"
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def _runs_text(seeds: list[int], names: list[str]) -> str:
    return ", ".join(f"{name} (seed {seed})" for seed, name in zip(seeds, names))


def render_markdown(result: RepeatsResult, figure: str | None = None) -> str:
    """The report: runs and seeds, per-seed before -> after table, across-seeds table, verdicts, what was tested.

    figure: the PNG's path relative to the report, referenced as an image when given.
    """
    r = result
    k, n_seeds = len(r.folds), len(r.seeds)
    primary = next(e for e in r.endpoints if e.primary)
    tested = [e for e in r.endpoints if e.tested]
    level = f"{r.level:.0%}"
    lines = [
        "# Before -> after across repeated cross-validation",
        "",
        f"- Before: {r.before_label}: {_runs_text(r.seeds, r.before_runs)}",
        f"- After: {r.after_label}: {_runs_text(r.seeds, r.after_runs)}",
        f"- Which is which: {r.how}.",
        f"- Paired by seed: {', '.join(map(str, r.seeds))} (r = {n_seeds} repeats of k = {k} folds: "
        f"{k * n_seeds} paired per-fold differences).",
    ]
    if r.unpaired:
        listed = "; ".join(f"seed {s} ({side} only: {name})" for s, side, name in r.unpaired)
        lines.append(f"- Left out, run in one configuration only: {listed}.")
    if r.superseded:
        listed = "; ".join(f"seed {s} ({side}): {old} superseded by {new}" for s, side, old, new in r.superseded)
        lines.append(f"- Duplicated seeds, the newest run used: {listed}.")
    lines += [f"- {note}." for note in r.notes]
    lines += [f"- Warning: {w}" for w in r.warnings]
    lines += [
        "",
        f"**Primary endpoint: {primary.name} per fold**, tested with the corrected repeated k-fold CV t-test on the "
        f"{len(primary.fold_differences)} paired per-fold differences.",
        "",
        "## Per seed: before -> after (delta)",
        "",
        "| Endpoint | " + " | ".join(f"Seed {s}" for s in r.seeds) + " |",
        "|---|" + "---|" * n_seeds,
    ]
    for e in r.endpoints:
        cells = [f"{b:.3f} -> {a:.3f} ({d:+.3f})" for b, a, d in zip(e.before, e.after, e.deltas)]
        lines.append(f"| {e.label}{' (primary)' if e.primary else ''} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Across seeds (after - before)",
        "",
        "| Endpoint | "
        + " | ".join(f"Δ seed {s}" for s in r.seeds)
        + f" | Mean Δ [{level} CI over seeds] | Sign agreement | Corrected {level} CI | Corrected t (df) | p"
        + " | Holm p |",
        "|---|" + "---|" * (n_seeds + 6),
    ]
    for e in r.endpoints:
        cells = [f"{d:+.3f}" for d in e.deltas] + [_mean_ci(e), _agreement(e.signs, e.mean_delta)]
        if e.tested:
            ci = f"[{e.test.ci_low:+.3f}, {e.test.ci_high:+.3f}]"
            cells += [ci, f"{e.test.t:.3f} ({e.test.df})", _p(e.test.p), _p(e.p_holm)]
        else:
            cells += ["–", "not tested", "–", "–"]
        lines.append(f"| {e.label}{' (primary)' if e.primary else ''} | " + " | ".join(cells) + " |")
    if r.external is not None:
        x = r.external
        lines += [
            "",
            f"## External site (secondary): the packaged model on the same {x.patients} patients",
            "",
            "| | " + " | ".join(f"Seed {s}" for s in r.seeds) + f" | Mean Δ [{level} CI over seeds] |",
            "|---|" + "---|" * (n_seeds + 1),
            "| AUC before -> after (Δ) | "
            + " | ".join(f"{b:.3f} -> {a:.3f} ({d:+.3f})" for b, a, d in zip(x.before, x.after, x.deltas))
            + f" | {_mean_ci_values(x.mean_delta, x.ci_low, x.ci_high)} |",
            "| DeLong p (paired, same patients) | " + " | ".join(_p(p) for p in x.delong_p) + " | |",
        ]
    lines += ["", "## Verdict", "", *(f"- {v}" for v in r.verdicts)]
    if figure:
        lines += ["", f"![Per-seed deltas (after - before) of each endpoint]({figure})"]
    ratio = r.n_test / r.n_train
    lines += [
        "",
        "## What was tested",
        "",
        "- Every difference is after - before. A seed fixes the split, so seed s of before pairs with seed s of "
        "after and fold k with fold k.",
        f"- Per-fold endpoints ({', '.join(e.name for e in tested)}): the corrected repeated k-fold cross-validation "
        f"t-test (Nadeau & Bengio 2003; Bouckaert & Frank 2004) on the k * r = {len(primary.fold_differences)} "
        f"per-fold differences: t = mean / sqrt((1/{k * n_seeds} + n_test/n_train) * s²), df = "
        f"{len(primary.fold_differences) - 1}, with n_train = {r.n_train:.1f} (a fold's training plus "
        f"inner-validation patients: what its model saw, checkpoint selection included) and n_test = "
        f"{r.n_test:.1f} (its held-out patients), means over the folds; n_test/n_train = {ratio:.3f}. The folds' "
        "training sets overlap within a repeat and the repeats reuse the same patients, so the k * r results are "
        "correlated and a plain t-test over them would be anti-conservative. The corrected interval (in the table "
        "and the verdicts) is this test's: mean +/- t quantile * the corrected standard error.",
        f"- Holm's correction over these {len(tested)} p-values; a verdict says improved or worsened only when the "
        f"Holm-adjusted p < {r.alpha:g}.",
        f"- Mean Δ [{level} CI]: Student's t over the {n_seeds} per-seed deltas (df = {n_seeds - 1}); a per-fold "
        "endpoint's per-seed delta is the delta of its fold mean, so its mean Δ is the mean of the k * r "
        "differences. Sign agreement: seeds whose delta has the sign of the mean delta.",
    ]
    if n_seeds == 1:
        lines.append("- One seed: no interval over seeds can be computed (r - 1 = 0 degrees of freedom).")
    lines.append(
        "- External site (secondary): per seed, DeLong's test of the two runs' AUCs on the same external patients "
        "(the patient sampling); over seeds, Student's t on the per-seed deltas (the training variation). Its "
        "p-values are not in the Holm family above."
    )
    lines.append(
        "- Pooled held-out AUC and pooled inner-validation AUC: one number per seed, described, not tested. The "
        "inner-validation AUC is on the patients the checkpoints were selected on: the tuning side, not evidence "
        "for new patients."
    )
    return "\n".join(lines) + "\n"


def plot_deltas(result: RepeatsResult, path: str | Path) -> None:
    """One panel per endpoint: each seed's delta (after - before), their mean and interval over seeds, and 0.

    Written atomically (PNG rendered in memory, then a temporary file renamed into place).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    n = len(result.endpoints)
    columns = 3
    rows = math.ceil(n / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.0 * columns, 3.0 * rows), squeeze=False)
    x = np.arange(len(result.seeds))
    for ax, e in zip(axes.flat, result.endpoints):
        ax.axhline(0.0, color="grey", linestyle=":", linewidth=1)
        if e.ci_low is not None:
            ax.axhspan(e.ci_low, e.ci_high, color="#3b6ea5", alpha=0.15, label=f"{result.level:.0%} CI over seeds")
        ax.axhline(e.mean_delta, color="#3b6ea5", linewidth=1.5, label="mean Δ")
        ax.scatter(x, e.deltas, color="black", zorder=3, label="seed Δ")
        ax.set_xticks(x, [str(s) for s in result.seeds])
        ax.set_xlim(-0.6, len(result.seeds) - 0.4)
        ax.set_xlabel("seed")
        ax.set_ylabel("after - before")
        title = e.name + (" (primary)" if e.primary else "")
        if e.tested:
            title += f"\nHolm p = {_p(e.p_holm)}"
        ax.set_title(title, fontsize=9)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7, loc="best")
    fig.suptitle(f"Before: {result.before_label}  ->  after: {result.after_label}", fontsize=9)
    fig.tight_layout()
    write_with(path, lambda f: fig.savefig(f, format="png", dpi=80))
    plt.close(fig)


def write_report(result: RepeatsResult, report: str | Path) -> str:
    """Write the Markdown report and its figure (same name, .png) atomically; return the Markdown."""
    report = Path(report)
    figure = report.with_suffix(".png")
    plot_deltas(result, figure)
    markdown = render_markdown(result, figure.name)
    write_text(report, markdown)
    return markdown


# --------------------------------------------------------------------------------------------------------------
# I/O through dvc.api and command line
# --------------------------------------------------------------------------------------------------------------


def _commit(rev: str) -> tuple[str, str]:
    """(full sha, commit time as UTC ISO) of a git revision; experiments are commits under refs/exps."""
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%H %ct", rev, "--"], capture_output=True, text=True, check=True
        ).stdout.split()
        sha, seconds = out[0], int(out[1])
    except (OSError, subprocess.CalledProcessError, IndexError, ValueError):
        raise GliomilError(f"git cannot resolve the revision '{rev}' of an experiment") from None
    return sha, datetime.fromtimestamp(seconds, tz=UTC).isoformat()


def list_runs(rev: str | list[str] | None = None) -> tuple[list[Run], list[str]]:
    """The baseline commits' runs (``rev``: one or several, default HEAD) and the finished experiments derived
    from them, with their params (no metrics).

    Rows of ``dvc.api.exp_show()`` (DVC 3.x): ``typ`` is "baseline" for the ``workspace`` row (skipped) and the
    commit row (``rev`` its short sha, or its branch name, which the run's name follows with the short sha),
    "branch_commit" / "branch_base" for experiments (``Experiment`` the name, ``rev`` the short sha of the
    experiment's commit). ``State`` is "Queued", "Running", "Failed" or "Success" for queued experiments and None
    for the rest; only None and "Success" are kept. exp_show's param cells are floats and its ``Created`` is
    rounded to minutes, so params are read with ``dvc.api.params_show`` and the time from the commit. Also returns
    notes on the rows left out.
    """
    import dvc.api

    try:
        rows = dvc.api.exp_show(revs=rev)
    except Exception as exc:  # DVC raises many types outside a repository or on a broken one
        raise GliomilError(f"cannot list the experiments (dvc.api.exp_show): {type(exc).__name__}: {exc}") from None
    runs, skipped, notes = [], {}, []
    for row in rows:
        rev, typ, state = row.get("rev"), row.get("typ"), row.get("State")
        if not rev or rev == "workspace":
            continue
        if typ == "baseline":
            baseline, name = True, str(rev)
        elif typ in ("branch_commit", "branch_base"):
            if state not in (None, "Success"):
                skipped[state] = skipped.get(state, 0) + 1
                continue
            baseline, name = False, str(row.get("Experiment") or rev)
        else:
            continue
        sha, created = _commit(str(rev))
        if baseline and not sha.startswith(name):  # a branch moves: the report names the commit it read
            name = f"{name} ({sha[:7]})"
        try:
            params = read_params(sha, name=name)
            if baseline:
                read_text(CV_SUMMARY, sha, "metrics", name)  # a commit without a run's metrics is no run
        except GliomilError as exc:
            if baseline:
                notes.append(f"Not used: the baseline commit {name} has no readable run ({exc}), left out")
                continue
            raise
        runs.append(Run(name, params, rev=sha, created=created, baseline=baseline))
    if skipped:
        counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(skipped.items()))
        notes.append(f"Not used: experiments not finished, left out: {counts}")
    return runs, notes


def read_metrics(run: Run) -> Run:
    """The run with its per-fold held-out metrics, CV summary and fold sizes, read through dvc.api."""
    fold_files = [paths.fold_eval_metrics(k).as_posix() for k in run.params["folds"]]
    folds = [read_json(path, run.rev, "metrics", run.name) for path in fold_files]
    summary = read_json(CV_SUMMARY, run.rev, "metrics", run.name)
    split = read_json(SPLIT_METRICS, run.rev, "metrics", run.name)
    try:
        table = read_csv(EXTERNAL_PREDICTIONS, run.rev, "external-site predictions", run.name)
        external = table[["subject_id", "label", "probability"]]
    except (GliomilError, KeyError):  # a run without an external site (or before it existed)
        external = None
    return replace(run, folds=folds, summary=summary, split=split, external=external)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Before -> after across repeated cross-validation: two configurations of a seed sweep "
        "(dvc exp run --queue -S seed=...), paired by seed."
    )
    parser.add_argument("--before", metavar="PARAM=VALUE[,...]", help="params of the before configuration")
    parser.add_argument("--after", metavar="PARAM=VALUE[,...]", help="params of the after configuration")
    parser.add_argument(
        "--report", type=Path, default=DEFAULT_REPORT, help=f"Markdown report (default {DEFAULT_REPORT})"
    )
    parser.add_argument(
        "--rev", action="append", help="a commit whose experiments to include (repeat for several; default HEAD)"
    )
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="PARAM",
        help="a param left out of the configurations, e.g. one added between the runs that changes no result",
    )
    parser.add_argument(
        "--absent",
        metavar="PARAM=VALUE[,...]",
        help="the value a param had in runs made before it existed (its default, which reproduces them)",
    )
    parser.add_argument("--alpha", type=float, default=ALPHA, help="family-wise error rate for Holm (default 0.05)")
    parser.add_argument("--level", type=float, default=LEVEL, help="confidence level of the intervals (default 0.95)")
    args = parser.parse_args(argv)
    if not 0.0 < args.alpha < 1.0 or not 0.0 < args.level < 1.0:
        raise GliomilError("--alpha and --level must lie in (0, 1)")
    before = None if args.before is None else parse_spec(args.before)
    after = None if args.after is None else parse_spec(args.after)
    if SEED in args.ignore:
        raise GliomilError("--ignore seed: the seed is what pairs the runs")
    runs, notes = list_runs(args.rev)
    if args.absent:
        absent = parse_spec(args.absent)
        runs = [replace(run, params=with_absent(run.params, absent)) for run in runs]
        notes = [*notes, "Where a run lacks a param, its value from --absent: " + args.absent]
    if args.ignore:
        runs = [replace(run, params=without(run.params, args.ignore)) for run in runs]
        notes = [*notes, "Not used: left out of the configurations (--ignore): " + ", ".join(args.ignore)]
    selection = replace(choose_runs(runs, before, after), notes=notes)
    loaded = {}
    pairs = []
    for pair in selection.pairs:
        for run in (pair.before, pair.after):
            if run.name not in loaded:
                loaded[run.name] = read_metrics(run)
        pairs.append(SeedPair(pair.seed, loaded[pair.before.name], loaded[pair.after.name]))
    result = analyse(replace(selection, pairs=pairs), args.alpha, args.level)
    markdown = write_report(result, args.report)
    print(markdown, end="")
    print(f"\nwrote {args.report} and {args.report.with_suffix('.png')}")


if __name__ == "__main__":
    run_command(lambda: main(sys.argv[1:]))
