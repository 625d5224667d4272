"""CUDA: a fold trained with float16 autocast and gradient scaling is bit-identical run after run and after a
resume, and scoring on the GPU agrees with float32 scoring on the CPU.

Every test here is marked ``gpu`` and skipped (with the reason) where torch sees no CUDA device; run them on a
GPU machine with ``python3 dev.py test -m gpu``. ``train_fold`` picks the device itself
(:func:`gliomil.runtime.device.default_device`), so on a GPU machine these folds run on CUDA; the toy bags are numpy
arrays on the CPU, moved to the device step by step as in the pipeline.
"""

import os

# cuBLAS reads its workspace setting once, when CUDA first uses it: set before any test runs (pytest imports
# every test module before running the first test); gliomil.runtime.device.make_deterministic sets the same default.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import signal  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from test_train import tiny_config, toy_bags  # noqa: E402

from gliomil.errors import Interrupted  # noqa: E402
from gliomil.evaluation.scoring import score_bags
from gliomil.model.checkpoint import load_checkpoint
from gliomil.runtime import interrupts  # noqa: E402
from gliomil.runtime.device import autocast_dtype  # noqa: E402
from gliomil.training.loop import load_resume_state, train_fold  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

CUDA = torch.device("cuda")
CPU = torch.device("cpu")
EPOCHS = 4
# Scoring tolerance, float16 autocast (and TF32 convolutions in float32, cuDNN's default) against CPU float32.
# float16 keeps 11 significant bits (unit roundoff 2**-11 = 4.9e-4) and the encoder rounds each of its layers'
# inputs and outputs; the aggregator runs in float32. With the toy model's logits of size 1 to 2, CPU float16
# autocast of the same checkpoint moved logits by at most 1.0e-3 and attention by 5e-4 (bfloat16, 8 bits: 8e-3).
# 1e-2 is ten times that, yet a real fault (BatchNorm in train mode, a bag split differently, weights or
# slices of another model) moves logits by tenths. Probabilities: sigmoid's slope is at most 1/4.
LOGIT_ATOL = 1e-2
PROBABILITY_ATOL = LOGIT_ATOL / 4
ATTENTION_ATOL = 5e-3


@pytest.fixture(scope="module")
def toy_data():
    return toy_bags(24, 16, seed=0), toy_bags(8, 8, seed=1)


def amp_config():
    """The toy fold with amp on: float16 autocast and an enabled GradScaler on CUDA."""
    return tiny_config(epochs=EPOCHS, amp=True)


def run(data, folder, **kwargs):
    train_set, val_set = data
    folder.mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("log", lambda _: None)
    return train_fold(
        amp_config(), 0, train_set, val_set, folder / "best.pt", state_path=folder / "state.pt", run_key="k", **kwargs
    )


@pytest.fixture(scope="module")
def cuda_fold(toy_data, tmp_path_factory):
    """One uninterrupted CUDA fold: (result, its folder, its log lines, the determinism warnings it raised)."""
    folder = tmp_path_factory.mktemp("cuda_fold")
    logs = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(toy_data, folder, log=logs.append)
    nondeterministic = [str(w.message) for w in caught if "deterministic" in str(w.message)]
    return result, folder, logs, nondeterministic


def assert_same_fold(a, b, folder_a, folder_b, hint=""):
    assert (folder_a / "best.pt").read_bytes() == (folder_b / "best.pt").read_bytes(), f"checkpoints differ {hint}"
    assert a.history == b.history, hint
    assert (a.best_epoch, a.best, a.collapse_epochs, a.class_weights) == (
        b.best_epoch,
        b.best,
        b.collapse_epochs,
        b.class_weights,
    ), hint


def test_a_cuda_fold_with_float16_autocast_is_bit_identical_run_after_run(cuda_fold, toy_data, tmp_path):
    first, folder, logs, nondeterministic = cuda_fold
    assert "fold 0: device cuda, precision float16 autocast" in logs
    state = load_resume_state(folder / "state.pt", "k")
    assert state["scaler"]["scale"] > 0  # an enabled GradScaler saves its scale (a disabled one saves nothing)
    assert len(state["cuda_rng"]) == torch.cuda.device_count()
    assert all(np.isfinite(epoch["train/loss"]) for epoch in first.history)
    weights = torch.load(folder / "best.pt", weights_only=True)["model"]
    assert {t.device.type for t in weights.values()} == {"cuda"}

    second = run(toy_data, tmp_path / "again")  # same file name in another folder: torch.save records the stem
    assert_same_fold(
        first, second, folder, tmp_path / "again", hint=f"ops without a deterministic CUDA kernel: {nondeterministic}"
    )


