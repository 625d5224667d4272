"""Resuming a stopped fold: the state saved after every epoch continues it bit for bit (the stage-level test,
a real `dvc repro` stopped by SIGINT and run again, is in tests/test_faults_pipeline.py)."""

import signal

import pytest
from test_train import tiny_config, toy_bags

from gliomil.errors import Interrupted
from gliomil.runtime import interrupts
from gliomil.training import loop as training
from gliomil.training.loop import load_resume_state, train_fold
from gliomil.training.reporting import open_live


@pytest.fixture(scope="module")
def toy_data():
    return toy_bags(24, 16, seed=0), toy_bags(8, 8, seed=1)


def quiet(_):
    pass


def run(config, data, folder, **kwargs):
    train_set, val_set = data
    folder.mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("log", quiet)
    return train_fold(config, 0, train_set, val_set, folder / "best.pt", state_path=folder / "state.pt", **kwargs)


def assert_same_fold(a, b, folder_a, folder_b):
    assert (folder_a / "best.pt").read_bytes() == (folder_b / "best.pt").read_bytes()
    assert a.history == b.history
    assert (a.best_epoch, a.best, a.collapse_epochs, a.class_weights) == (
        b.best_epoch,
        b.best,
        b.collapse_epochs,
        b.class_weights,
    )


@pytest.fixture
def signal_flag(monkeypatch):
    """Raise the flag a SIGTERM raises (gliomil.runtime.interrupts) from inside a test; cleared afterwards."""
    monkeypatch.setattr(interrupts, "_received", None)
    return lambda: setattr(interrupts, "_received", signal.SIGTERM)


def test_saving_the_state_changes_nothing_and_a_finished_state_says_so(toy_data, tmp_path):
    config = tiny_config(epochs=3)
    train_set, val_set = toy_data
    plain = train_fold(config, 0, train_set, val_set, tmp_path / "plain" / "best.pt", log=quiet)
    saved = run(config, toy_data, tmp_path / "saved", run_key="k")
    assert_same_fold(plain, saved, tmp_path / "plain", tmp_path / "saved")
    state = load_resume_state(tmp_path / "saved" / "state.pt", "k")
    assert state["epoch"] == 3 and state["history"] == saved.history


def test_a_fold_stopped_after_an_epoch_ends_bit_identical(toy_data, tmp_path, signal_flag):
    config = tiny_config(epochs=5)
    full = run(config, toy_data, tmp_path / "full", run_key="k")

    def stop_after_epoch_2(epoch, logged, scores):
        if epoch == 2:
            signal_flag()

    with pytest.raises(Interrupted, match="in fold 0 after epoch 2"):
        run(config, toy_data, tmp_path / "cut", run_key="k", on_epoch=stop_after_epoch_2)
    interrupts._received = None
    state = load_resume_state(tmp_path / "cut" / "state.pt", "k")
    assert state["epoch"] == 2
    logs = []
    resumed = run(config, toy_data, tmp_path / "cut", run_key="k", resume=state, log=logs.append)
    assert "fold 0: resuming after epoch 2 of 5" in logs
    assert [line for line in logs if " epoch   1:" in line or " epoch   2:" in line] == []  # not trained again
    assert_same_fold(full, resumed, tmp_path / "full", tmp_path / "cut")


def test_a_fold_stopped_inside_an_epoch_redoes_that_epoch_bit_identical(toy_data, tmp_path, signal_flag, monkeypatch):
    config = tiny_config(epochs=4)
    full = run(config, toy_data, tmp_path / "full", run_key="k")
    steps = {"n": 0}
    real_step = training.train_step

    def stop_at_step_13(*args, **kwargs):  # 10 steps per epoch: the third step of epoch 2
        steps["n"] += 1
        if steps["n"] == 13:
            signal_flag()
        return real_step(*args, **kwargs)

    monkeypatch.setattr(training, "train_step", stop_at_step_13)
    with pytest.raises(Interrupted, match="during a training step of epoch 2"):
        run(config, toy_data, tmp_path / "cut", run_key="k")
    monkeypatch.setattr(training, "train_step", real_step)
    interrupts._received = None
    state = load_resume_state(tmp_path / "cut" / "state.pt", "k")
    assert state["epoch"] == 1
    resumed = run(config, toy_data, tmp_path / "cut", run_key="k", resume=state)
    assert_same_fold(full, resumed, tmp_path / "full", tmp_path / "cut")


def test_a_fold_that_stopped_early_resumes_to_the_same_end(toy_data, tmp_path):
    config = tiny_config(epochs=8, patience=1, lr=3e-2)
    full = run(config, toy_data, tmp_path / "full", run_key="k")
    assert len(full.history) < 8  # it did stop early
    state = load_resume_state(tmp_path / "full" / "state.pt", "k")
    again = run(config, toy_data, tmp_path / "full", run_key="k", resume=state)
    assert again.history == full.history and again.best_epoch == full.best_epoch


def test_a_state_of_other_inputs_or_a_torn_one_is_not_used(toy_data, tmp_path):
    run(tiny_config(epochs=1), toy_data, tmp_path, run_key="old")
    logs = []
    assert load_resume_state(tmp_path / "state.pt", "new", log=logs.append) is None
    assert logs == [
        f"{tmp_path}/state.pt: not resuming: it was saved by a run of other params, data, code, threads or device; "
        "training starts from epoch 1"
    ]
    (tmp_path / "state.pt").write_bytes((tmp_path / "state.pt").read_bytes()[:1000])
    logs.clear()
    assert load_resume_state(tmp_path / "state.pt", "old", log=logs.append) is None
    assert len(logs) == 1 and "not resuming: it cannot be read" in logs[0]
    assert load_resume_state(tmp_path / "absent.pt", "old") is None


def test_dvclive_continues_as_if_never_stopped(tmp_path):
    def log_epochs(live, values):
        for value in values:
            live.log_metric("train/loss", value)
            live.log_metric("val/auc", 1 - value)
            live.next_step()

    values = [0.9, 0.7, 0.6, 0.5]
    whole = open_live(tmp_path / "whole")
    log_epochs(whole, values)
    whole.end()

    cut = open_live(tmp_path / "cut")
    log_epochs(cut, values[:3])  # epoch 3 was logged, but the run was killed before its state was saved
    resumed = open_live(tmp_path / "cut", epochs_done=2)
    log_epochs(resumed, values[2:])
    resumed.end()
    for name in ("metrics.json", "plots/metrics/train/loss.tsv", "plots/metrics/val/auc.tsv"):
        assert (tmp_path / "cut" / name).read_text() == (tmp_path / "whole" / name).read_text(), name
