"""Before -> after across repeats: hand-built runs of 3 seeds x 5 folds x 2 configurations, no DVC."""

import copy
import math

import numpy as np
import pytest
from scipy import stats as sps

from gliomil.comparison import repeats
from gliomil.comparison import statistics as stats
from gliomil.comparison.repeats import Run, choose_runs, compare_runs, matches, parse_spec, write_report
from gliomil.errors import GliomilError

FOLDS = [0, 1, 2, 3, 4]
SEEDS = [1, 2, 3]
BEFORE = {"label_smoothing": 0.1, "use_class_weights": False}
AFTER = {"label_smoothing": 0.2, "use_class_weights": True}
# Every fold: 4 + 2 training, 4 + 3 inner-validation and 2 + 1 held-out patients.
SPLIT = {
    f"fold_{k}": dict(train_hgg=4, train_lgg=2, inner_val_hgg=4, inner_val_lgg=3, test_hgg=2, test_lgg=1) for k in FOLDS
}
N_TRAIN, N_TEST = 13, 3
FOLD_KEYS = {  # endpoint -> where its value sits in a fold's metrics
    "held-out AUC": ("auc",),
    "balanced accuracy at 0.5": ("at_0.5", "balanced_accuracy"),
    "HGG recall at 0.5": ("at_0.5", "sensitivity"),
    "LGG recall at 0.5": ("at_0.5", "specificity"),
}


def params(seed: int, config: dict) -> dict:
    return {"seed": seed, **config, "folds": list(FOLDS), "train": {"epochs": 2, "lr": 0.001}}


def metrics(rng) -> tuple[list[dict], dict]:
    folds = []
    for k in FOLDS:
        sensitivity, specificity = rng.choice([0.0, 0.5, 1.0]), rng.choice([0.0, 1.0])
        folds.append(
            {
                "fold": k,
                "auc": float(rng.uniform(0.4, 1.0)),
                "at_0.5": {
                    "balanced_accuracy": (sensitivity + specificity) / 2,
                    "sensitivity": float(sensitivity),
                    "specificity": float(specificity),
                },
            }
        )
    summary = {"pooled": {"auc": float(rng.uniform(0.4, 1.0))}, "pooled_inner_val": {"auc": float(rng.uniform(0.4, 1))}}
    return folds, summary


def run(name: str, seed: int, config: dict, rng, created: str = "2026-01-01T00:00:00", baseline=False) -> Run:
    folds, summary = metrics(rng)
    return Run(name, params(seed, config), folds, summary, SPLIT, rev=name, created=created, baseline=baseline)


@pytest.fixture
def runs() -> list[Run]:
    rng = np.random.default_rng(0)
    out = [run(f"before-{s}", s, BEFORE, rng) for s in SEEDS]
    return out + [run(f"after-{s}", s, AFTER, rng) for s in SEEDS]


@pytest.fixture
def shifted_runs() -> list[Run]:
    """After = before plus a noisy improvement of every per-fold endpoint: p-values from 0.05 to 0.5, so that
    Holm's multipliers 4, 3, 2, 1 and its running maximum all show."""
    rng = np.random.default_rng(0)
    before = [run(f"before-{s}", s, BEFORE, rng) for s in SEEDS]
    after = []
    for r in before:
        folds = copy.deepcopy(r.folds)
        for fold in folds:
            fold["auc"] = float(np.clip(fold["auc"] + rng.normal(0.08, 0.05), 0, 1))
            at = fold["at_0.5"]
            at["sensitivity"] = float(np.clip(at["sensitivity"] + rng.normal(0.1, 0.3), 0, 1))
            at["specificity"] = float(np.clip(at["specificity"] + rng.normal(0.05, 0.3), 0, 1))
            at["balanced_accuracy"] = (at["sensitivity"] + at["specificity"]) / 2
        after.append(Run(f"after-{r.seed}", params(r.seed, AFTER), folds, r.summary, SPLIT))
    return before + after


def by_name(runs):
    return {r.name: r for r in runs}


def value(metric: dict, keys: tuple) -> float:
    for key in keys:
        metric = metric[key]
    return metric


