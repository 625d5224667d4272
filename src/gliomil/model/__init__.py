"""Model: DSMIL and its config side by side (``dsmil``), and a trained model on disk (``checkpoint``).

What ``gliomil predict`` needs to rebuild a model, and nothing about training or data. May import
:mod:`gliomil.runtime` only.
"""
