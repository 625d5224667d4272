#!/usr/bin/env python3
"""Set up the project on a machine that has only python3, then run the pipeline or the tests.

    python3 dev.py setup                    # .venv + install + the offline `dvc plots` template
    python3 dev.py repro [dvc repro args]   # setup, then `dvc repro`
    python3 dev.py test  [pytest args]      # setup, then ruff (lint, format check) and pytest

Setup creates `.venv/` and installs the pinned requirements plus this package (editable). It is
skipped when requirements.txt and pyproject.toml have not changed since the last install. It then
writes .dvc/plots/offline.html (`python -m gliomil.offline_plots`), the template .dvc/config names
for `dvc plots show/diff`, when it is missing or after an install.
"""

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".gliomil-installed"
# Generated, gitignored; gliomil.offline_plots.TEMPLATE (this file runs before gliomil is installed).
PLOTS_TEMPLATE = ROOT / ".dvc" / "plots" / "offline.html"


def _install_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("requirements.txt", "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def setup() -> None:
    """Create .venv and install requirements + the package unless already done for these files, then make
    sure the offline plots template exists (a new vl-convert after an install rewrites it)."""
    fingerprint = _install_fingerprint()
    installed = STAMP.is_file() and STAMP.read_text() == fingerprint
    if not installed:
        _install(fingerprint)
    if not installed or not PLOTS_TEMPLATE.is_file():
        _offline_plots_template()


def _install(fingerprint: str) -> None:
    """Create .venv if needed, install the pinned requirements and gliomil (editable), record ``fingerprint``."""
    if not (BIN / "python").exists():
        print("setup: creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("setup: installing requirements.txt and gliomil (a few minutes the first time)", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["-r", str(ROOT / "requirements.txt")], check=True)
    subprocess.run(pip + ["-e", str(ROOT)], check=True)
    STAMP.write_text(fingerprint)


def _offline_plots_template() -> None:
    """Write the `dvc plots` HTML template that inlines Vega (no CDN), with the venv's python: this file runs
    under any python3, gliomil and vl-convert live in .venv. It skips a template already current."""
    if subprocess.run([str(BIN / "python"), "-m", "gliomil.offline_plots"], cwd=ROOT).returncode != 0:
        raise SystemExit(1)  # gliomil.offline_plots printed the one-line error


def run(command: list[str]) -> int:
    """Run a command with the virtual environment's bin/ first on PATH (DVC stages call `python`)."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", VIRTUAL_ENV=str(VENV))
    return subprocess.run(command, cwd=ROOT, env=env).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("setup", "repro", "test"):
        print(__doc__.strip())
        return 2
    setup()
    if argv[0] == "setup":
        return 0
    if argv[0] == "repro":
        return run([str(BIN / "dvc"), "repro", *argv[1:]])
    for check in (["check", "."], ["format", "--check", "."]):
        if run([str(BIN / "ruff"), *check]) != 0:
            print("ruff found problems: `.venv/bin/ruff check --fix . && .venv/bin/ruff format .` fixes most")
            return 1
    return run([str(BIN / "python"), "-m", "pytest", *argv[1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
