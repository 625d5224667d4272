"""The other MIL aggregators of ``train.model.aggregator``: mean pooling, max pooling and gated attention.

Each has :class:`gliomil.model.dsmil.DSMILAggregator`'s interface, ``forward(feats (sum N_b, K), bag_sizes) ->
AggregatorOutput``, on the same encoder, and gives only what it has (the rest is None, never a stand-in):

==============  ===========================================  ================  =========  ============
aggregator      bag logit                                    instance scores   attention  critical
==============  ===========================================  ================  =========  ============
``mean``        mean of the instances' linear scores         yes               no         no
``max``         max of the instances' linear scores          yes               no         the argmax
``abmil``       linear on the gated-attention-pooled bag     no                yes        no
==============  ===========================================  ================  =========  ============

Mean and max pooling of instance scores are the mi-Net baselines of Wang et al. (Pattern Recognition 2018);
``abmil`` is the gated attention of Ilse, Tomczak & Welling (ICML 2018), eq. 9:
``a_n = softmax_n(w^T (tanh(V h_n) * sigmoid(U h_n)))``, ``z = sum_n a_n h_n``, bag logit ``c^T z + b``.
Every aggregator computes in float32, as DSMIL's does.
"""

from __future__ import annotations

import torch
from torch import nn

from gliomil.model.dsmil import QUERY_DIM, AggregatorOutput, BagSizes, as_bag_sizes

__all__ = ["MeanPooling", "MaxPooling", "GatedAttention"]


class _InstanceScorePooling(nn.Module):
    """A linear score per instance and class, ``classifier: Linear(K, C)``, pooled per bag by :meth:`pool`."""

    def __init__(self, in_features: int, n_classes: int = 1):
        super().__init__()
        self.in_features = in_features
        self.classifier = nn.Linear(in_features, n_classes)

    def forward(self, feats: torch.Tensor, bag_sizes: BagSizes | None = None) -> AggregatorOutput:
        if feats.dim() != 2 or feats.shape[1] != self.in_features:
            raise ValueError(f"expected features (N, {self.in_features}), got {tuple(feats.shape)}")
        sizes = as_bag_sizes([feats.shape[0]] if bag_sizes is None else bag_sizes, feats.shape[0])
        with torch.autocast(device_type=feats.device.type, enabled=False):
            scores = self.classifier(feats.float())  # (sum N, C)
            return self.pool(scores, sizes)

    def pool(self, scores: torch.Tensor, sizes: list[int]) -> AggregatorOutput:
        raise NotImplementedError


class MeanPooling(_InstanceScorePooling):
    """Bag logit = the mean of its instances' linear scores (= the linear score of the mean feature)."""

    def pool(self, scores: torch.Tensor, sizes: list[int]) -> AggregatorOutput:
        bags = torch.stack([part.mean(dim=0) for part in torch.split(scores, sizes)])  # (B, C)
        return AggregatorOutput(bags, scores, None, None, None)


class MaxPooling(_InstanceScorePooling):
    """Bag logit = the largest of its instances' linear scores; ``critical`` is that instance (first on ties)."""

    def pool(self, scores: torch.Tensor, sizes: list[int]) -> AggregatorOutput:
        best = [part.max(dim=0) for part in torch.split(scores, sizes)]
        return AggregatorOutput(
            torch.stack([b.values for b in best]), scores, None, None, torch.stack([b.indices for b in best])
        )


class GatedAttention(nn.Module):
    """Gated attention MIL (Ilse et al. 2018): ``attention_v: Linear(K, L) -> Tanh``, ``attention_u: Linear(K, L) ->
    Sigmoid``, ``attention_w: Linear(L, C)`` give one attention per instance and class (softmax over the bag's
    instances); ``classifier: Linear(K, 1)`` applied to class c's pooled feature gives its bag logit. L = 128, the
    paper's size."""

    def __init__(self, in_features: int, n_classes: int = 1, hidden: int = QUERY_DIM):
        super().__init__()
        self.in_features = in_features
        self.attention_v = nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh())
        self.attention_u = nn.Sequential(nn.Linear(in_features, hidden), nn.Sigmoid())
        self.attention_w = nn.Linear(hidden, n_classes)
        self.classifier = nn.Linear(in_features, 1)

    def forward(self, feats: torch.Tensor, bag_sizes: BagSizes | None = None) -> AggregatorOutput:
        if feats.dim() != 2 or feats.shape[1] != self.in_features:
            raise ValueError(f"expected features (N, {self.in_features}), got {tuple(feats.shape)}")
        sizes = as_bag_sizes([feats.shape[0]] if bag_sizes is None else bag_sizes, feats.shape[0])
        with torch.autocast(device_type=feats.device.type, enabled=False):
            feats = feats.float()
            scores = self.attention_w(self.attention_v(feats) * self.attention_u(feats))  # (sum N, C)
            attention = torch.cat([torch.softmax(part, dim=0) for part in torch.split(scores, sizes)])  # (sum N, C)
            bag_index = torch.repeat_interleave(
                torch.arange(len(sizes), device=feats.device), torch.tensor(sizes, device=feats.device)
            )
            # (B, C, K): each class's attention-weighted sum of its bag's features
            pooled = torch.zeros(len(sizes), attention.shape[1], feats.shape[1], device=feats.device)
            pooled.index_add_(0, bag_index, attention.unsqueeze(2) * feats.unsqueeze(1))
            bags = self.classifier(pooled)[..., 0]  # (B, C)
        return AggregatorOutput(bags, None, None, attention, None)
