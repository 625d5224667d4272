"""Scale: training the folds in parallel (``fanout``: git worktrees sharing DVC's cache and run-cache).

Drives ``dvc`` as a command and reads params and paths; may import :mod:`gliomil.runtime` and the top-level
params, paths and errors, never the model or training code (what it runs is the stages).
"""
