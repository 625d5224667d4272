"""benchmarks/synthesize_benchmark.py and benchmarks/cohort_baseline.py end to end at a tiny size, so that the
commands behind the README's numbers on the built-in cohort (its generation time, its baseline AUC) cannot rot."""

import importlib.util

import numpy as np
from conftest import REPO

from gliomil.synthetic import synthesize_cohort


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_synthesize_benchmark_times_a_tiny_cohort(capsys):
    benchmark = load("synthesize_benchmark")
    argv = ["--params", str(REPO / "params.yaml"), "--n-hgg", "2", "--n-lgg", "1", "--workers", "1"]
    result = benchmark.main([*argv, "--subjects", "2", "--real-size", "0"])
    out = capsys.readouterr().out
    assert result["cohort"]["subjects"] == 3 and result["cohort"]["seconds"] > 0
    assert result["template"]["template"] > 0 and result["subject"]["generate"] > 0 and "real_size" not in result
    assert "| cohort: 3 subjects at 96x96x64, 1 worker(s), files included |" in out
    assert "the one-minute target" in out.splitlines()[-1]


def test_the_cohort_baseline_reports_its_auc_and_slice_share(tmp_path, capsys):
    synthesize_cohort(tmp_path / "cohort", 5, 5, (32, 32, 20), seed=3)
    result = load("cohort_baseline").main(["--data", str(tmp_path / "cohort"), "--repeats", "2"])
    out = capsys.readouterr().out
    assert len(result["auc"]) == 2 and all(0 <= auc <= 1 for auc in result["auc"])
    shares = np.array(result["tumour_slice_share"])
    assert len(shares) == 10 and ((shares > 0) & (shares < 1)).all()
    assert "10 subjects (5 HGG)" in out and "5-fold CV AUC over 2 shuffles" in out


def test_tumour_features_by_hand():
    """Two-voxel tumour in a four-voxel brain, every modality the same image: the features as computed by hand."""
    image = np.array([1.0, 2.0, 3.0, 6.0]).reshape(4, 1, 1)
    images = np.stack([image] * 4)
    seg = np.array([0, 0, 1, 4], dtype=np.uint8).reshape(4, 1, 1)
    features = load("cohort_baseline").tumour_features(images, seg)
    z = (np.array([3.0, 6.0]) - 3.0) / np.std([1.0, 2.0, 3.0, 6.0])  # brain mean 3, population std
    expected_modality = [z.mean(), z.std(), *np.percentile(z, [10, 50, 90])]
    np.testing.assert_allclose(features[:5], expected_modality)
    np.testing.assert_allclose(features[20:], [0.5, 0.0, 0.5, np.log(2)])
