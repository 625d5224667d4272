"""An HTML template for `dvc plots show` / `dvc plots diff` whose pages render with no network.

DVC's stock page loads Vega, Vega-Lite and Vega-Embed from a CDN, so in an air-gapped hospital it shows
nothing. ``.dvc/config`` names ``plots.html_template = plots/offline.html`` instead (DVC 3 resolves a relative
path against ``.dvc/``). That template inlines one JavaScript bundle of the three libraries, which the
``vl-convert-python`` package (pinned in requirements.txt) ships, so no network is needed at setup either.
The bundle is about 0.9 MB, so the template is generated (``python3 dev.py setup`` runs this module), not
committed; ``.dvc/plots/.gitignore`` keeps it out of git.

    python -m gliomil.offline_plots   # (re)writes .dvc/plots/offline.html of the DVC repository here

Each plot DVC puts in ``{plot_divs}`` is ``<div id=...><script>var spec = {...}; vegaEmbed('#id', spec);
</script></div>``: an inline, classic script that runs as the page is parsed. So the bundle is a classic
script in ``<head>`` that defines the global ``vegaEmbed`` before the first div, and the template has no
``{scripts}`` placeholder, where DVC would put its CDN ``<script src=...>`` tags.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from .errors import GliomilError
from .files import write_text

# Where the template goes, relative to the DVC repository root; .dvc/config names it relative to .dvc/.
TEMPLATE = Path(".dvc/plots/offline.html")
# DVC's templates and this project's (.dvc/plots/*.json) declare Vega-Lite v5 specs: compile them with the
# newest v5 that vl-convert ships rather than v6, whose changes they were never checked against.
VEGA_LITE_VERSION = "5.21"
# Bumped when the page below changes, so that an existing template of the same vl-convert is rewritten.
LAYOUT_REVISION = 2
# The placeholders DVC's dvc_render.html.HTML.embed fills by plain text replacement.
DVC_PLACEHOLDERS = ("{scripts}", "{plot_divs}", "{refresh_tag}")

# DVC's page layout (dvc_render.html.PAGE_HTML) less {scripts}. The bundle runs inside a function so that its
# top-level names (minified: n, t, ...) stay private; as globals they could clash with the plots' `var spec`.
PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {marker}
    {{refresh_tag}}
    <title>DVC Plot</title>
    <script type="text/javascript">
(function () {{
{bundle}
}})();
    </script>
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def vl_convert_version() -> str:
    """The installed vl-convert-python's version (part of the marker that makes regeneration idempotent)."""
    try:
        return metadata.version("vl-convert-python")
    except metadata.PackageNotFoundError:
        raise GliomilError(
            "vl-convert-python is not installed: `python3 dev.py setup` installs requirements.txt"
        ) from None


def marker(version: str) -> str:
    """The comment that identifies a template by what built it; a template with another marker is rewritten."""
    built_by = f"vl-convert-python {version}, Vega-Lite {VEGA_LITE_VERSION}, layout {LAYOUT_REVISION}"
    return f"<!-- gliomil offline plots: {built_by} -->"


def javascript_bundle() -> str:
    """Vega, Vega-Lite and Vega-Embed as one script with no imports that sets the globals ``vegaEmbed``,
    ``vega`` and ``vegaLite`` (vl-convert's default snippet). Vega-Embed 7 draws SVG by default, so the
    plots stay sharp when zoomed or printed and their marks are elements of the page, which the tests check.
    """
    import vl_convert

    try:
        return vl_convert.javascript_bundle(vl_version=VEGA_LITE_VERSION)
    except Exception as e:  # its errors are Rust panics and ValueErrors of many lines
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GliomilError(f"vl-convert could not build the Vega bundle: {first_line}") from None


def check_inlinable(bundle: str) -> None:
    """Refuse a bundle that cannot sit inside ``<script>`` or that DVC's text replacement would change.

    ``</script`` would end the element early and ``<!--`` changes how the HTML parser reads script text;
    a DVC placeholder would be filled with plots or CDN tags. None occurs in the pinned version; escaping
    them instead could change what a regular expression in the bundle means, so a new version must be looked at.
    """
    found = [s for s in ("</script", "<!--") if s in bundle.lower()]
    found += [p for p in DVC_PLACEHOLDERS if p in bundle]
    if found:
        raise GliomilError(f"the vl-convert JavaScript bundle contains {', '.join(found)}: it cannot be inlined")


def render_template(bundle: str, version: str) -> str:
    """The HTML template: DVC's page layout with the bundle inlined and no ``{scripts}`` placeholder."""
    check_inlinable(bundle)
    return PAGE.format(marker=marker(version), bundle=bundle)


def is_current(path: Path, version: str) -> bool:
    """Whether ``path`` is a template this module wrote for ``version`` (its marker is in the first lines)."""
    try:
        with path.open(encoding="utf-8") as f:
            head = f.read(1024)
    except (FileNotFoundError, UnicodeDecodeError):
        return False
    return marker(version) in head


def ensure_template(path: Path) -> bool:
    """Write the template at ``path`` unless it is current; True when it was (re)written."""
    version = vl_convert_version()
    if is_current(path, version):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, render_template(javascript_bundle(), version))
    return True


def find_dvc_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` that holds ``.dvc/``, as ``dvc`` itself finds its repository."""
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir():
            return folder
    raise GliomilError(f"{start} is not inside a DVC repository (no .dvc/ folder here or above)")


def main(argv: list[str] | None = None) -> int:
    """Write the template of the DVC repository that holds the current folder; one line either way."""
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        print("usage: python -m gliomil.offline_plots   (writes .dvc/plots/offline.html)", file=sys.stderr)
        return 2
    try:
        path = find_dvc_root(Path.cwd()) / TEMPLATE
        written = ensure_template(path)
    except GliomilError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    size = f"{path.stat().st_size / 1e6:.2f} MB"
    print(f"offline plots: {'wrote' if written else 'up to date:'} {path} ({size})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
