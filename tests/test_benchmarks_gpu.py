"""benchmarks/gpu_benchmark.py end to end at a tiny size, so that the GPU benchmark cannot rot on a CPU-only
machine (it runs on CUDA where there is one, as the command does)."""

import importlib.util
import json
import math
import sys

import pytest
import torch
from conftest import REPO

from gliomil import params as P


@pytest.fixture
def benchmark(monkeypatch):
    """benchmarks/gpu_benchmark.py as a module (registered while the test runs: its dataclasses need that)."""
    spec = importlib.util.spec_from_file_location("gpu_benchmark", REPO / "benchmarks" / "gpu_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_benchmark_runs_and_reports_at_a_tiny_size(benchmark, tmp_path, capsys, monkeypatch):
    trained, scored = [], []  # the models the timed epochs train and the scoring rounds score

    def train_epoch(model, *args, **kwargs):
        trained.append(model)
        return real_train_epoch(model, *args, **kwargs)

    def score_bags(model, *args, **kwargs):
        scored.append(model)
        return real_score_bags(model, *args, **kwargs)

    real_train_epoch, real_score_bags = benchmark.train_epoch, benchmark.score_bags
    monkeypatch.setattr(benchmark, "train_epoch", train_epoch)
    monkeypatch.setattr(benchmark, "score_bags", score_bags)
    argv = ["--patients", "3", "--epochs", "2", "--steps", "2", "--image-size", "16", "--width", "4"]
    argv += ["--shape", "32", "32", "24", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "gpu.json")]
    result = benchmark.main(argv)
    printed = capsys.readouterr().out
    assert json.loads((tmp_path / "gpu.json").read_text()) == result

    measured, projected = result["measured"], result["projected"]
    assert result["data"] | {"synthesis_s": None} == {
        "patients": 3,
        "train_patients": 2,
        "shape": "32x32x24",
        "image_size": 16,
        "slices_per_patient": result["data"]["slices_per_patient"],
        "synthesis_s": None,
        "preprocess_s_per_patient": result["data"]["preprocess_s_per_patient"],
    }
    assert result["train"] == {
        "batch_size": 4,
        "bag_size": 32,
        "width": 4,
        "depth": 4,
        "amp": True,
        "eval_chunk": 256,
    }  # params.yaml's train settings, --width overriding the model width
    assert P.value(P.load_params(REPO / "params.yaml"), "train.model.width") != 4  # so the override shows
    # --width reaches the model: 4 channels in the first block, 4 * 2**(depth - 1) = 32 features
    assert trained and scored and {id(m) for m in trained} == {id(m) for m in scored}
    encoder = trained[0].encoder
    assert encoder.features[0].out_channels == 4 and encoder.out_features == 32
    assert trained[0].aggregator.in_features == 32
    assert "model: width 4, depth 4;" in printed
    assert (measured["epoch_patients"], measured["steps_per_epoch"], measured["val_patients"]) == (8, 2, 1)
    assert len(measured["train_epoch_seconds"]) == len(measured["val_seconds"]) == 2
    for key in ("train_slices_per_s", "val_slices_per_s"):
        assert math.isfinite(measured[key]) and measured[key] > 0
    # a BraTS 2018 fold: 285 patients, 57 test, 20% of the other 228 for inner validation
    assert projected["fold_patients"] == {"train": 182, "inner_val": 46, "test": 57}
    assert projected["study_s"] == pytest.approx(5 * projected["fold_s"])
    assert projected["fold_s"] == pytest.approx(
        60 * (projected["train_epoch_s"] + projected["val_epoch_s"]) + projected["test_scoring_s"]
    )
    gpu = torch.cuda.is_available()
    assert result["device_type"] == ("cuda" if gpu else "cpu")
    assert (measured["train_peak_memory"]["gib"] or 0) > 0 or not gpu
    for line in ("| training |", "| the study: 5 folds x 60 epochs |", "| peak memory, training |", "precision"):
        assert line in printed

    again = benchmark.main(argv)  # the synthetic patients are cached
    assert again["data"]["synthesis_s"] == 0.0 and result["data"]["synthesis_s"] > 0
