"""The package's layout is its architecture: each subpackage imports only what its docstring allows."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gliomil"
TOP_LEVEL = {"errors", "vocabulary", "paths", "nested", "params", "cli", "__init__"}

# What each subpackage may import besides itself ("top:" names a top-level module).
ALLOWED = {
    "runtime": {"top:errors"},
    "data": {"runtime", "top:errors", "top:vocabulary"},
    "synthetic": {"runtime", "top:errors", "top:vocabulary"},
    "baselines": {"data", "runtime", "top:errors", "top:vocabulary"},
    "model": {"runtime", "top:vocabulary"},
    "evaluation": {"data", "model", "runtime", "top:errors", "top:nested", "top:vocabulary"},
    "training": {"data", "model", "evaluation", "runtime", "top:errors", "top:vocabulary"},
    "serving": {"data", "model", "evaluation", "runtime", "top:errors", "top:vocabulary", "top:__init__"},
    "comparison": {"evaluation", "runtime", "top:errors", "top:nested", "top:paths", "top:vocabulary"},
    "scale": {"runtime", "top:errors", "top:params", "top:paths"},
}


def _imports(path: Path) -> set[str]:
    """The subpackages ("data") and top-level modules ("top:errors") a file imports, function bodies included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gliomil":
            names = [node.module] if node.module != "gliomil" else [f"gliomil.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "gliomil"]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if len(parts) == 1:
                continue
            if (PACKAGE / parts[1]).is_dir():
                found.add(parts[1])
            else:  # a top-level module, or a name defined in gliomil/__init__.py (code_version)
                found.add(f"top:{parts[1]}" if (PACKAGE / f"{parts[1]}.py").is_file() else "top:__init__")
    return found


SUBPACKAGES = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())


def test_every_subpackage_has_a_rule_and_every_module_a_home():
    assert set(SUBPACKAGES) == set(ALLOWED)
    loose = {p.stem for p in PACKAGE.glob("*.py")}
    assert loose == TOP_LEVEL, "a new top-level module: put it in a subpackage, or add it here on purpose"


@pytest.mark.parametrize("subpackage", SUBPACKAGES)
def test_subpackage_imports_only_what_it_may(subpackage):
    for path in sorted((PACKAGE / subpackage).glob("*.py")):
        extra = _imports(path) - ALLOWED[subpackage] - {subpackage}
        assert not extra, f"{path.relative_to(PACKAGE)} imports {sorted(extra)}, beyond what {subpackage}/ may"


@pytest.mark.parametrize("subpackage", SUBPACKAGES)
def test_subpackage_docstring_says_what_it_owns_and_may_import(subpackage):
    doc = importlib.import_module(f"gliomil.{subpackage}").__doc__
    assert doc and ("May import" in doc or "may import" in doc), subpackage
    for module in (PACKAGE / subpackage).glob("*.py"):
        if module.stem != "__init__":
            assert f"``{module.stem}``" in doc, f"gliomil.{subpackage}'s docstring does not name {module.stem}"


def test_the_layout_check_sees_a_forbidden_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from gliomil.comparison.statistics import holm\n")
    assert _imports(probe) == {"comparison"}
    assert "comparison" not in ALLOWED["training"]
