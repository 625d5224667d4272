"""dvc.yaml cannot drift from the code: code deps, params and fold paths are checked against the scripts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from gliomil import paths
from gliomil.params import SPEC

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "gliomil"


def _module_file(name: str) -> Path | None:
    """The file of a dotted gliomil module name ("gliomil.data.bags" -> src/gliomil/data/bags.py), if it is one."""
    parts = name.split(".")[1:]
    for candidate in (PACKAGE.joinpath(*parts).with_suffix(".py"), PACKAGE.joinpath(*parts, "__init__.py")):
        if parts and candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path) -> set[str]:
    """Dotted gliomil modules imported anywhere in a file (function-level imports included: they run too).

    ``from gliomil.x import y`` counts ``gliomil.x.y`` when y is a module and ``gliomil.x`` otherwise."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("gliomil.")}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (the package imports absolutely)"
            if node.module and (node.module == "gliomil" or node.module.startswith("gliomil.")):
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    names.add(child if _module_file(child) else node.module)
    return {n for n in names if n != "gliomil" and _module_file(n)}


def _with_packages(module: str) -> set[str]:
    """A module and every package above it: importing gliomil.data.bags runs gliomil/data/__init__.py too."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(2, len(parts) + 1)}


def import_closure(script: Path) -> set[str]:
    """Repository-relative paths of the package modules ``script`` needs, every ``__init__.py`` included."""
    seen: set[str] = set()
    todo = list(_imported_modules(script))
    while todo:
        name = todo.pop()
        for module in _with_packages(name) - seen:
            seen.add(module)
            todo += _imported_modules(_module_file(module))
    files = {str(_module_file(n).relative_to(REPO)) for n in seen}
    return files | ({"src/gliomil/__init__.py"} if seen else set())


DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]


def _stage(name: str) -> dict:
    """A stage's definition, with a foreach stage's ``do`` body for fold 0."""
    stage = STAGES[name]
    return yaml.safe_load(yaml.safe_dump(stage["do"]).replace("${item}", "0")) if "foreach" in stage else stage


def _script(stage: dict) -> Path:
    return REPO / stage["cmd"].split()[1]


def _paths(entries) -> set[str]:
    return {next(iter(e)) if isinstance(e, dict) else e for e in entries}


def _params_read(script: Path) -> set[str]:
    """The params keys (or sections) a stage script reads: the string arguments of its ``P.value`` and
    ``P.section`` calls, and the strings of its module-level tuples of keys (looked up in a loop)."""
    tree = ast.parse(script.read_text())
    strings = [
        arg
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("value", "section")
        for arg in node.args
    ]
    strings += [
        item
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Tuple)
        for item in node.value.elts
    ]
    constants = {s.value for s in strings if isinstance(s, ast.Constant) and isinstance(s.value, str)}
    return {c for c in constants if c in SPEC or any(key.startswith(c + ".") for key in SPEC)}


def _covers(declared: str, key: str) -> bool:
    return key == declared or key.startswith(declared + ".") or declared.startswith(key + ".")


@pytest.mark.parametrize("name", sorted(STAGES))
def test_code_deps_are_exactly_the_scripts_import_closure(name):
    stage = _stage(name)
    listed = {p for p in _paths(stage["deps"]) if p.startswith("src/")}
    assert str(_script(stage).relative_to(REPO)) in _paths(stage["deps"])
    assert listed == import_closure(_script(stage)), f"{name}: deps differ from the modules its script imports"


READS_NO_PARAMS = {"fingerprint"}


@pytest.mark.parametrize("name", sorted(set(STAGES) - {"check_params"}))
def test_every_stage_declares_exactly_the_params_it_reads(name):
    stage = _stage(name)
    declared, read = set(stage.get("params", [])), _params_read(_script(stage))
    if name in READS_NO_PARAMS:  # its inputs are files only
        assert not read and not declared
        return
    assert read, f"{name} reads no params?"
    assert all(any(_covers(d, key) for d in declared) for key in read), f"{name} reads undeclared params: {read}"
    assert all(any(_covers(d, key) for key in read) for d in declared), f"{name} declares params it never reads"


def test_check_params_tracks_the_whole_file_and_every_stage_waits_for_it():
    assert STAGES["check_params"]["params"] == [{"params.yaml": None}]
    assert _paths(STAGES["check_params"]["outs"]) == {str(paths.PARAMS_CHECKED)}
    for name in set(STAGES) - {"check_params"}:
        assert str(paths.PARAMS_CHECKED) in _paths(_stage(name)["deps"]), name


def test_fold_paths_are_the_ones_the_package_spells():
    train, evaluate = _stage("train"), _stage("evaluate")
    assert _paths(train["outs"]) == {
        str(p(0)) for p in (paths.fold_model, paths.fold_train_figures, paths.fold_train_log, paths.fold_train_metrics)
    }
    assert _paths(evaluate["outs"]) == {str(paths.fold_eval_metrics(0)), str(paths.fold_eval_plots(0))}
    assert {str(paths.fold_split(0)), str(paths.PREPROCESSED)} <= _paths(train["deps"])
    assert {str(paths.fold_split(0)), str(paths.fold_model(0))} <= _paths(evaluate["deps"])


def test_import_closure_follows_imports_inside_the_package(tmp_path):
    script = tmp_path / "stage.py"
    script.write_text("from gliomil.evaluation.scoring import score_bags\nfrom gliomil.runtime import interrupts\n")
    closure = import_closure(script)
    assert {
        "src/gliomil/evaluation/scoring.py",
        "src/gliomil/evaluation/__init__.py",
        "src/gliomil/model/dsmil.py",
        "src/gliomil/model/__init__.py",
        "src/gliomil/data/bags.py",
        "src/gliomil/data/slices.py",
        "src/gliomil/runtime/interrupts.py",
        "src/gliomil/runtime/__init__.py",
        "src/gliomil/__init__.py",
    } <= closure
    assert "src/gliomil/training/loop.py" not in closure
    assert "src/gliomil/data/preprocess.py" not in closure  # the slice store is read without the maths


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_imports_its_own_checkouts_code_first(name):
    stage = _stage(name)
    first = next(n for n in ast.parse(_script(stage).read_text()).body if isinstance(n, (ast.Import, ast.ImportFrom)))
    assert isinstance(first, ast.Import) and first.names[0].name == "_src", f"{name}: first import is not _src"
    assert "stages/_src.py" in _paths(stage["deps"])


def test_src_bootstrap_beats_the_installed_package(tmp_path):
    """A copy of the repository (as `dvc queue start` makes) imports its own gliomil, not the installed one."""
    import subprocess
    import sys

    (tmp_path / "stages").mkdir()
    (tmp_path / "src/gliomil/runtime").mkdir(parents=True)
    (tmp_path / "stages/_src.py").write_text((REPO / "stages/_src.py").read_text())
    (tmp_path / "stages/probe.py").write_text("import _src\nimport gliomil\nprint(gliomil.__file__)\n")
    (tmp_path / "src/gliomil/__init__.py").write_text("")
    (tmp_path / "src/gliomil/runtime/__init__.py").write_text("")
    for module in ("runtime/interrupts.py", "errors.py"):  # what _src.py itself imports
        (tmp_path / "src/gliomil" / module).write_text((PACKAGE / module).read_text())
    probe = [sys.executable, "stages/probe.py"]
    shown = subprocess.run(probe, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == str(tmp_path / "src/gliomil/__init__.py")
