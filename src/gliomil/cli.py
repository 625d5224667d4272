"""The ``gliomil`` command: ``gliomil predict`` (:mod:`gliomil.serving.predict`), ``gliomil compare``
(:mod:`gliomil.comparison.compare`), ``gliomil repeats`` (:mod:`gliomil.comparison.repeats`) and ``gliomil fanout``
(:mod:`gliomil.scale.fanout`)."""

from __future__ import annotations

import importlib
import sys

import gliomil.runtime.blas  # noqa: F401  (before anything imports numpy: OpenBLAS kernels as preprocess pins them)
from gliomil.runtime.stage import run_command

COMMANDS = {
    "predict": ("gliomil.serving.predict", "score new patients with a packaged model"),
    "compare": ("gliomil.comparison.compare", "before -> after comparison of two runs"),
    "repeats": ("gliomil.comparison.repeats", "before -> after verdict over repeated cross-validation"),
    "fanout": ("gliomil.scale.fanout", "train the folds in parallel worktrees through DVC's run-cache"),
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
