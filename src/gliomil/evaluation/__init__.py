"""Evaluation: scoring patients with a trained model and turning scores into numbers, tables and figures.

Owns whole-bag scoring and per-patient predictions (``scoring``), every metric (``metrics``), the intervals the
stages report (``intervals``: DeLong's for one AUC, the stratified bootstrap), MIL attention diagnostics
(``diagnostics``), figures (``plots``), the cross-validation summary (``aggregate``) and the audit report
(``audit``). May import :mod:`gliomil.data`, :mod:`gliomil.model` and :mod:`gliomil.runtime`; never training or
comparison. The train stage imports scoring, metrics, intervals, diagnostics and plots, not aggregate or audit.
"""
