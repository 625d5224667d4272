"""Model: the slice encoder and DSMIL (``dsmil``), the other MIL aggregators (``pooling``), the model that joins
an encoder and an aggregator with its config side by side (``mil``), the tumour-moments stream it may add
(``moments``), and a trained model on disk (``checkpoint``).

What ``gliomil predict`` needs to rebuild a model, and nothing about training or data. May import
:mod:`gliomil.runtime` and the shared words of :mod:`gliomil.vocabulary` only.
"""