def test_deltas_mean_and_ci_match_a_hand_computation(runs):
    result = compare_runs(runs, BEFORE, AFTER)
    named = by_name(runs)
    assert result.seeds == SEEDS and result.folds == FOLDS
    assert result.before_runs == ["before-1", "before-2", "before-3"] and result.after_runs[0] == "after-1"
    assert result.before_label == "label_smoothing=0.1, use_class_weights=false"
    assert result.after_label == "label_smoothing=0.2, use_class_weights=true"
    assert [e.name for e in result.endpoints][:1] == ["held-out AUC"] and result.endpoints[0].primary
    endpoints = {e.name: e for e in result.endpoints}
    for name, keys in FOLD_KEYS.items():
        before = [np.mean([value(m, keys) for m in named[f"before-{s}"].folds]) for s in SEEDS]
        after = [np.mean([value(m, keys) for m in named[f"after-{s}"].folds]) for s in SEEDS]
        deltas = np.subtract(after, before)
        e = endpoints[name]
        np.testing.assert_allclose(e.before, before)
        np.testing.assert_allclose(e.after, after)
        np.testing.assert_allclose(e.deltas, deltas, atol=1e-12)
        half = sps.t.ppf(0.975, 2) * np.std(deltas, ddof=1) / math.sqrt(3)
        assert e.mean_delta == pytest.approx(deltas.mean(), abs=1e-12)
        assert e.ci_low == pytest.approx(deltas.mean() - half) and e.ci_high == pytest.approx(deltas.mean() + half)
        assert e.signs == stats.sign_agreement(e.deltas)
    for name, keys in (
        ("pooled held-out AUC", ("pooled", "auc")),
        ("pooled inner-validation AUC", ("pooled_inner_val", "auc")),
    ):
        e = endpoints[name]
        deltas = [value(named[f"after-{s}"].summary, keys) - value(named[f"before-{s}"].summary, keys) for s in SEEDS]
        np.testing.assert_allclose(e.deltas, deltas)
        assert e.mean_delta == pytest.approx(np.mean(deltas)) and e.test is None and e.verdict is None


