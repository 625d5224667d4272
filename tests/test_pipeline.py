"""End to end: real `dvc repro` in a temporary git repo on a tiny synthetic cohort."""

import json
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, run_tool, tool_env

DVC = str(Path(sys.executable).parent / "dvc")
pytestmark = pytest.mark.slow


def _tiny_params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["folds"] = [0, 1, 2]
    params["synthesize"].update(n_hgg=9, n_lgg=6, shape=[32, 32, 24], workers=1)
    params["preprocess"].update(image_size=16, workers=2)
    params["split"]["inner_val_fraction"] = 0.5
    return params


def _write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture
def pipeline_repo(tmp_path) -> Path:
    """A git + DVC repo holding this project's pipeline, its code and tiny params."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "stages", "src"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, repo / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(source, repo / name)
    _write_params(repo, _tiny_params())
    run_tool(["git", "init", "-q"], repo)
    run_tool(["git", "config", "user.email", "ci@example.invalid"], repo)
    run_tool(["git", "config", "user.name", "ci"], repo)
    run_tool([DVC, "init", "-q"], repo)
    run_tool(["git", "add", "-A"], repo)
    run_tool(["git", "commit", "-qm", "pipeline"], repo)
    return repo


def _repro(repo: Path, *args) -> str:
    return run_tool([DVC, "repro", *args], repo, env=tool_env(repo / "src")).stdout


def test_dvc_repro_runs_the_data_stages_then_is_up_to_date(pipeline_repo):
    out = _repro(pipeline_repo)
    for stage in ("synthesize", "preprocess", "split"):
        assert f"Running stage '{stage}'" in out

    manifest = pd.read_csv(pipeline_repo / "data/preprocessed/manifest.csv")
    assert sorted(manifest["grade"].value_counts().items()) == [("HGG", 9), ("LGG", 6)]
    folds = [json.loads((pipeline_repo / f"data/splits/fold_{k}.json").read_text()) for k in range(3)]
    assert sorted(s for f in folds for s in f["test"]) == sorted(manifest["subject_id"])
    counts = json.loads((pipeline_repo / "metrics/split.json").read_text())
    assert set(counts) == {"fold_0", "fold_1", "fold_2"}
    assert (pipeline_repo / "dvc.lock").is_file()

    again = _repro(pipeline_repo)
    assert "Running stage" not in again
    assert "Data and pipelines are up to date." in again

    shown = run_tool([DVC, "metrics", "show"], pipeline_repo).stdout
    assert "metrics/preprocess.json" in shown and "slices_total" in shown

    # Changing a preprocess param re-runs preprocess and split, not synthesize.
    params = _tiny_params()
    params["preprocess"]["image_size"] = 12
    _write_params(pipeline_repo, params)
    changed = _repro(pipeline_repo)
    assert "Running stage 'preprocess'" in changed and "Running stage 'split'" in changed
    assert "Running stage 'synthesize'" not in changed


def test_bad_subject_fails_with_one_line_and_leaves_no_output(pipeline_repo):
    _repro(pipeline_repo, "synthesize")
    bad = next((pipeline_repo / "data/synthetic/LGG").iterdir())
    t1ce = bad / f"{bad.name}_t1ce.nii.gz"
    t1ce.chmod(0o644)
    t1ce.write_bytes(b"not a nifti file")

    result = run_tool([sys.executable, "stages/preprocess.py"], pipeline_repo,
                      env=tool_env(pipeline_repo / "src"), check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "Traceback" not in result.stderr
    assert bad.name in lines[-1] and t1ce.name in lines[-1]
    assert not (pipeline_repo / "data/preprocessed").exists()
    assert not list((pipeline_repo / "data").glob("*.partial"))

    # on_error: skip carries on and reports the subject with its reason.
    params = _tiny_params()
    params["preprocess"]["on_error"] = "skip"
    _write_params(pipeline_repo, params)
    run_tool([sys.executable, "stages/preprocess.py"], pipeline_repo, env=tool_env(pipeline_repo / "src"))
    skipped = pd.read_csv(pipeline_repo / "reports/preprocess_skipped.csv")
    assert skipped["subject_id"].tolist() == [bad.name]
    assert t1ce.name in skipped["reason"][0]
    manifest = pd.read_csv(pipeline_repo / "data/preprocessed/manifest.csv")
    assert bad.name not in set(manifest["subject_id"]) and len(manifest) == 14
