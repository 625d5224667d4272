"""What every stage entry point shares: one-line errors, signals, the parent's lifetime and the fold argument."""

from __future__ import annotations

import sys
from collections.abc import Callable

from . import interrupts
from .errors import GliomilError, Interrupted


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's ``main`` as every stage runs.

    It dies with its parent (:func:`gliomil.interrupts.die_with_parent`) and stops on SIGINT/SIGTERM at its next
    safe point (:mod:`gliomil.interrupts`).
    A :class:`GliomilError` (a bad input, a failed write) becomes one ``error:`` line on stderr and exit code 1;
    a signal one line and 128 + its number, as a shell reports it, so ``dvc`` stops the pipeline.
    """
    interrupts.die_with_parent()
    interrupts.install()
    try:
        main()
        interrupts.check()  # a signal whose exception a finalizer swallowed still fails the stage
    except Interrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(128 + exc.signum)
    except GliomilError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def fold_argument(argv: list[str], folds: list[int], script: str) -> int:
    """The fold number a per-fold stage is called with (``python stages/<script> <fold>``)."""
    if len(argv) != 1 or not argv[0].isdigit() or int(argv[0]) not in folds:
        raise GliomilError(f"usage: python stages/{script} <fold>, with fold one of {folds}; got {argv}")
    return int(argv[0])
