"""The words every module shares for grades, image channels and data layouts, defined once.

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


def grade_of(label: int) -> str:
    """The grade of a 0/1 label."""
    if label not in (0, 1):
        raise ValueError(f"a label is 0 ({GRADES[0]}) or 1 ({GRADES[1]}), got {label!r}")
    return GRADES[label]
