"""The words every module shares for grades, image channels, data layouts and MIL aggregators, defined once.

Free of heavy imports, so that the params module can check values against it without loading the library.
"""

from __future__ import annotations

# Index = label: HGG = 1 is the positive class of every score, ROC curve and confusion matrix.
GRADES = ("LGG", "HGG")
LABELS = {grade: label for label, grade in enumerate(GRADES)}

# Channel order of every volume stack and every slice bag.
MODALITIES = ("flair", "t1", "t1ce", "t2")
SEGMENTATION = "seg"

# How a data.root tree is organised (gliomil.data.brats reads each; "auto" recognises the other three).
LAYOUTS = ("auto", "brats2018", "brats2020", "csv")

# The MIL aggregators of train.model.aggregator (gliomil.model.mil builds them) and which optional outputs each has:
# the diagnostics of an output an aggregator lacks are omitted, never made up.
AGGREGATORS = ("dsmil", "mean", "max", "abmil")
HAS_ATTENTION = {"dsmil": True, "mean": False, "max": False, "abmil": True}
HAS_INSTANCE_SCORES = {"dsmil": True, "mean": True, "max": True, "abmil": False}


def grade_of(label: int) -> str:
    """The grade of a 0/1 label."""
    if label not in (0, 1):
        raise ValueError(f"a label is 0 ({GRADES[0]}) or 1 ({GRADES[1]}), got {label!r}")
    return GRADES[label]
