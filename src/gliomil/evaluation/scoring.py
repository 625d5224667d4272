"""Scoring patients with a trained MIL model: whole-bag scores, MIL summaries, per-patient predictions.

Used by the training loop (inner validation), the evaluate stage and anything that scores new patients;
it imports nothing from training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.special import expit

from gliomil.data.bags import BagSet, with_neighbours
from gliomil.evaluation.diagnostics import available_summary
from gliomil.model.mil import MILModel
from gliomil.runtime import interrupts
from gliomil.vocabulary import GRADES

_ARRAYS = ("bag_logits", "max_instance_logits", "instance_logits", "attention", "critical", "bag_sizes")


@dataclass
class BagScores:
    """Model outputs for n bags. Per-slice arrays are flat, bag after bag (``bag_sizes`` long). The optional
    outputs are None for an aggregator without them (:class:`gliomil.model.mil.MILOutput`)."""

    bag_logits: np.ndarray  # (n,)
    max_instance_logits: np.ndarray | None  # (n,)
    instance_logits: np.ndarray | None  # (sum N,)
    attention: np.ndarray | None  # (sum N,)
    critical: np.ndarray | None  # (n,) index within the bag
    bag_sizes: np.ndarray  # (n,)
    prediction: str = "bag_stream"  # the model's rule, gliomil.model.mil.PREDICTIONS

    @property
    def probabilities(self) -> np.ndarray:
        """(n,) HGG probability per bag, by the model's ``prediction`` rule."""
        bag = expit(self.bag_logits)
        if self.prediction == "bag_stream":
            return bag
        return 0.5 * (bag + expit(self.max_instance_logits))

    def attention_per_bag(self) -> list[np.ndarray] | None:
        """The flat attention split into one (N_b,) array per bag; None without attention."""
        if self.attention is None:
            return None
        return np.split(self.attention, np.cumsum(self.bag_sizes)[:-1])

    @classmethod
    def concat(cls, parts: list[BagScores]) -> BagScores:
        def joined(name):
            values = [getattr(p, name) for p in parts]
            return None if values[0] is None else np.concatenate(values)

        return cls(*(joined(name) for name in _ARRAYS), prediction=parts[0].prediction)

    @classmethod
    def from_output(cls, out, prediction: str) -> BagScores:
        """From a :class:`gliomil.model.mil.MILOutput` (any device, any float dtype)."""

        def array(t):
            if t is None:
                return None
            return t.detach().float().cpu().numpy() if t.is_floating_point() else t.cpu().numpy()

        return cls(*(array(getattr(out, name)) for name in _ARRAYS), prediction=prediction)


def score_bags(
    model: MILModel, bags: list[np.ndarray], device: torch.device, chunk: int = 256, dtype: torch.dtype | None = None
) -> BagScores:
    """Score whole bags (every slice, each bag ``(N, 4, H, W)`` in axial order) deterministically, in eval mode;
    with the model's ``context_slices``, each slice with its neighbours (:func:`gliomil.data.bags.with_neighbours`)."""
    model.eval()
    parts = []
    for bag in bags:
        interrupts.check("while scoring")
        stacked = with_neighbours(np.asarray(bag, dtype=np.float32), model.context_slices)
        slices = torch.from_numpy(stacked).to(device)
        parts.append(BagScores.from_output(model.score_bag(slices, chunk, dtype), model.prediction))
    return BagScores.concat(parts)


def mil_summary(scores: BagScores, tumour_fraction: np.ndarray, positions: np.ndarray, top_k: int) -> dict:
    """Summary of the attention/instance diagnostics of scored bags (see :mod:`gliomil.evaluation.diagnostics`):
    the attention diagnostics only for an aggregator with attention, the instance-score ones only for one with
    instance scores (:func:`~gliomil.evaluation.diagnostics.available_summary`)."""
    return available_summary(
        scores.attention, scores.instance_logits, scores.bag_sizes, tumour_fraction, positions, top_k
    )


def whole_bag_summary(scores: BagScores, bag_set: BagSet, top_k: int) -> dict:
    """:func:`mil_summary` of bags scored whole by :func:`score_bags`, with the slices' tumour fractions."""
    return mil_summary(scores, np.concatenate(bag_set.tumour_fraction), np.concatenate(bag_set.position), top_k)


def patient_predictions(bag_set: BagSet, scores: BagScores, threshold: float, top: int = 3) -> pd.DataFrame:
    """One row per patient: grade, probability, predictions at 0.5 and at ``threshold``, critical and most
    attended slices (left empty for an aggregator without a critical slice or without attention)."""
    attention = scores.attention_per_bag()
    probabilities = scores.probabilities
    n = len(bag_set.subject_ids)
    return pd.DataFrame(
        {
            "subject_id": bag_set.subject_ids,
            "grade": np.array(GRADES)[bag_set.labels],
            "label": bag_set.labels,
            "probability": probabilities.round(6),
            "predicted_at_0.5": (probabilities >= 0.5).astype(int),
            "predicted_at_youden": (probabilities >= threshold).astype(int),
            "critical_slice": scores.critical if scores.critical is not None else pd.array([pd.NA] * n, "Int64"),
            "most_attended_slices": (
                [" ".join(map(str, np.argsort(-a, kind="stable")[:top])) for a in attention]
                if attention is not None
                else [""] * n
            ),
        }
    )
