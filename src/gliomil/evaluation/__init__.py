"""Evaluation: scoring patients with a trained model and turning scores into numbers, tables and figures.

Owns whole-bag scoring and per-patient predictions (``scoring``), every metric (``metrics``), the intervals the
stages report (``intervals``: DeLong's for one AUC, the stratified bootstrap), MIL attention diagnostics
(``diagnostics``), figures (``plots``), the cross-validation summary (``aggregate``), the confound checks of the
cohort's fingerprint with their figures (``confounds``) and the audit report (``audit``). May import
:mod:`gliomil.data`, :mod:`gliomil.model` and :mod:`gliomil.runtime`; never training or comparison. The train
stage imports scoring, metrics, intervals, diagnostics and plots, not aggregate, audit or confounds.
"""
