"""Comparison: did a change help? ``gliomil compare`` (one run against another, paired on patients) and
``gliomil repeats`` (a verdict over repeated cross-validation, paired by seed).

Owns the paired and unpaired tests, Holm's correction and the verdict sentences (``statistics``), reading runs
through ``dvc.api`` (``runs``) and the two commands (``compare``, ``repeats``). No pipeline stage imports it, so
editing a verdict re-runs nothing. May import :mod:`gliomil.evaluation` and :mod:`gliomil.runtime`.
"""
