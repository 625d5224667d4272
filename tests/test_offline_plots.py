"""`dvc plots show` / `dvc plots diff` pages render with no network (gliomil.runtime.offline_plots).

The end-to-end tests open DVC's pages in headless Chromium with every host unresolvable and a dead proxy, and
count the charts Vega drew; the stock DVC page, which loads Vega from a CDN, draws none there.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from configobj import ConfigObj
from conftest import DVC, REPO, run_tool

from gliomil.errors import GliomilError
from gliomil.runtime import offline_plots

# Hosts that appear in the bundle as plain strings, never fetched while a page renders: SVG/XML namespaces,
# Vega's $schema identifiers, the "Open in Vega Editor" menu link, and a link in a Vega-Lite warning.
NAMESPACE_AND_LINK_HOSTS = {"www.w3.org", "vega.github.io", "github.com"}
REMOTE_SCRIPT_OR_LINK = re.compile(r"<(?:script|link)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", re.I)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("template") / "offline.html"
    assert offline_plots.ensure_template(path)
    return path


def test_template_inlines_vega_and_keeps_only_dvcs_plot_placeholder(template):
    html = template.read_text()
    assert html.count("{plot_divs}") == 1 and html.count("{refresh_tag}") == 1
    assert "{scripts}" not in html  # where DVC would put its CDN <script src=...> tags
    assert not REMOTE_SCRIPT_OR_LINK.search(html) and "<script src" not in html
    assert set(re.findall(r"https?://([^/\"'\s)]+)", html)) <= NAMESPACE_AND_LINK_HOSTS
    assert "window.vegaEmbed=" in html and 500_000 < len(html) < 5_000_000


def test_template_is_rewritten_only_for_another_vl_convert(template):
    before = template.stat().st_mtime_ns
    assert not offline_plots.ensure_template(template)
    assert template.stat().st_mtime_ns == before
    html = template.read_text()
    stale = html.replace(offline_plots.marker(offline_plots.vl_convert_version()), offline_plots.marker("0.0.1"))
    template.write_text(stale)
    assert offline_plots.ensure_template(template)
    assert template.read_text() == html


def test_a_bundle_that_cannot_be_inlined_is_refused():
    for bad in ('var s = "</SCRIPT>";', "var c = '<!--';", "var p = '{plot_divs}';"):
        with pytest.raises(GliomilError, match="cannot be inlined"):
            offline_plots.render_template(bad, "1.0")


def test_committed_dvc_config_names_the_committed_template():
    config = ConfigObj(str(REPO / ".dvc/config"))
    assert REPO / ".dvc" / config["plots"]["html_template"] == REPO / offline_plots.TEMPLATE
    ignored = run_tool(["git", "check-ignore", "-q", "--no-index", str(offline_plots.TEMPLATE)], REPO, check=False)
    assert ignored.returncode == 1, "the template is committed (tests/test_plots_template.py): not gitignored"


def test_main_outside_a_dvc_repository_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert offline_plots.main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "not inside a DVC repository" in err


# -- real `dvc plots` pages in a real (network-less) browser -------------------------------------------------

CURVE_SCRIPT = """\
import yaml

scale = yaml.safe_load(open("params.yaml"))["scale"]
with open("curve.csv", "w") as f:
    f.write("fold,epoch,auc\\n")
    for fold in (0, 1):
        for epoch in range(1, 5):
            f.write(f"{fold},{epoch},{scale * epoch / 4 - 0.1 * fold:.3f}\\n")
"""

# One plot through this project's own template, one through DVC's stock `linear`.
DVC_YAML = """\
stages:
  curve:
    cmd: python curve.py
    deps: [curve.py]
    params: [scale]
    outs:
      - curve.csv:
          cache: false
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
CHART_IDS = ["AUC_per_fold", "curve_csv"]  # the div ids DVC gives the two plots


@pytest.fixture
def browser() -> str:
    """The headless browser's path, or skip: the browser checks need one (.ci/run installs Debian's)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium)")


def rendered_dom(browser: str, page: Path, profile: Path) -> str:
    """The DOM of ``page`` after its scripts ran in headless Chromium with no way to reach any host."""
    args = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=127.0.0.1:9",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=15000",
        "--dump-dom",
        page.as_uri(),
    ]
    result = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0 and "</html>" in result.stdout, result.stderr[-2000:]
    return result.stdout


def drawn_charts(dom: str) -> dict[str, list[str]]:
    """For each plot div that holds a chart Vega drew as SVG: the aria-labels of its line marks' paths."""
    charts = {}
    for div in re.split(r'(?=<div id="[^"]+" class="vega-embed)', dom)[1:]:
        chart_id = re.match(r'<div id="([^"]+)"', div).group(1)
        svg = re.search(r'<svg[^>]*class="marks".*?</svg>', div, re.S)
        if svg:
            lines = re.findall(r'<g class="mark-line role-mark[^>]*>(.*?)</g>', svg.group(0), re.S)
            charts[chart_id] = [label for g in lines for label in re.findall(r'<path aria-label="([^"]*)"[^>]*d="M', g)]
    return charts


