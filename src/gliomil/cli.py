"""The ``gliomil`` command: ``gliomil predict`` (:mod:`gliomil.predict`), ``gliomil compare``
(:mod:`gliomil.compare`), ``gliomil repeats`` (:mod:`gliomil.repeats`) and ``gliomil fanout``
(:mod:`gliomil.fanout`)."""

from __future__ import annotations

import importlib
import sys

from . import blas  # noqa: F401  (before anything imports numpy: OpenBLAS kernels as the preprocess stage pins them)
from .stage import run_command

COMMANDS = {
    "predict": ("gliomil.predict", "score new patients with a packaged model"),
    "compare": ("gliomil.compare", "before -> after comparison of two runs"),
    "repeats": ("gliomil.repeats", "before -> after verdict over repeated cross-validation"),
    "fanout": ("gliomil.fanout", "train the folds in parallel worktrees through DVC's run-cache"),
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        listed = "\n".join(f"  {name:9s}{help}" for name, (_, help) in COMMANDS.items())
        print(f"usage: gliomil COMMAND [ARGS]  (gliomil COMMAND --help)\n\ncommands:\n{listed}", file=sys.stderr)
        sys.exit(0 if argv[:1] in (["-h"], ["--help"]) else 2)
    module = importlib.import_module(COMMANDS[argv[0]][0])
    run_command(lambda: module.main(argv[1:]))


if __name__ == "__main__":
    main()
