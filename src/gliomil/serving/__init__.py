"""Serving: the packaged model (``bundle``: fold checkpoints, settings and manifest) and ``gliomil predict``
(``predict``), which needs nothing but the bundle and the input files.

May import :mod:`gliomil.data` (the same checks and preprocessing as training), :mod:`gliomil.model`,
:mod:`gliomil.evaluation` and :mod:`gliomil.runtime`; never training.
"""