def holm_by_hand(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment written out: walk the p-values from the smallest, multiply the i-th (0-based)
    by m - i, never let an adjusted value fall below the one before it, cap at 1."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for i, index in enumerate(sorted(range(m), key=lambda j: p_values[j])):
        running = max(running, (m - i) * p_values[index])
        adjusted[index] = min(running, 1.0)
    return adjusted


def test_holm_by_hand_on_literal_p_values():
    # sorted 0.005, 0.01, 0.03, 0.04: x4 = 0.02, x3 = 0.03, x2 = 0.06, x1 = 0.04 -> 0.06 (monotone)
    assert holm_by_hand([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_by_hand([0.6, 0.5]) == [1.0, 1.0]


def p_as_printed(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.2g}"


@pytest.mark.parametrize("which", ["runs", "shifted_runs"])
def test_corrected_ttest_and_holm_over_the_four_per_fold_endpoints(which, request):
    runs = request.getfixturevalue(which)
    result = compare_runs(runs, BEFORE, AFTER)
    named = by_name(runs)
    assert (result.n_train, result.n_test) == (N_TRAIN, N_TEST)  # train + inner validation; held out
    tested = [e for e in result.endpoints if e.tested]
    assert [e.name for e in tested] == list(FOLD_KEYS)
    p_values = []
    for e in tested:
        differences = np.array(
            [
                value(named[f"after-{s}"].folds[k], FOLD_KEYS[e.name])
                - value(named[f"before-{s}"].folds[k], FOLD_KEYS[e.name])
                for s in SEEDS
                for k in FOLDS
            ]
        )
        # Nadeau & Bengio: t = mean / sqrt((1/n + n_test/n_train) * s2), s2 with n - 1, df = n - 1 = 14
        n = len(differences)
        mean = differences.sum() / n
        s2 = ((differences - mean) ** 2).sum() / (n - 1)
        se = math.sqrt((1 / n + N_TEST / N_TRAIN) * s2)
        t = mean / se
        p = 2 * sps.t.sf(abs(t), n - 1)
        half = sps.t.ppf(0.975, n - 1) * se
        assert (e.test.n, e.test.df) == (15, 14)
        assert e.test.mean == pytest.approx(mean, abs=1e-12) and e.test.variance == pytest.approx(s2, rel=1e-12)
        assert e.test.t == pytest.approx(t, rel=1e-9) and e.test.p == pytest.approx(p, rel=1e-9)
        assert (e.test.ci_low, e.test.ci_high) == pytest.approx((mean - half, mean + half), rel=1e-9)
        p_values.append(p)
    assert [e.p_holm for e in tested] == pytest.approx(holm_by_hand(p_values), rel=1e-9)
    if which == "shifted_runs":  # sorted p x 4, x 3, x 2, x 1, the last raised to the one before it
        assert p_values == sorted(p_values) and p_values[0] < 0.05 and p_values[-1] > 0.5
        assert [e.p_holm for e in tested] == pytest.approx(
            [4 * p_values[0], 3 * p_values[1], 2 * p_values[2], max(2 * p_values[2], p_values[3])], rel=1e-9
        )
    assert len(result.verdicts) == 4 and result.verdicts[0].startswith("Primary endpoint: ")
    primary = tested[0]
    if p_values[0] >= 1e-3:
        assert f"corrected CV t-test p = {p_as_printed(p_values[0])}" in result.verdicts[0]
    assert f"Holm-adjusted {p_as_printed(holm_by_hand(p_values)[0])}" in result.verdicts[0]
    assert "(mean dAUC " in result.verdicts[0] and primary.name == "held-out AUC"


def test_identical_configurations_give_zero_deltas_p_one_and_no_evidence(runs):
    before = [r for r in runs if r.name.startswith("before")]
    twins = [Run(f"twin-{r.seed}", params(r.seed, AFTER), r.folds, r.summary, SPLIT) for r in before]
    result = compare_runs(before + twins, BEFORE, AFTER)
    for e in result.endpoints:
        assert e.deltas == [0.0, 0.0, 0.0] and e.mean_delta == 0.0 and (e.ci_low, e.ci_high) == (0.0, 0.0)
        assert e.signs.zero == 3
        if e.tested:
            assert (e.test.p, e.p_holm) == (1.0, 1.0)
    assert len(result.verdicts) == 4
    assert all(
        v.removeprefix("Primary endpoint: ").startswith("no evidence of a difference in") for v in result.verdicts
    )
    assert "3 of 3 seeds unchanged" in result.verdicts[0]


def test_unpaired_seeds_are_listed_and_left_out(runs):
    rng = np.random.default_rng(1)
    extra = [run("after-only", 7, AFTER, rng), run("before-only", 9, BEFORE, rng)]
    result = compare_runs(runs + extra, BEFORE, AFTER)
    assert result.seeds == SEEDS
    assert result.unpaired == [(7, "after", "after-only"), (9, "before", "before-only")]
    assert result.endpoints[0].test.n == 15
    markdown = repeats.render_markdown(result)
    assert "seed 7 (after only: after-only)" in markdown and "seed 9 (before only: before-only)" in markdown
    with pytest.raises(GliomilError, match="no seed was run in both"):
        compare_runs(extra, BEFORE, AFTER)


def test_configurations_match_params_with_yaml_typing():
    spec = parse_spec("label_smoothing=0.1,use_class_weights=false,folds=[0, 1, 2, 3, 4],train.epochs=2")
    assert spec == {"label_smoothing": 0.1, "use_class_weights": False, "folds": FOLDS, "train.epochs": 2}
    assert spec["use_class_weights"] is False
    p = params(1, BEFORE)
    assert matches(p, spec) and matches(p, parse_spec("train.lr=1.0e-3"))
    assert not matches(p, parse_spec("use_class_weights=0"))  # YAML's false is not the integer 0
    assert not matches(p, parse_spec("use_class_weights=true")) and not matches(p, parse_spec("train.nope=1"))
    assert not matches(params(1, {"label_smoothing": 0, "use_class_weights": 1}), parse_spec("use_class_weights=true"))
    for bad, message in (("label_smoothing", "not PARAM=VALUE"), ("seed=1", "seed pairs the runs"), ("", "no PARAM")):
        with pytest.raises(GliomilError, match=message):
            parse_spec(bad)


def test_choosing_configurations(runs):
    rng = np.random.default_rng(2)
    with pytest.raises(GliomilError, match="no run has the param"):
        choose_runs(runs, {"label_smoting": 0.1}, AFTER)
    with pytest.raises(GliomilError, match="matches no finished run"):
        choose_runs(runs, {"label_smoothing": 0.3}, AFTER)
    with pytest.raises(GliomilError, match="same configuration"):
        choose_runs(runs, BEFORE, {"label_smoothing": 0.1})
    # One side given: the other is the only other configuration.
    assert choose_runs(runs, after=AFTER).before_label == "label_smoothing=0.1, use_class_weights=false"
    # None given: the configuration holding the baseline commit's run is after.
    committed = run("main", 1, BEFORE, rng, created="2025-12-31T00:00:00", baseline=True)
    chosen = choose_runs(runs[1:] + [committed])
    assert chosen.after_label == "label_smoothing=0.1, use_class_weights=false" and "baseline commit" in chosen.how
    assert chosen.pairs[0].after.name == "main"
    # No baseline run: the configuration run first is before.
    late = [r if r.name.startswith("before") else Run(**{**r.__dict__, "created": "2027-01-01"}) for r in runs]
    assert choose_runs(late).before_label == "label_smoothing=0.1, use_class_weights=false"
    early = [r if r.name.startswith("after") else Run(**{**r.__dict__, "created": "2027-01-01"}) for r in runs]
    assert choose_runs(early).before_label == "label_smoothing=0.2, use_class_weights=true"
    # A third configuration needs --before and --after, and a spec matching two configurations is refused.
    third = [run(f"third-{s}", s, {"label_smoothing": 0.1, "use_class_weights": True}, rng) for s in SEEDS]
    with pytest.raises(GliomilError, match="found 3 configurations"):
        choose_runs(runs + third)
    with pytest.raises(GliomilError, match="matches 2 configurations.*use_class_weights"):
        choose_runs(runs + third, {"label_smoothing": 0.1}, AFTER)
    assert choose_runs(runs + third, BEFORE, AFTER).after_label == "label_smoothing=0.2, use_class_weights=true"


def test_duplicated_seeds_use_the_newest_run(runs):
    rng = np.random.default_rng(3)
    newer = run("after-2-again", 2, AFTER, rng, created="2026-06-01T00:00:00")
    result = compare_runs(runs + [newer], BEFORE, AFTER)
    assert result.after_runs == ["after-1", "after-2-again", "after-3"]
    assert result.superseded == [(2, "after", "after-2", "after-2-again")]
    assert "after-2 superseded by after-2-again" in repeats.render_markdown(result)


def test_one_seed_has_no_interval_and_says_so(runs):
    one = [r for r in runs if r.seed == 1]
    result = compare_runs(one, BEFORE, AFTER)
    assert all(e.ci_low is None and e.ci_high is None for e in result.endpoints)
    assert result.endpoints[0].test.n == 5
    markdown = repeats.render_markdown(result)
    assert "(1 seed: no CI)" in markdown and "One seed: no interval over seeds" in markdown


def test_bad_metrics_and_folds_are_one_line_errors(runs):
    broken = by_name(runs)["after-2"]
    broken.folds[3]["auc"] = None
    with pytest.raises(GliomilError, match=r"run 'after-2': metrics/eval/fold_3.json: auc is missing"):
        compare_runs(runs, BEFORE, AFTER)
    broken.folds[3]["auc"] = 0.7
    other = Run("three-folds", {**params(1, AFTER), "folds": [0, 1, 2]}, broken.folds[:3], broken.summary, SPLIT)
    with pytest.raises(GliomilError, match="fold k cannot pair with fold k"):
        compare_runs([runs[0], other], BEFORE, AFTER)


def test_report_and_png_are_written(runs, tmp_path):
    result = compare_runs(runs, BEFORE, AFTER)
    report = tmp_path / "reports" / "audit_effect.md"
    markdown = write_report(result, report)
    assert report.read_text() == markdown
    png = tmp_path / "reports" / "audit_effect.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![Per-seed deltas (after - before) of each endpoint](audit_effect.png)" in markdown
    assert not list(report.parent.glob("*.partial"))
    assert "**Primary endpoint: held-out AUC per fold**" in markdown
    assert "| Held-out AUC, fold mean (primary) | " in markdown and "Seed 3" in markdown and "Δ seed 2" in markdown
    assert markdown.count("- Primary endpoint: ") == 1 and "anti-conservative" in markdown
    table = [line for line in markdown.splitlines() if line.startswith("| Pooled inner-validation AUC")]
    assert len(table) == 2 and "not tested" in table[1]


def test_command_line(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    light = [Run(r.name, r.params, rev=r.name, created=r.created) for r in runs]
    monkeypatch.setattr(
        repeats, "list_runs", lambda rev=None: (light, ["Not used: experiments not finished, left out: 1 queued"])
    )
    monkeypatch.setattr(repeats, "read_metrics", lambda r: by_name(runs)[r.name])
    repeats.main(["--before", "label_smoothing=0.1,use_class_weights=false", "--after", "use_class_weights=true"])
    out = capsys.readouterr().out
    assert out.startswith("# Before -> after across repeated cross-validation")
    assert "Not used: experiments not finished, left out: 1 queued." in out
    assert "wrote reports/audit_effect.md and reports/audit_effect.png" in out
    assert (tmp_path / "reports/audit_effect.md").is_file() and (tmp_path / "reports/audit_effect.png").is_file()
    with pytest.raises(GliomilError, match="matches no finished run"):
        repeats.main(["--before", "label_smoothing=0.5"])


def test_without_drops_nested_keys_and_leaves_the_input_alone():
    from gliomil.comparison.repeats import without

    params = {"seed": 1, "train": {"threads": 0, "epochs": 2}}
    assert without(params, ["train.threads", "no.such"]) == {"seed": 1, "train": {"epochs": 2}}
    assert params["train"]["threads"] == 0


def test_absent_params_take_their_default_so_older_runs_join_their_configuration():
    from gliomil.comparison.repeats import with_absent

    old = {"seed": 1, "train": {"epochs": 2}}  # made before train.model.slice_pooling existed
    new = {"seed": 2, "train": {"epochs": 2, "model": {"slice_pooling": "max"}}}
    absent = parse_spec("train.model.slice_pooling=mean")
    assert with_absent(old, absent) == {"seed": 1, "train": {"epochs": 2, "model": {"slice_pooling": "mean"}}}
    assert with_absent(new, absent) == new and "model" not in old["train"]  # a value present wins; input untouched
    assert matches(with_absent(old, absent), {"train.model.slice_pooling": "mean"})
    assert not matches(with_absent(new, absent), {"train.model.slice_pooling": "mean"})
    with pytest.raises(GliomilError, match=r"^--absent train.epochs.x: epochs is not a section of the params$"):
        with_absent(old, parse_spec("train.epochs.x=1"))


# -- the external site (secondary) ------------------------------------------------------------------------------


def external_table(asah, marker: str, noise: float = 0.0, seed: int = 0):
    import pandas as pd

    labels, markers = asah
    values = markers[marker] + np.random.default_rng(seed).normal(0, noise, len(labels))
    return pd.DataFrame(
        {"subject_id": [f"E{i:03d}" for i in range(len(labels))], "label": labels, "probability": values}
    )


def test_the_external_site_is_paired_by_patient_per_seed_with_delong_and_over_seeds_with_t(runs, asah):
    from dataclasses import replace

    noise = {1: 0.0, 2: 0.5, 3: 1.0}
    with_external = []
    for r in runs:
        marker = "s100b" if r.name.startswith("before") else "wfns"
        table = external_table(asah, marker, noise[r.seed] if marker == "wfns" else 0.0, seed=r.seed)
        with_external.append(replace(r, external=table.sample(frac=1.0, random_state=r.seed)))  # rows reordered
    result = compare_runs(with_external)
    x = result.external
    assert x.patients == 113
    # seed 1: after = wfns, before = s100b exactly: pROC's roc.test(wfns, s100b) p = 0.0271757822291882
    assert x.delong_p[0] == pytest.approx(0.0271757822291882, abs=1e-6)
    assert x.deltas[0] == pytest.approx(0.823678861788618 - 0.731368563685637, abs=1e-9)
    deltas = np.array(x.deltas)
    half = sps.t.ppf(0.975, 2) * deltas.std(ddof=1) / math.sqrt(3)
    assert (x.ci_low, x.ci_high) == pytest.approx((deltas.mean() - half, deltas.mean() + half))
    line = next(v for v in result.verdicts if v.startswith("External site"))
    assert "not in the Holm family" in line and f"p = {p_as_printed(x.delong_p[0])}" in line
    markdown = repeats.render_markdown(result)
    assert "## External site (secondary): the packaged model on the same 113 patients" in markdown


def test_runs_without_external_predictions_leave_it_out_and_other_patients_are_an_error(runs, asah):
    from dataclasses import replace

    result = compare_runs(runs)
    assert result.external is None
    assert any("external site is not compared" in w for w in result.warnings)
    table = external_table(asah, "wfns")
    mixed = [replace(r, external=table if r.name != "after-2" else table.iloc[1:]) for r in runs]
    with pytest.raises(GliomilError, match="seed 2: runs 'before-2' and 'after-2' scored other external patients"):
        compare_runs(mixed)
