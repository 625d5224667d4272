"""The patient-level model: the slice encoder, one MIL aggregator (``train.model.aggregator``), and its config.

``MILModel(slices (sum N_b, 4, H, W), bag_sizes (B,)) -> MILOutput`` (with ``context_slices`` k, each slice comes
with its k neighbours on either side as channels, (sum N_b, 4 (2k + 1), H, W): see
:func:`gliomil.data.bags.with_neighbours`): the encoder
(:class:`gliomil.model.dsmil.SliceEncoder`) runs once on every slice of the batch, the aggregator pools each bag's
features into its HGG logit. The aggregators (:data:`gliomil.vocabulary.AGGREGATORS`) are DSMIL (the default,
:mod:`gliomil.model.dsmil`) and the mean, max and gated-attention pooling of :mod:`gliomil.model.pooling`, all on
the same encoder. With ``tumour_moments`` the bag logit also reads the tumour's intensity moments as the model's
own per-pixel segmenter measures them (:mod:`gliomil.model.moments`), and with the three regions' tumour head also the
regions' areas as the head measures them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from gliomil.model.dsmil import BagSizes, DSMILAggregator, SliceEncoder, as_bag_sizes
from gliomil.model.moments import TumourMoments
from gliomil.model.pooling import GatedAttention, MaxPooling, MeanPooling
from gliomil.vocabulary import AGGREGATORS, PIXEL_TARGETS

__all__ = ["PREDICTIONS", "MILOutput", "MILModel", "ModelConfig"]

#: How a bag's HGG probability is read: ``bag_stream`` is sigmoid(bag logit), the reference's default and the only
#: rule of the one-stream aggregators; ``both_streams`` (DSMIL only) is the mean of sigmoid(bag logit) and
#: sigmoid(max instance logit), the reference's ``--average`` option, and the two terms its loss weighs equally.
PREDICTIONS = ("bag_stream", "both_streams")


class MILOutput(NamedTuple):
    """Outputs of :class:`MILModel` for a batch of B bags (binary task, the one class squeezed). The optional
    parts are None for an aggregator without them (:mod:`gliomil.model.pooling`'s table)."""

    bag_logits: torch.Tensor  # (B,) logit of HGG
    instance_logits: torch.Tensor | None  # (sum N_b,) a score per slice
    max_instance_logits: torch.Tensor | None  # (B,) DSMIL's critical-instance stream
    attention: torch.Tensor | None  # (sum N_b,) >= 0, sums to 1 within each bag
    critical: torch.Tensor | None  # (B,) long, index within its bag of the slice that decides
    bag_sizes: torch.Tensor  # (B,) long, on the CPU
    tumour_logits: torch.Tensor | None = None  # (sum N_b, maps, h, w) the encoder's tumour head, from forward only
    # (sum N_b, 1, H, W) the tumour-moments stream's per-pixel tumour logits, from forward only
    pixel_logits: torch.Tensor | None = None
    # (B,) the tumour-moments stream's own logit, already added to bag_logits; its own loss teaches its head
    moments_logits: torch.Tensor | None = None


def _column(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor[:, 0]


class MILModel(nn.Module):
    """Slice encoder + MIL aggregator for HGG (positive, label 1) vs LGG (label 0).

    ``prediction`` (one of :data:`PREDICTIONS`) is how callers turn the outputs into a probability
    (:class:`gliomil.evaluation.scoring.BagScores`); it does not change the forward pass.
    """

    n_classes = 1

    def __init__(
        self,
        in_channels: int = 4,
        width: int = 16,
        depth: int = 4,
        aggregator: str = "dsmil",
        nonlinear_q: bool = True,
        passing_v: bool = False,
        dropout_v: float = 0.0,
        prediction: str = "bag_stream",
        slice_pooling: str = "mean",
        tumour_head: int = 0,
        context_slices: int = 0,
        tumour_moments: bool = False,
        tumour_shape: bool = False,
    ):
        super().__init__()
        if context_slices < 0:
            raise ValueError(f"context_slices must be >= 0, got {context_slices}")
        if aggregator not in AGGREGATORS:
            raise ValueError(f"aggregator must be one of {AGGREGATORS}, got {aggregator!r}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if prediction == "both_streams" and aggregator != "dsmil":
            raise ValueError(f"prediction both_streams needs DSMIL's second stream; aggregator {aggregator} has one")
        self.prediction = prediction
        self.context_slices = context_slices
        self.encoder = SliceEncoder(in_channels * (2 * context_slices + 1), width, depth, slice_pooling, tumour_head)
        features = self.encoder.out_features
        if aggregator == "dsmil":
            self.aggregator = DSMILAggregator(features, self.n_classes, nonlinear_q, passing_v, dropout_v)
        else:
            self.aggregator = {"mean": MeanPooling, "max": MaxPooling, "abmil": GatedAttention}[aggregator](
                features, self.n_classes
            )
        # Created last, so that everything before it is initialised as in a model without it.
        # With the three regions' head (train.pixel_target: regions) the stream also reads the regions' areas.
        regions = int(tumour_head) == PIXEL_TARGETS["regions"]
        if tumour_shape and not tumour_moments:
            raise ValueError("tumour_shape is a number of the tumour-moments stream's mask: it needs tumour_moments")
        self.moments = TumourMoments(in_channels, regions, tumour_shape) if tumour_moments else None

    def forward(self, slices: torch.Tensor, bag_sizes: BagSizes) -> MILOutput:
        sizes = as_bag_sizes(bag_sizes, slices.shape[0])
        feats, tumour_logits = self.encoder.encode(slices)
        if self.moments is None:
            return self.aggregate(feats, sizes)._replace(tumour_logits=tumour_logits)
        pixel_logits, sums = self.moments.measure(self.centre(slices), tumour_logits)
        bag_sums = torch.stack([part.sum(dim=0) for part in torch.split(sums, sizes)])
        return self.aggregate(feats, sizes, bag_sums)._replace(tumour_logits=tumour_logits, pixel_logits=pixel_logits)

    def centre(self, slices: torch.Tensor) -> torch.Tensor:
        """The slices themselves ``(N, 4, H, W)`` out of slices with their 2.5D neighbours (channels neighbour by
        neighbour from below, :func:`gliomil.data.bags.with_neighbours`)."""
        channels = slices.shape[1] // (2 * self.context_slices + 1)
        return slices[:, self.context_slices * channels : (self.context_slices + 1) * channels]

    def aggregate(self, feats: torch.Tensor, bag_sizes: BagSizes, moment_sums: torch.Tensor | None = None) -> MILOutput:
        """Slice features ``(sum N_b, K)`` of B bags -> :class:`MILOutput` (the one class column, squeezed). With
        the tumour-moments stream, ``moment_sums`` ``(B, 9)`` (two more with the shape, three more with the regions)
        are each bag's summed :meth:`~gliomil.model.moments.TumourMoments.measure` sums, whose logit joins the bag
        logit."""
        sizes = as_bag_sizes(bag_sizes, feats.shape[0])
        out = self.aggregator(feats, sizes)
        bag_logits, moments_logits = out.bag_logits[:, 0], None
        if self.moments is not None:
            if moment_sums is None:
                raise ValueError("a model with the tumour-moments stream needs each bag's moment sums")
            moments_logits = self.moments.bag_logits(moment_sums, torch.tensor(sizes))
            bag_logits = bag_logits + moments_logits
        return MILOutput(
            bag_logits=bag_logits,
            instance_logits=_column(out.instance_logits),
            max_instance_logits=_column(out.max_instance_logits),
            attention=_column(out.attention),
            critical=_column(out.critical),
            bag_sizes=torch.tensor(sizes, dtype=torch.long),
            moments_logits=moments_logits,
        )

    @torch.no_grad()
    def score_bag(self, bag: torch.Tensor, chunk: int, autocast_dtype: torch.dtype | None = None) -> MILOutput:
        """One whole bag ``(N, in_channels, H, W)``, every slice, in eval mode -> :class:`MILOutput` of one bag.
        With ``context_slices`` k, ``in_channels`` is 4 (2k + 1): each slice with its neighbours
        (:func:`gliomil.data.bags.with_neighbours`).

        The encoder runs on ``chunk`` slices at a time (memory stays bounded for any N) under
        ``autocast_dtype`` (None: float32); the aggregator always runs in float32. Call ``eval()`` first:
        with running BatchNorm statistics each slice is encoded on its own, so the result does not
        depend on ``chunk``.
        """
        enabled = autocast_dtype is not None
        feats, sums = [], []
        for start in range(0, len(bag), chunk):
            part = bag[start : start + chunk]
            with torch.autocast(bag.device.type, dtype=autocast_dtype or torch.float32, enabled=enabled):
                encoded, tumour_logits = self.encoder.encode(part)
                feats.append(encoded.float())
            if self.moments is not None:
                sums.append(self.moments.measure(self.centre(part), tumour_logits)[1].sum(dim=0))
        moment_sums = torch.stack(sums).sum(dim=0, keepdim=True) if sums else None
        return self.aggregate(torch.cat(feats), [len(bag)], moment_sums)


@dataclass(frozen=True)
class ModelConfig:
    """The architecture of a :class:`MILModel` (params.yaml ``train.model``); saved in every checkpoint.

    Defaults are the DSMIL reference's aggregator settings on this project's encoder; ``nonlinear_q``,
    ``passing_v`` and ``dropout_v`` shape DSMIL's bag stream only.
    """

    width: int = 16
    depth: int = 4
    aggregator: str = "dsmil"  # one of gliomil.vocabulary.AGGREGATORS; only dsmil has a second stream
    nonlinear_q: bool = True
    passing_v: bool = False
    dropout_v: float = 0.0
    prediction: str = "bag_stream"  # one of PREDICTIONS
    slice_pooling: str = "mean"  # one of gliomil.vocabulary.SLICE_POOLINGS: the encoder's pooling over a slice
    # maps the encoder's tumour head scores (train.pixel_supervision > 0: 1 for the tumour, 3 for its regions; or
    # gated_max); 0 = no head
    tumour_head: int = 0
    # 2.5D: each slice is encoded with this many neighbours on either side as channels (gliomil.data.bags)
    context_slices: int = 0
    # the tumour-moments stream (gliomil.model.moments): a per-pixel segmenter taught by train.pixel_supervision,
    # whose tumour's intensity moments join the bag logit (with the three regions' head, tumour_head 3, also the
    # regions' areas the head measures)
    tumour_moments: bool = False
    # with tumour_moments: the stream also reads how far its mask's outline is from a disc's, slice by slice
    tumour_shape: bool = False

    def build(self) -> MILModel:
        return MILModel(
            in_channels=4,
            width=self.width,
            depth=self.depth,
            aggregator=self.aggregator,
            nonlinear_q=self.nonlinear_q,
            passing_v=self.passing_v,
            dropout_v=self.dropout_v,
            prediction=self.prediction,
            slice_pooling=self.slice_pooling,
            tumour_head=self.tumour_head,
            context_slices=self.context_slices,
            tumour_moments=self.tumour_moments,
            tumour_shape=self.tumour_shape,
        )
