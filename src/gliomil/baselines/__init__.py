"""Baselines: what simple models reach on the same folds, so that the deep model's AUC has a yardstick.

Owns ``features`` (hand-made features of one case: statistics inside the tumour mask, intensity percentiles of the
whole brain, and a cohort's table of both), ``logistic`` (standardised logistic regressions fitted on each fold's
training patients and scored on its held-out patients) and ``segmented`` (the image-only two-stage baseline: a
per-pixel tumour segmenter fitted on each fold's training masks, then statistics inside the mask it predicts).
May import ``data`` (the NIfTI reader, the slice store and the split), ``runtime`` and the top-level ``errors`` and
``vocabulary``; nothing of the model, training or evaluation, so a baseline never re-runs because the deep model
changed.
"""
