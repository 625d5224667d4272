"""Scoring with a trained model: precision choice, checkpoints, whole-bag scores, patient predictions."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from gliomil.data.bags import BagSet
from gliomil.evaluation.scoring import BagScores, patient_predictions, score_bags
from gliomil.model.checkpoint import load_checkpoint, save_checkpoint
from gliomil.model.mil import ModelConfig
from gliomil.runtime import device
from gliomil.runtime.device import autocast_dtype, precision_name

TINY_MODEL = ModelConfig(width=4, depth=2, prediction="both_streams")


def small_bags(sizes, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, 4, 16, 16)).astype(np.float16) for n in sizes]


@pytest.mark.parametrize("native_bf16", [True, False])
def test_autocast_choice_for_each_device_amp_setting_and_cpu(native_bf16, monkeypatch):
    """float32 without amp; float16 on CUDA whatever the CPU; bfloat16 on the CPU only where it is native."""
    monkeypatch.setattr("gliomil.runtime.device._cpu_has_native_bf16", lambda: native_bf16)
    assert autocast_dtype(torch.device("cpu"), amp=False) is None
    assert autocast_dtype(torch.device("cuda"), amp=False) is None
    assert autocast_dtype(torch.device("cuda"), amp=True) is torch.float16
    assert autocast_dtype(torch.device("cpu"), amp=True) is (torch.bfloat16 if native_bf16 else None)


@pytest.mark.parametrize(
    "cpuinfo, native",
    [
        ("flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n", True),
        ("flags\t\t: fpu sse2 avx2 amx_bf16 amx_tile amx_int8\n", True),
        ("flags\t\t: fpu sse2 avx2 avx512f avx512bw\n", False),
        (None, False),  # no /proc/cpuinfo (macOS, Windows)
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(cpuinfo, native, monkeypatch):
    from pathlib import Path

    def read_text(self, *args, **kwargs):
        assert str(self) == "/proc/cpuinfo"
        if cpuinfo is None:
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return cpuinfo

    monkeypatch.setattr(Path, "read_text", read_text)
    assert device._cpu_has_native_bf16() is native
    assert autocast_dtype(torch.device("cpu"), amp=True) is (torch.bfloat16 if native else None)


def test_precision_names():
    assert precision_name(None) == "float32"
    assert precision_name(torch.float16) == "float16 autocast"
    assert precision_name(torch.bfloat16) == "bfloat16 autocast"


def test_probability_rules_read_one_or_both_streams():
    logits = dict(
        bag_logits=np.array([0.0, np.log(3.0)]),
        max_instance_logits=np.array([np.log(3.0), -np.log(3.0)]),
        instance_logits=np.zeros(5),
        attention=np.full(5, 0.2),
        critical=np.array([0, 1]),
        bag_sizes=np.array([2, 3]),
    )
    bag_only = BagScores(**logits, prediction="bag_stream")
    both = BagScores(**logits, prediction="both_streams")
    np.testing.assert_allclose(bag_only.probabilities, [0.5, 0.75])
    np.testing.assert_allclose(both.probabilities, [(0.5 + 0.75) / 2, (0.75 + 0.25) / 2])
    assert BagScores.concat([both, both]).prediction == "both_streams"
    assert [len(a) for a in both.attention_per_bag()] == [2, 3]


def test_a_checkpoint_round_trip_gives_the_same_scores(tmp_path):
    torch.manual_seed(0)
    model = TINY_MODEL.build().eval()
    bags = small_bags([5, 1, 9])
    before = score_bags(model, bags, torch.device("cpu"), chunk=4)
    save_checkpoint(model, TINY_MODEL, tmp_path / "fold_0" / "best.pt", fold=0, epoch=3)
    loaded, record = load_checkpoint(tmp_path / "fold_0" / "best.pt")
    assert record["fold"] == 0 and record["epoch"] == 3 and record["model_config"]["prediction"] == "both_streams"
    assert not loaded.training and loaded.prediction == "both_streams"
    after = score_bags(loaded, bags, torch.device("cpu"), chunk=2)
    np.testing.assert_array_equal(after.bag_sizes, [5, 1, 9])
    np.testing.assert_allclose(after.probabilities, before.probabilities, rtol=1e-6)
    np.testing.assert_array_equal(after.critical, before.critical)
    for attention in after.attention_per_bag():
        assert attention.sum() == pytest.approx(1.0, abs=1e-5)


def test_patient_predictions_one_row_per_patient():
    scores = BagScores(
        bag_logits=np.array([2.0, -2.0, 0.1]),
        max_instance_logits=np.zeros(3),
        instance_logits=np.zeros(7),
        attention=np.array([0.1, 0.6, 0.3, 1.0, 0.2, 0.2, 0.6]),
        critical=np.array([1, 0, 2]),
        bag_sizes=np.array([3, 1, 3]),
    )
    bag_set = BagSet(
        ["H1", "L1", "H2"],
        np.array([1, 0, 1]),
        small_bags([3, 1, 3]),
        [np.zeros(3), np.zeros(1), np.zeros(3)],
        [np.zeros(3), np.zeros(1), np.zeros(3)],
    )
    table = patient_predictions(bag_set, scores, threshold=0.6, top=2)
    assert table["subject_id"].tolist() == ["H1", "L1", "H2"]
    assert table["grade"].tolist() == ["HGG", "LGG", "HGG"]
    assert table["predicted_at_0.5"].tolist() == [1, 0, 1]  # sigmoid(0.1) = 0.525
    assert table["predicted_at_youden"].tolist() == [1, 0, 0]
    assert table["critical_slice"].tolist() == [1, 0, 2]
    assert table["most_attended_slices"].tolist() == ["1 2", "0", "2 0"]  # ties: the earlier slice first


def test_set_threads_pins_torch_and_zero_keeps_the_count():
    import torch

    from gliomil.runtime.device import set_threads

    before = torch.get_num_threads()
    try:
        assert set_threads(2) == 2 == torch.get_num_threads()
        assert set_threads(0) == 2
    finally:
        torch.set_num_threads(before)


def test_make_deterministic_sets_torchs_flag_in_warn_mode_without_importing_the_compiler():
    """In a fresh process, as a stage starts: the flag torch.use_deterministic_algorithms(True, warn_only=True)
    would set, with neither torch's compiler config nor the dynamo tracer imported (2 s at every stage's start)."""
    code = (
        "import sys, torch; from gliomil.runtime.device import make_deterministic; make_deterministic(); "
        "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(), "
        "torch.get_deterministic_debug_mode(), torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, "
        "'torch._inductor.config' in sys.modules, 'torch._dynamo' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "True", "1", "True", "False", "False", "False"]
