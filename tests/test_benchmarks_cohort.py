"""benchmarks/synthesize_benchmark.py and benchmarks/cohort_baseline.py end to end at a tiny size, so that the
commands behind the README's numbers on the built-in cohort (its generation time, its baseline AUC) cannot rot."""

import importlib.util

import numpy as np
import pytest
from conftest import REPO

from gliomil.synthetic.cohort import synthesize_cohort


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


def pairwise_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Share of HGG-LGG pairs with the HGG scored higher, ties one half."""
    difference = scores[labels == 1][:, None] - scores[labels == 0][None, :]
    return float(np.mean((difference > 0) + 0.5 * (difference == 0)))


def test_the_cohort_baseline_reports_its_auc_and_slice_share(tmp_path, capsys):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from gliomil.data.brats import find_subjects, load_subject

    synthesize_cohort(tmp_path / "cohort", 5, 5, (32, 32, 20), seed=3)
    baseline = load("cohort_baseline")
    result = baseline.main(["--data", str(tmp_path / "cohort"), "--repeats", "2"])
    out = capsys.readouterr().out

    # The AUCs again, by a loop of our own: per shuffle seed, stratified 5-fold out-of-fold scores of a
    # logistic regression on features standardised with the training folds' mean and (population) std.
    subjects = find_subjects(tmp_path / "cohort")
    volumes = [load_subject(s) for s in subjects]
    features = np.array([baseline.tumour_features(v.images, v.seg) for v in volumes])
    labels = np.array([s.grade == "HGG" for s in subjects], dtype=int)
    expected = []
    for seed in range(2):
        scores = np.empty(len(labels))
        for train, test in StratifiedKFold(n_splits=5, shuffle=True, random_state=seed).split(features, labels):
            mean, std = features[train].mean(axis=0), features[train].std(axis=0)
            std[std == 0] = 1.0
            model = LogisticRegression(max_iter=2000).fit((features[train] - mean) / std, labels[train])
            scores[test] = model.predict_proba((features[test] - mean) / std)[:, 1]
        expected.append(pairwise_auc(labels, scores))
    assert result["auc"] == pytest.approx(expected, abs=1e-9)

    # The share of the brain's axial slices that hold tumour, counted slice by slice.
    shares = []
    for v in volumes:
        brain = [bool((v.images[0][:, :, z] > 0).any()) for z in range(v.images.shape[3])]
        tumour = [bool((v.seg[:, :, z] > 0).any()) for z in range(v.seg.shape[2])]
        shares.append(sum(b and t for b, t in zip(brain, tumour)) / sum(brain))
    assert result["tumour_slice_share"] == pytest.approx(shares, abs=1e-12)
    assert all(0 < share < 1 for share in shares)
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
