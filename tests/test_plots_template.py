"""The committed `dvc plots` template (.dvc/plots/offline.html): present in every clone, byte-exact, and what
gliomil.runtime.offline_plots generates from the vl-convert-python pinned in requirements.txt.

A clone installed with plain `pip install -e .` has no vl-convert (only requirements.txt pins it), and DVC reads
the template file itself, so `dvc plots show` works there only because the file is committed.
"""

from __future__ import annotations

import re
import shutil
from importlib import metadata

import pytest
from conftest import DVC, REPO, run_tool

from gliomil.runtime import offline_plots

COMMITTED = REPO / offline_plots.TEMPLATE
REMOTE_SCRIPT_OR_LINK = re.compile(r"<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", re.I)


def pinned_vl_convert() -> str:
    pins = re.findall(r"^vl-convert-python==(\S+)", (REPO / "requirements.txt").read_text(), re.M)
    assert len(pins) == 1, "requirements.txt must pin vl-convert-python exactly once"
    return pins[0]


def test_dvc_config_names_the_committed_template_and_git_keeps_its_bytes():
    config = (REPO / ".dvc/config").read_text()
    assert re.search(r"^\s*html_template\s*=\s*plots/offline\.html\s*$", config, re.M)
    ignored = run_tool(["git", "check-ignore", "-q", "--no-index", str(offline_plots.TEMPLATE)], REPO, check=False)
    assert ignored.returncode == 1, "the template is committed: it must not be gitignored"
    attributes = run_tool(["git", "check-attr", "text", "diff", "--", str(offline_plots.TEMPLATE)], REPO).stdout
    assert "text: unset" in attributes and "diff: unset" in attributes  # no CRLF conversion, no minified diffs


def test_committed_template_is_dvcs_page_with_the_pinned_bundle_inlined():
    html = COMMITTED.read_text(encoding="utf-8")
    assert html.splitlines()[4].strip() == offline_plots.marker(pinned_vl_convert())
    assert html.count("{plot_divs}") == 1 and html.count("{refresh_tag}") == 1 and "{scripts}" not in html
    assert "window.vegaEmbed=" in html and not REMOTE_SCRIPT_OR_LINK.search(html)
    assert b"\r" not in COMMITTED.read_bytes()
    assert 500_000 < COMMITTED.stat().st_size < 2_000_000  # 0.9 MB with vl-convert 1.9: look again if it grows


def test_committed_template_is_exactly_what_the_pinned_vl_convert_generates():
    pytest.importorskip("vl_convert", reason="vl-convert-python is in requirements.txt, not in the package")
    installed, pinned = metadata.version("vl-convert-python"), pinned_vl_convert()
    if installed != pinned:
        pytest.skip(f"vl-convert-python {installed} is installed, requirements.txt pins {pinned}")
    # The committed file came from another process (and machine): equal bytes also show the output is stable.
    assert COMMITTED.read_bytes() == offline_plots.expected_template(), (
        "run `python -m gliomil.runtime.offline_plots` and commit .dvc/plots/offline.html"
    )


@pytest.fixture
def tiny_bundle(monkeypatch) -> bytes:
    """A stand-in bundle, so the write/check logic runs without building the real one (seconds)."""
    monkeypatch.setattr(offline_plots, "javascript_bundle", lambda: "window.vegaEmbed=function(){};")
    monkeypatch.setattr(offline_plots, "vl_convert_version", lambda: "9.9.9")
    return offline_plots.expected_template()


def test_check_reports_a_changed_template_and_a_rewrite_restores_its_bytes(tiny_bundle, tmp_path, monkeypatch, capsys):
    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    path = tmp_path / offline_plots.TEMPLATE
    assert offline_plots.main(["--check"]) == 1 and "is missing" in capsys.readouterr().err
    assert offline_plots.main([]) == 0 and path.read_bytes() == tiny_bundle
    assert offline_plots.main(["--check"]) == 0 and "up to date" in capsys.readouterr().out
    mtime = path.stat().st_mtime_ns
    assert not offline_plots.ensure_template(path) and path.stat().st_mtime_ns == mtime

    path.write_bytes(tiny_bundle.replace(b"\n", b"\r\n"))  # what core.autocrlf would do without .gitattributes
    assert offline_plots.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "differs from what vl-convert-python 9.9.9 generates" in err
    assert offline_plots.ensure_template(path) and path.read_bytes() == tiny_bundle
    assert offline_plots.main(["--bogus"]) == 2


CSV = "fold,epoch,auc\n" + "".join(f"{f},{e},{0.5 + 0.1 * e - 0.05 * f:.2f}\n" for f in (0, 1) for e in (1, 2, 3))
DVC_YAML = """\
plots:
  - AUC per fold:
      template: fold_lines
      x: epoch
      y:
        curve.csv: auc
  - curve.csv:
      x: epoch
      y: auc
"""


def test_dvc_plots_show_in_a_fresh_clone_inlines_vega_with_no_cdn(tmp_path):
    """Nothing generated: the clone has only what git holds, and `dvc plots show` needs no vl-convert."""
    origin = tmp_path / "origin"
    origin.mkdir()
    run_tool(["git", "init", "-q"], origin)
    run_tool([DVC, "init", "-q"], origin)
    shutil.copy(REPO / ".dvc/config", origin / ".dvc/config")
    shutil.copytree(REPO / ".dvc/plots", origin / ".dvc/plots")
    (origin / "curve.csv").write_text(CSV)
    (origin / "dvc.yaml").write_text(DVC_YAML)
    run_tool(["git", "add", "-A"], origin)
    run_tool(["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci", "commit", "-qm", "plots"], origin)

    clone = tmp_path / "clone"
    run_tool(["git", "-c", "core.autocrlf=true", "clone", "-q", str(origin), str(clone)], tmp_path)
    assert (clone / offline_plots.TEMPLATE).read_bytes() == COMMITTED.read_bytes()
    run_tool([DVC, "plots", "show"], clone)
    html = (clone / "dvc_plots/index.html").read_text(encoding="utf-8")
    assert "window.vegaEmbed=" in html and offline_plots.marker(pinned_vl_convert()) in html
    assert "vegaEmbed('#AUC_per_fold'" in html and "vegaEmbed('#curve_csv'" in html
    assert not REMOTE_SCRIPT_OR_LINK.search(html) and "cdn." not in html
