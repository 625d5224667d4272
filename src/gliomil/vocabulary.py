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

# The site of a subject whose files, ids and tables name none (gliomil.data.sites).
UNKNOWN_SITE = "unknown"

# What the held-out folds keep whole (split.group_by): each patient, or each site (leave-site-out).
SPLIT_GROUPS = ("none", "site")

# How the slice encoder pools its last feature map into a slice's feature vector (train.model.slice_pooling).
SLICE_POOLINGS = ("mean", "max", "mean_max", "gated_max")

# What training-only instance supervision teaches the instance stream (train.instance_target): where the tumour is
# within a bag (``tumour``), or that a tumour slice of an HGG bag is HGG and every other slice is not (``grade``).
INSTANCE_TARGETS = ("tumour", "grade")

# The tumour regions of the BraTS evaluation, from the seg's labels (1 necrosis / non-enhancing core, 2 oedema,
# 4 enhancing): whole tumour (1, 2, 4), tumour core (1, 4) and enhancing tumour (4), nested in that order. The
# channels of a stored tumour map (gliomil.data.preprocess), in this order.
TUMOUR_REGIONS = ("whole_tumour", "tumour_core", "enhancing_tumour")
REGION_LABELS = {"whole_tumour": (1, 2, 4), "tumour_core": (1, 4), "enhancing_tumour": (4,)}

# What pixel supervision teaches the encoder's tumour head (train.pixel_target): where the whole tumour is
# (``tumour``, one map), or where each of the three TUMOUR_REGIONS is (``regions``, three maps).
PIXEL_TARGETS = {"tumour": 1, "regions": len(TUMOUR_REGIONS)}


def grade_of(label: int) -> str:
    """The grade of a 0/1 label."""
    if label not in (0, 1):
        raise ValueError(f"a label is 0 ({GRADES[0]}) or 1 ({GRADES[1]}), got {label!r}")
    return GRADES[label]
