"""An HTML template for `dvc plots show` / `dvc plots diff` whose pages render with no network.

DVC's stock page loads Vega, Vega-Lite and Vega-Embed from a CDN, so in an air-gapped hospital it shows
nothing. ``.dvc/config`` names ``plots.html_template = plots/offline.html`` instead (DVC 3 resolves a relative
path against ``.dvc/``). That template inlines one JavaScript bundle of the three libraries, which the
``vl-convert-python`` package (pinned in requirements.txt) ships, so no network is needed at setup either.

The template is committed: DVC reads the file itself and has no hook to build it on first use, and
vl-convert-python is not a dependency of the package, so a clone installed with ``pip install -e .`` could
not generate it. It is 0.9 MB (0.3 MB compressed in git), written only by this module, byte for byte the same
on every run for one vl-convert version (the bundle embeds no time, path or machine), and
``tests/test_plots_template.py`` checks that the committed file is what the pinned vl-convert generates.
``.dvc/plots/.gitattributes`` keeps git from changing its line endings or diffing its minified lines.

    python -m gliomil.runtime.offline_plots           # (re)writes .dvc/plots/offline.html if it differs
    python -m gliomil.runtime.offline_plots --check   # exit 1 if it differs from what vl-convert generates

After bumping vl-convert-python in requirements.txt, run ``python3 dev.py setup`` (which runs this module)
and commit the rewritten template.

Each plot DVC puts in ``{plot_divs}`` is ``<div id=...><script>var spec = {...}; vegaEmbed('#id', spec);
</script></div>``: an inline, classic script that runs as the page is parsed. So the bundle is a classic
script in ``<head>`` that defines the global ``vegaEmbed`` before the first div, and the template has no
``{scripts}`` placeholder, where DVC would put its CDN ``<script src=...>`` tags.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from gliomil.errors import GliomilError
from gliomil.runtime.files import write_bytes

# Where the template goes, relative to the DVC repository root; .dvc/config names it relative to .dvc/.
TEMPLATE = Path(".dvc/plots/offline.html")
# DVC's templates and this project's (.dvc/plots/*.json) declare Vega-Lite v5 specs: compile them with the
# newest v5 that vl-convert ships rather than v6, whose changes they were never checked against.
VEGA_LITE_VERSION = "5.21"
# Bumped when the page below changes; the marker names it, so the template's first lines say what built it.
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
    """The installed vl-convert-python's version (named in the template's marker)."""
    try:
        return metadata.version("vl-convert-python")
    except metadata.PackageNotFoundError:
        raise GliomilError(
            "vl-convert-python is not installed (only regenerating the committed template needs it): "
            "`python3 dev.py setup` installs requirements.txt"
        ) from None


def marker(version: str) -> str:
    """The comment that identifies a template by what built it (its fifth line)."""
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


def expected_template() -> bytes:
    """The template the installed vl-convert generates, as the bytes written to disk (UTF-8, ``\\n`` lines)."""
    return render_template(javascript_bundle(), vl_convert_version()).encode()


def ensure_template(path: Path) -> bool:
    """Write the template at ``path`` unless it already holds exactly those bytes; True when it was (re)written.

    Comparing the whole file, not just the marker, also repairs a committed template that was edited or had its
    line endings changed. Building the bundle takes a few seconds.
    """
    expected = expected_template()
    try:
        if path.read_bytes() == expected:
            return False
    except FileNotFoundError:
        pass
    write_bytes(path, expected)
    return True


def template_differs(path: Path) -> str | None:
    """Why ``path`` is not the template the installed vl-convert generates, or None when it is."""
    expected = expected_template()
    try:
        actual = path.read_bytes()
    except FileNotFoundError:
        return f"{path} is missing"
    if actual == expected:
        return None
    first = next((i for i, (a, b) in enumerate(zip(actual, expected)) if a != b), min(len(actual), len(expected)))
    return (
        f"{path} differs from what vl-convert-python {vl_convert_version()} generates "
        f"({len(actual)} bytes, expected {len(expected)}; first difference at byte {first})"
    )


def find_dvc_root(start: Path) -> Path:
    """The nearest folder at or above ``start`` that holds ``.dvc/``, as ``dvc`` itself finds its repository."""
    for folder in (start, *start.parents):
        if (folder / ".dvc").is_dir():
            return folder
    raise GliomilError(f"{start} is not inside a DVC repository (no .dvc/ folder here or above)")


USAGE = "usage: python -m gliomil.runtime.offline_plots [--check]   (writes or checks .dvc/plots/offline.html)"


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check``, only compare) the template of the DVC repository that holds the current
    folder; one line either way."""
    argv = sys.argv[1:] if argv is None else argv
    if argv not in ([], ["--check"]):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        path = find_dvc_root(Path.cwd()) / TEMPLATE
        if argv == ["--check"]:
            problem = template_differs(path)
            if problem:
                print(f"error: {problem}: `python -m gliomil.runtime.offline_plots` rewrites it", file=sys.stderr)
                return 1
            written = False
        else:
            written = ensure_template(path)
    except GliomilError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    size = f"{path.stat().st_size / 1e6:.2f} MB"
    print(f"offline plots: {'wrote' if written else 'up to date:'} {path} ({size})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
