"""Synthetic: the built-in BraTS-style cohort, so the pipeline runs without data.

Owns the MNI152 template's anatomy (``anatomy``) and the per-patient phantoms, tumours, acquisition and the
files stored as BraTS stores them (``cohort``). May import :mod:`gliomil.runtime` and the top-level vocabulary
and errors; nothing downstream of the files it writes may import it.
"""
