"""Training: one fold's loop (``loop``: ``TrainConfig``, ``train_fold``, resume state), its losses (``losses``) and
its per-epoch log and figures (``reporting``, DVCLive).

The train stage's code: what this package and its imports hold is what re-runs a fold, so it may import
:mod:`gliomil.data`, :mod:`gliomil.model`, :mod:`gliomil.evaluation` (inner-validation scoring and metrics) and
:mod:`gliomil.runtime`, never :mod:`gliomil.comparison`, the audit text or serving.
"""
