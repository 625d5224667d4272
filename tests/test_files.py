"""gliomil.runtime.files: atomic text, JSON and folder outputs."""

import json

import pytest

from gliomil.runtime.files import atomic_directory, write_json, write_text


def test_write_text_and_json_replace_the_file_and_leave_no_temporary(tmp_path):
    path = tmp_path / "deep" / "out.json"
    write_text(path, "old")
    write_json(path, {"b": 1, "a": [1, 2]})
    assert path.read_text() == json.dumps({"b": 1, "a": [1, 2]}, indent=2) + "\n"
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]


def test_atomic_directory_replaces_the_old_folder_on_success(tmp_path):
    target = tmp_path / "out"
    (target / "stale").mkdir(parents=True)
    (target / "stale" / "old.txt").write_text("old")
    with atomic_directory(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.partial-") and list(tmp.iterdir()) == []
        assert (target / "stale" / "old.txt").exists(), "the old folder stays until the block succeeds"
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_atomic_directory_creates_missing_parents(tmp_path):
    with atomic_directory(tmp_path / "a" / "b" / "out") as tmp:
        (tmp / "x").write_text("x")
    assert (tmp_path / "a" / "b" / "out" / "x").read_text() == "x"


@pytest.mark.parametrize("existing", [True, False])
def test_atomic_directory_failure_keeps_the_old_folder_and_leaves_no_temporary(tmp_path, existing):
    target = tmp_path / "out"
    if existing:
        target.mkdir()
        (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_directory(target) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == (["out"] if existing else [])
    if existing:
        assert [p.name for p in target.iterdir()] == ["old.txt"]