def fold_line(charts: dict, fold: int, first_auc: float, rev: str) -> bool:
    """Whether the fold_lines chart drew fold ``fold`` of revision ``rev``, starting at ``first_auc``."""
    label = f"epoch: 1; auc: {first_auc:g}; fold: {fold}; revision: {rev};"
    return any(line.startswith(label) for line in charts["AUC_per_fold"])


def assert_no_cdn(html: str) -> None:
    assert not REMOTE_SCRIPT_OR_LINK.search(html) and "cdn." not in html


@pytest.fixture(scope="module")
def plots_repo(tmp_path_factory) -> Path:
    """A git + DVC repo with this repository's plots config and templates, a CSV plot and two commits."""
    repo = tmp_path_factory.mktemp("plots") / "repo"
    repo.mkdir()
    run_tool(["git", "init", "-q"], repo)
    run_tool(["git", "config", "user.email", "ci@example.invalid"], repo)
    run_tool(["git", "config", "user.name", "ci"], repo)
    run_tool([DVC, "init", "-q"], repo)
    shutil.copy(REPO / ".dvc/config", repo / ".dvc/config")
    shutil.copytree(REPO / ".dvc/plots", repo / ".dvc/plots")  # the committed templates, offline.html included
    run_tool([sys.executable, "-m", "gliomil.runtime.offline_plots", "--check"], repo)
    (repo / "curve.py").write_text(CURVE_SCRIPT)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    for scale in (0.8, 0.9):
        (repo / "params.yaml").write_text(f"scale: {scale}\n")
        run_tool([DVC, "repro", "-q"], repo)
        run_tool(["git", "add", "-A"], repo)
        run_tool(["git", "commit", "-qm", f"scale {scale}"], repo)
    assert not run_tool(["git", "status", "--porcelain"], repo).stdout  # the template is committed with the rest
    return repo


@pytest.mark.slow
def test_plots_show_and_diff_render_every_plot_with_no_network(browser, plots_repo, tmp_path):
    run_tool([DVC, "plots", "show", "-o", str(tmp_path / "show")], plots_repo)
    page = tmp_path / "show/index.html"
    assert_no_cdn(page.read_text())
    charts = drawn_charts(rendered_dom(browser, page, tmp_path / "profile"))
    assert sorted(charts) == CHART_IDS and all(charts.values())
    assert fold_line(charts, 0, 0.225, "workspace") and fold_line(charts, 1, 0.125, "workspace")

    run_tool([DVC, "plots", "diff", "HEAD~1", "HEAD", "-o", str(tmp_path / "diff")], plots_repo)
    page = tmp_path / "diff/index.html"
    assert_no_cdn(page.read_text())
    charts = drawn_charts(rendered_dom(browser, page, tmp_path / "profile"))
    assert sorted(charts) == CHART_IDS and all(charts.values())
    for fold in (0, 1):  # both revisions drawn, each with its own data
        assert fold_line(charts, fold, 0.2 - 0.1 * fold, "HEAD~1")
        assert fold_line(charts, fold, 0.225 - 0.1 * fold, "HEAD")
    assert sum(line.endswith("rev: HEAD~1") for line in charts["curve_csv"]) >= 1


@pytest.mark.slow
def test_stock_dvc_page_draws_nothing_with_no_network(browser, plots_repo, tmp_path):
    """The browser check can fail: DVC's own page (Vega from a CDN) has the same plot divs and draws none."""
    repo = tmp_path / "repo"
    shutil.copytree(plots_repo, repo, symlinks=True)
    run_tool([DVC, "config", "--unset", "plots.html_template"], repo)
    run_tool([DVC, "plots", "show", "-o", str(tmp_path / "stock")], repo)
    html = (tmp_path / "stock/index.html").read_text()
    assert REMOTE_SCRIPT_OR_LINK.search(html) and all(f"vegaEmbed('#{c}'" in html for c in CHART_IDS)
    dom = rendered_dom(browser, tmp_path / "stock/index.html", tmp_path / "profile")
    assert dom.count('class="vega-embed') == 0 and drawn_charts(dom) == {} and "<canvas" not in dom
    assert all(f'<div id="{c}"' in dom for c in CHART_IDS)


@pytest.mark.slow
def test_missing_template_fails_with_the_message_the_readme_explains(plots_repo, tmp_path):
    """DVC 3.67 takes a missing template's path for the template text; the README names this message."""
    repo = tmp_path / "repo"
    shutil.copytree(plots_repo, repo, symlinks=True)
    (repo / offline_plots.TEMPLATE).unlink()
    result = run_tool([DVC, "plots", "show", "-o", str(tmp_path / "out")], repo, check=False)
    assert result.returncode != 0 and "HTML template has to contain '{plot_divs}'" in result.stderr
    run_tool([sys.executable, "-m", "gliomil.runtime.offline_plots"], repo)
    run_tool([DVC, "plots", "show", "-o", str(tmp_path / "out")], repo)
