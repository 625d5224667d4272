"""What every stage entry point shares: one-line errors and the fold argument."""

from __future__ import annotations

import sys
from collections.abc import Callable

from .errors import GliomilError


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a :class:`GliomilError` becomes one ``error:`` line on stderr and exit code 1."""
    try:
        main()
    except GliomilError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def fold_argument(argv: list[str], folds: list[int], script: str) -> int:
    """The fold number a per-fold stage is called with (``python stages/<script> <fold>``)."""
    if len(argv) != 1 or not argv[0].isdigit() or int(argv[0]) not in folds:
        raise GliomilError(f"usage: python stages/{script} <fold>, with fold one of {folds}; got {argv}")
    return int(argv[0])
