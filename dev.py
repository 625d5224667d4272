#!/usr/bin/env python3
"""Set up the project on a machine that has only python3, then run the pipeline or the tests.

    python3 dev.py repro [dvc repro args]   # .venv + install, then `dvc repro`
    python3 dev.py test  [pytest args]      # .venv + install, then ruff (lint, format check) and pytest

Setup creates `.venv/` and installs the pinned requirements plus this package (editable). It is
skipped when requirements.txt and pyproject.toml have not changed since the last install.
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


def _install_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("requirements.txt", "pyproject.toml"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def setup() -> None:
    """Create .venv and install requirements + the package unless already done for these files."""
    fingerprint = _install_fingerprint()
    if STAMP.is_file() and STAMP.read_text() == fingerprint:
        return
    if not (BIN / "python").exists():
        print("setup: creating .venv", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("setup: installing requirements.txt and gliomil (a few minutes the first time)", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["-r", str(ROOT / "requirements.txt")], check=True)
    subprocess.run(pip + ["-e", str(ROOT)], check=True)
    STAMP.write_text(fingerprint)


def run(command: list[str]) -> int:
    """Run a command with the virtual environment's bin/ first on PATH (DVC stages call `python`)."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", VIRTUAL_ENV=str(VENV))
    return subprocess.run(command, cwd=ROOT, env=env).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("repro", "test"):
        print(__doc__.strip())
        return 2
    setup()
    if argv[0] == "repro":
        return run([str(BIN / "dvc"), "repro", *argv[1:]])
    for check in (["check", "."], ["format", "--check", "."]):
        if run([str(BIN / "ruff"), *check]) != 0:
            print("ruff found problems: `.venv/bin/ruff check --fix . && .venv/bin/ruff format .` fixes most")
            return 1
    return run([str(BIN / "python"), "-m", "pytest", *argv[1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
