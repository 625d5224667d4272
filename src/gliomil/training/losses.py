"""Training loss of the dual-stream MIL model and class weights for HGG/LGG imbalance.

Labels: 1 = HGG (positive class), 0 = LGG.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

__all__ = [
    "mil_loss",
    "class_weights_from_counts",
    "instance_supervision_loss",
    "instance_grade_loss",
    "pixel_supervision_loss",
    "tumour_targets",
]

Weights = Sequence[float] | torch.Tensor


def mil_loss(
    bag_logits: torch.Tensor,
    max_instance_logits: torch.Tensor | None,
    labels: torch.Tensor,
    label_smoothing: float = 0.0,
    class_weights: Weights | None = None,
) -> torch.Tensor:
    """DSMIL loss ``0.5 * BCE(bag) + 0.5 * BCE(max instance)`` on logits; a scalar. Without a second stream
    (``max_instance_logits`` None: the one-stream aggregators of :mod:`gliomil.model.pooling`) it is ``BCE(bag)``.

    Args:
        bag_logits: (B,) bag-stream logits.
        max_instance_logits: (B,) max of each bag's instance logits (DSMIL's critical-instance stream), or None.
        labels: (B,) 0 (LGG) or 1 (HGG), any numeric dtype.
        label_smoothing: s in [0, 1); targets move towards 0.5, ``y * (1 - s) + 0.5 * s``,
            so with s = 0.2 they are 0.1 and 0.9.
        class_weights: optional ``(w_lgg, w_hgg)``; sample i gets the weight of its
            true (unsmoothed) label.

    Reduction: with class weights ``w_i`` and per-sample loss
    ``l_i = 0.5 * bce(bag_i) + 0.5 * bce(inst_i)`` the result is the weighted mean
    ``sum w_i l_i / sum w_i`` (the convention of ``torch.nn.CrossEntropyLoss(weight=...)``).
    It keeps the loss on the same scale with or without weights, so the learning rate
    need not change, and it reduces to the plain mean when all weights are equal. Its
    consequence: in a batch whose bags all share one label the weights cancel, so the
    re-balancing comes only from mixed batches (with small batches, e.g. 4 bags at about
    3 HGG : 1 LGG, about 30% of batches are single-class).
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    second = bag_logits if max_instance_logits is None else max_instance_logits
    if bag_logits.shape != second.shape or bag_logits.shape != labels.shape or bag_logits.dim() != 1:
        raise ValueError(
            "bag_logits, max_instance_logits and labels must share one shape (B,), got "
            f"{tuple(bag_logits.shape)}, {tuple(second.shape)}, {tuple(labels.shape)}"
        )
    labels = labels.to(device=bag_logits.device)
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError(f"labels must be 0 (LGG) or 1 (HGG), got {labels.tolist()}")
    # Compute in float32 even when logits come out of a bf16/fp16 autocast region.
    bag_logits = bag_logits.float()
    y = labels.float()
    target = y * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if max_instance_logits is None:
        per_sample = F.binary_cross_entropy_with_logits(bag_logits, target, reduction="none")
    else:
        per_sample = 0.5 * F.binary_cross_entropy_with_logits(
            bag_logits, target, reduction="none"
        ) + 0.5 * F.binary_cross_entropy_with_logits(max_instance_logits.float(), target, reduction="none")
    if class_weights is None:
        return per_sample.mean()
    weights = torch.as_tensor(class_weights, dtype=torch.float32, device=bag_logits.device)
    if weights.shape != (2,) or bool((weights < 0).any()) or not bool(torch.isfinite(weights).all()):
        raise ValueError(f"class_weights must be two finite non-negative numbers (w_lgg, w_hgg), got {class_weights}")
    w = weights[labels.long()]
    total = w.sum()
    if float(total) <= 0.0:
        raise ValueError(f"class_weights {weights.tolist()} give the labels of this batch zero total weight")
    return (w * per_sample).sum() / total


def class_weights_from_counts(n_lgg: int, n_hgg: int) -> tuple[float, float]:
    """Balanced class weights ``n_total / (2 * n_class)`` as ``(w_lgg, w_hgg)``.

    Same rule as scikit-learn's ``compute_class_weight('balanced')``: each class then
    carries half of the total weight. Raises ValueError when a count is not positive.
    """
    n_lgg, n_hgg = int(n_lgg), int(n_hgg)
    if n_lgg <= 0 or n_hgg <= 0:
        raise ValueError(f"class counts must be positive to weight classes, got n_lgg={n_lgg}, n_hgg={n_hgg}")
    total = n_lgg + n_hgg
    return total / (2 * n_lgg), total / (2 * n_hgg)


