"""What every entry point shares: one-line errors, signals (stages) and the fold argument."""

from __future__ import annotations

import sys
from collections.abc import Callable

from gliomil.errors import GliomilError, Interrupted
from gliomil.runtime import interrupts


def run_stage(main: Callable[[], None]) -> None:
    """Run a DVC stage's ``main``.

    SIGINT/SIGTERM stop it at its next safe point (:mod:`gliomil.runtime.interrupts`; ``stages/_src.py`` starts
    recording them, and asks the kernel to end the stage with ``dvc``, before anything else). A
    :class:`GliomilError` (a bad input, a failed write) becomes one ``error:`` line on stderr and exit code 1; a
    signal one line and 128 + its number, as a shell reports it, so ``dvc`` stops the pipeline and records nothing.
    """
    interrupts.install()
    try:
        main()
        interrupts.check()  # a stage that finished after a signal still fails
    except Interrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(128 + exc.signum)
    except GliomilError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def run_command(main: Callable[[], None]) -> None:
    """Run a command-line tool's ``main`` (``gliomil predict``, ``compare``, ``repeats``): a
    :class:`GliomilError` becomes one ``error:`` line and exit code 1; Ctrl-C stops it at once (Python's own
    handling: its outputs are written atomically) with one line and exit code 130."""
    try:
        main()
    except GliomilError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted; no output was written or changed", file=sys.stderr)
        sys.exit(130)


def fold_argument(argv: list[str], folds: list[int], script: str) -> int:
    """The fold number a per-fold stage is called with (``python stages/<script> <fold>``)."""
    if len(argv) != 1 or not argv[0].isdigit() or int(argv[0]) not in folds:
        raise GliomilError(f"usage: python stages/{script} <fold>, with fold one of {folds}; got {argv}")
    return int(argv[0])
