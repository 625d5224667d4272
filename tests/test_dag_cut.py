"""End to end: the pipeline's DAG is cut where the code is. Training re-runs only when training changed.

From a finished tiny run, a harmless comment appended to the comparison code (the sweep comparison, its repeats and
their verdict statistics), to the audit text or to the split algorithm must leave every `train@k` and `evaluate@k`
up to date in `dvc status`; the same comment in the training loop must change every `train@k` (the control: the
check can fail).
"""

import json
from pathlib import Path

import pytest
from conftest import dvc

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tiny_run")]

FOLDS = range(5)  # tiny_params() keeps the committed five folds
TRAIN = {f"train@{k}" for k in FOLDS}
FOLD_STAGES = TRAIN | {f"evaluate@{k}" for k in FOLDS}
COMMENT = "# a comment line: changes this file's hash, not what it does\n"

# file -> the stages `dvc status` may list after the comment: none of them a fold's training or evaluation
NOT_TRAINING = {
    "src/gliomil/comparison/compare.py": set(),
    "src/gliomil/comparison/repeats.py": set(),
    "src/gliomil/comparison/statistics.py": set(),  # the verdict statistics
    "src/gliomil/evaluation/audit.py": {"aggregate"},  # the audit text: the report is written again
    "src/gliomil/data/split.py": {"split"},  # how folds are cut: the folds are made again, read only if they change
}


def _changed(repo: Path) -> set[str]:
    """The stages `dvc status` lists as changed (its --json keys are stage names such as "train@0")."""
    return set(json.loads(dvc(repo, "status", "--json") or "{}"))


def _append_comment(repo: Path, name: str) -> None:
    path = repo / name
    text = path.read_text()
    assert text.endswith("\n"), name
    path.write_text(text + COMMENT)


def test_comparison_and_audit_edits_leave_every_fold_stage_up_to_date(tiny_run_copy):
    repo = tiny_run_copy
    assert _changed(repo) == set()  # the finished run is up to date: what follows is the edits' doing
    originals = {name: (repo / name).read_text() for name in NOT_TRAINING}

    for name, expected in NOT_TRAINING.items():  # one at a time
        _append_comment(repo, name)
        changed = _changed(repo)
        assert not changed & FOLD_STAGES, f"{name}: {sorted(changed & FOLD_STAGES)}"
        assert changed == expected, f"{name}: {sorted(changed)}"
        (repo / name).write_text(originals[name])
    assert _changed(repo) == set()

    for name in NOT_TRAINING:  # all at once
        _append_comment(repo, name)
    changed = _changed(repo)
    assert not changed & FOLD_STAGES, sorted(changed & FOLD_STAGES)
    assert "aggregate" in changed, sorted(changed)


def test_a_training_loop_edit_changes_every_train_stage(tiny_run_copy):
    """The control: the same comment where training lives re-runs every fold's training."""
    repo = tiny_run_copy
    assert _changed(repo) == set()
    _append_comment(repo, "src/gliomil/training/loop.py")
    changed = _changed(repo)
    assert TRAIN <= changed, sorted(changed)