def instance_supervision_loss(
    instance_logits: torch.Tensor, bag_sizes: Sequence[int], tumour: torch.Tensor
) -> torch.Tensor:
    """Instance supervision from the segmentation (``train.instance_supervision``): a scalar, zero for a bag
    without tumour slices and positive otherwise.

    Per bag b with tumour slices T_b: ``-log sum_{i in T_b} softmax(s_b)_i``, the negative log of the share of the
    bag's instance softmax that falls on its tumour slices; the batch's loss is the mean over its bags (a bag
    without tumour slices adds 0). It teaches the instance stream *which* slices hold the tumour, so that the
    critical slice the DSMIL bag stream queries with is a tumour slice, without telling it anything about the
    grade: a softmax does not change when every logit of the bag moves by the same amount, so the level of the
    logits, which carries HGG against LGG, is left to the MIL loss.

    An aggregator without instance scores but with attention (``abmil``) passes the log of its attention: the
    softmax of a bag's log-attention is the attention itself, so the loss is ``-log`` of the attention on the
    tumour slices.

    Args:
        instance_logits: (sum N_b,) instance-stream logits of the concatenated bags.
        bag_sizes: (B,) slices per bag, in order.
        tumour: (sum N_b,) 1 where the slice holds tumour (:func:`tumour_targets`), else 0.
    """
    logits = instance_logits.float()
    if logits.dim() != 1 or tumour.shape != logits.shape or sum(bag_sizes) != logits.shape[0]:
        raise ValueError(
            f"instance_logits {tuple(logits.shape)}, tumour {tuple(tumour.shape)} and bag_sizes (sum "
            f"{sum(bag_sizes)}) must describe the same slices"
        )
    total = logits.new_zeros(())
    for bag_logits, bag_tumour in zip(
        torch.split(logits, list(bag_sizes)), torch.split(tumour.bool(), list(bag_sizes))
    ):
        if bag_tumour.any():
            total = total + torch.logsumexp(bag_logits, 0) - torch.logsumexp(bag_logits[bag_tumour], 0)
    return total / len(bag_sizes)


def instance_grade_loss(
    instance_logits: torch.Tensor, bag_sizes: Sequence[int], tumour: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Instance supervision with the grade as its target (``train.instance_target: grade``): a scalar >= 0.

    Per slice, the binary cross-entropy of its instance logit against 1 for a tumour slice of an HGG bag and 0 for
    every other slice (an LGG bag's slices, and the slices of an HGG bag without tumour); averaged over each bag's
    slices, then over the bags, so a bag weighs the same whatever its size. It states the MIL assumption outright
    where the segmentation knows it: a high-grade bag is high-grade *because of* its tumour slices. It needs
    instance scores, so not ``abmil`` (``gliomil.params.check_params`` says so before training).

    Args:
        instance_logits: (sum N_b,) instance-stream logits of the concatenated bags.
        bag_sizes: (B,) slices per bag, in order.
        tumour: (sum N_b,) 1 where the slice holds tumour (:func:`tumour_targets`), else 0.
        labels: (B,) 0 (LGG) or 1 (HGG).
    """
    logits = instance_logits.float()
    if logits.dim() != 1 or tumour.shape != logits.shape or sum(bag_sizes) != logits.shape[0]:
        raise ValueError(
            f"instance_logits {tuple(logits.shape)}, tumour {tuple(tumour.shape)} and bag_sizes (sum "
            f"{sum(bag_sizes)}) must describe the same slices"
        )
    if labels.shape != (len(bag_sizes),):
        raise ValueError(f"labels {tuple(labels.shape)} must hold one label per bag ({len(bag_sizes)} bags)")
    sizes = torch.as_tensor(list(bag_sizes), device=logits.device)
    bag_label = torch.repeat_interleave(labels.to(logits.device).float(), sizes)  # (sum N_b,)
    target = bag_label * (tumour.to(logits.device).float() > 0)
    per_slice = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    weight = torch.repeat_interleave(1.0 / sizes.float(), sizes)
    return (per_slice * weight).sum() / len(bag_sizes)


def pixel_supervision_loss(tumour_logits: torch.Tensor, tumour_maps: torch.Tensor) -> torch.Tensor:
    """Pixel supervision from the segmentation (``train.pixel_supervision``): a scalar >= 0.

    The binary cross-entropy of each cell of each of the encoder's tumour maps
    (:meth:`gliomil.model.dsmil.SliceEncoder.encode`) against the share of the cell that the map's region covers
    (soft targets: the slice's region map averaged over the cell's pixels), averaged over the maps and the cells of
    every slice. It teaches the encoder where the tumour, or each of its regions, lies in a slice; the grade is left
    to the MIL loss.

    Args:
        tumour_logits: (N, maps, h, w) the tumour head's logits, one slice per row.
        tumour_maps: (N, maps, H, W) each pixel's share of each region in [0, 1], H and W multiples of h and w.
    """
    logits = tumour_logits.float()
    if logits.dim() != 4 or tumour_maps.shape[:2] != logits.shape[:2] or tumour_maps.dim() != 4:
        raise ValueError(
            f"tumour_logits {tuple(logits.shape)} and tumour_maps {tuple(tumour_maps.shape)} must be (N, maps, h, w) "
            "and (N, maps, H, W) of the same slices and maps"
        )
    (h, w), (height, width) = logits.shape[2:], tumour_maps.shape[2:]
    if height % h or width % w:
        raise ValueError(f"tumour maps {height}x{width} do not tile into the head's {h}x{w} cells")
    target = tumour_maps.to(logits.device).float()
    if (height, width) != (h, w):  # a cell of one pixel is its own share: no pass over the maps
        target = F.avg_pool2d(target, (height // h, width // w))
    return F.binary_cross_entropy_with_logits(logits, target)


def tumour_targets(tumour_fraction: Sequence[float] | np.ndarray) -> np.ndarray:
    """Per-slice tumour flags for :func:`instance_supervision_loss`: 1.0 where the slice holds tumour (a share of
    its brain > 0), else 0. Raises ValueError on NaN (a subject without segmentation): the caller names it."""
    fraction = np.asarray(tumour_fraction, dtype=np.float64)
    if np.isnan(fraction).any():
        raise ValueError("tumour fractions are unknown (no segmentation)")
    return (fraction > 0).astype(np.float32)
