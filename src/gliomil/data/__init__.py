"""Data: from BraTS-style NIfTI files to bags of slices and patient-level folds.

Owns reading and checking a cohort's files (``brats``), each subject's contributing site (``sites``), the cohort's
fingerprint of acquisition and anatomy with its QC thumbnails (``fingerprint``), the slice maths and the preprocess
run (``preprocess``), the slice store that the stages after it read (``slices``: manifest, slice table, verified
bags and tumour maps; it needs none of the maths, so training does not depend on it), bags and their sampling for
training (``bags``), the splits (``split``) and the fold files that `train`, `evaluate` and `baselines` read
(``folds``: apart from the split algorithm, so that editing it re-runs `split` and nothing that reads the folds
unless they change). May import
:mod:`gliomil.runtime` and the top-level vocabulary and errors; never a model.
"""