@pytest.fixture
def signal_flag(monkeypatch):
    """Raise the flag a SIGTERM raises (gliomil.runtime.interrupts) from inside a test; cleared afterwards."""
    monkeypatch.setattr(interrupts, "_received", None)
    return lambda: setattr(interrupts, "_received", signal.SIGTERM)


def test_a_cuda_fold_stopped_after_epoch_2_and_resumed_ends_bit_identical(cuda_fold, toy_data, tmp_path, signal_flag):
    full, full_folder, _, _ = cuda_fold

    def stop_after_epoch_2(epoch, logged, scores):
        if epoch == 2:
            signal_flag()

    with pytest.raises(Interrupted, match="in fold 0 after epoch 2"):
        run(toy_data, tmp_path, on_epoch=stop_after_epoch_2)
    interrupts._received = None
    state = load_resume_state(tmp_path / "state.pt", "k")
    assert state["epoch"] == 2 and state["scaler"]["scale"] > 0 and state["cuda_rng"]
    logs = []
    resumed = run(toy_data, tmp_path, resume=state, log=logs.append)  # restores weights, Adam, scaler, RNGs on CUDA
    assert f"fold 0: resuming after epoch 2 of {EPOCHS}" in logs
    assert "fold 0: device cuda, precision float16 autocast" in logs
    assert_same_fold(full, resumed, full_folder, tmp_path)


def bag_ranges(sizes: np.ndarray) -> list[slice]:
    ends = np.cumsum(sizes)
    return [slice(end - size, end) for size, end in zip(sizes, ends)]


@pytest.mark.parametrize("amp", [True, False], ids=["float16", "float32"])
def test_scoring_on_cuda_agrees_with_cpu_float32(cuda_fold, toy_data, amp):
    _, folder, _, _ = cuda_fold
    _, val_set = toy_data
    cpu_model, _ = load_checkpoint(folder / "best.pt", CPU)
    expected = score_bags(cpu_model, val_set.bags, CPU)  # float32 on the CPU
    cuda_model, _ = load_checkpoint(folder / "best.pt", CUDA)
    assert next(cuda_model.parameters()).device.type == "cuda"
    dtype = autocast_dtype(CUDA, amp)
    assert dtype == (torch.float16 if amp else None)
    got = score_bags(cuda_model, val_set.bags, CUDA, chunk=5, dtype=dtype)  # chunks split every bag

    assert np.array_equal(got.bag_sizes, expected.bag_sizes)
    np.testing.assert_allclose(got.instance_logits, expected.instance_logits, rtol=0, atol=LOGIT_ATOL)
    np.testing.assert_allclose(got.max_instance_logits, expected.max_instance_logits, rtol=0, atol=LOGIT_ATOL)
    # The critical slice is an argmax: two slices whose instance logits are within the rounding may swap, and
    # then that bag's attention and bag logit follow the other slice. Bags with a clear winner must agree.
    for b, part in enumerate(bag_ranges(expected.bag_sizes)):
        top_two = np.sort(expected.instance_logits[part])[-2:]
        clear = len(top_two) < 2 or top_two[1] - top_two[0] > 2 * LOGIT_ATOL
        if clear:
            assert got.critical[b] == expected.critical[b], f"bag {b}"
        if got.critical[b] == expected.critical[b]:
            np.testing.assert_allclose(got.bag_logits[b], expected.bag_logits[b], rtol=0, atol=LOGIT_ATOL)
            np.testing.assert_allclose(
                got.probabilities[b], expected.probabilities[b], rtol=0, atol=PROBABILITY_ATOL, err_msg=f"bag {b}"
            )
            np.testing.assert_allclose(
                got.attention[part], expected.attention[part], rtol=0, atol=ATTENTION_ATOL, err_msg=f"bag {b}"
            )
    assert np.mean(got.critical == expected.critical) >= 0.75  # the toy model's bags mostly have a clear winner
