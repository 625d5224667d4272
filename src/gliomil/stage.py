"""What every stage entry point shares: one-line errors and outputs written atomically."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

from .errors import GliomilError


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a :class:`GliomilError` becomes one ``error:`` line on stderr and exit code 1."""
    try:
        main()
    except GliomilError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: str | Path, data) -> None:
    """Write ``data`` as indented JSON (atomically)."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def fold_argument(argv: list[str], folds: list[int], script: str) -> int:
    """The fold number a per-fold stage is called with (``python stages/<script> <fold>``)."""
    if len(argv) != 1 or not argv[0].isdigit() or int(argv[0]) not in folds:
        raise GliomilError(f"usage: python stages/{script} <fold>, with fold one of {folds}; got {argv}")
    return int(argv[0])
