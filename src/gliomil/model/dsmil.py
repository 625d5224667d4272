"""The slice encoder and the dual-stream multiple-instance learning (DSMIL) aggregator.

A patient is a bag of N axial slices, each ``(4, H, W)`` (flair, t1, t1ce, t2).
:class:`SliceEncoder` maps every slice to a feature vector of size K and
:class:`DSMILAggregator` turns a bag's ``(N, K)`` features into one bag logit per
class with the two streams of Li, Li & Eliceiri (CVPR 2021):

* instance stream: a linear score per slice; its argmax is the bag's *critical* slice;
* bag stream: attention of every slice to the critical one, ``softmax`` over the
  slices of ``Q q_max^T / sqrt(128)``, pools ``V`` into ``B`` (C x K), and a
  ``Conv1d(C, C, kernel_size=K)`` (a per-class dot product) gives the bag logit.

Submodule names follow the reference implementation (binli123/dsmil-wsi), so its
aggregator weights load with ``strict=True``; :class:`DSMILAggregator` lists the keys.

Batches hold bags of unequal size: the slices of all bags are concatenated along
dim 0 and ``bag_sizes`` says how many belong to each bag, in order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from gliomil.vocabulary import SLICE_POOLINGS

__all__ = [
    "BagSizes",
    "SliceEncoder",
    "InstanceClassifier",
    "BagClassifier",
    "AggregatorOutput",
    "DSMILAggregator",
    "as_bag_sizes",
    "bag_offsets",
]

#: Width of the query/key space of the bag stream; fixed by the reference model.
QUERY_DIM = 128

BagSizes = Sequence[int] | torch.Tensor


# --------------------------------------------------------------------------- bags
def as_bag_sizes(bag_sizes: BagSizes, total: int | None = None) -> list[int]:
    """Validate ``bag_sizes`` (a sequence or 1-D integer tensor) and return it as ints.

    Every bag needs at least one slice; when ``total`` is given the sizes must add
    up to it (the number of concatenated slices).
    """
    if isinstance(bag_sizes, torch.Tensor):
        if bag_sizes.dim() != 1 or bag_sizes.is_floating_point():
            raise ValueError(f"bag_sizes must be a 1-D integer tensor, got {bag_sizes.dtype} {tuple(bag_sizes.shape)}")
        sizes = [int(n) for n in bag_sizes.tolist()]
    else:
        sizes = [int(n) for n in bag_sizes]
    if not sizes:
        raise ValueError("bag_sizes is empty: a batch needs at least one bag")
    if min(sizes) < 1:
        raise ValueError(f"every bag needs at least one slice, got bag_sizes={sizes}")
    if total is not None and sum(sizes) != total:
        raise ValueError(f"bag_sizes add up to {sum(sizes)} but there are {total} slices")
    return sizes


def bag_offsets(bag_sizes: BagSizes) -> torch.Tensor:
    """Index of each bag's first slice in the concatenation: LongTensor (B,)."""
    sizes = torch.as_tensor(as_bag_sizes(bag_sizes), dtype=torch.long)
    return torch.cumsum(sizes, 0) - sizes


# ------------------------------------------------------------------------ encoder
class SliceEncoder(nn.Module):
    """Small 2-D CNN: ``depth`` blocks of Conv3x3 -> BatchNorm -> ReLU -> MaxPool2,
    with ``width * 2**i`` channels in block i, then global pooling over the slice (``pooling``, one of
    :data:`gliomil.vocabulary.SLICE_POOLINGS`): ``mean`` (average), ``max``, or ``mean_max`` (both, concatenated).

    Input ``(N, in_channels, H, W)`` float with ``H, W >= 2**depth``; output ``(N, K)``
    with ``K = out_features = width * 2**(depth - 1)`` (twice that for ``mean_max``).

    ``tumour_head`` (a number of maps, 0 = none) adds a 1x1 convolution on the last block's map before its MaxPool
    (``(H, W) / 2**(depth - 1)`` cells) that scores each cell for the tumour, or for each tumour region
    (:data:`gliomil.vocabulary.TUMOUR_REGIONS`, whole tumour first) (:meth:`encode`); ``train.pixel_supervision``
    teaches it from the segmentation during training. ``gated_max`` pooling needs it (one map at least): the maximum
    over that map of each cell's features times its sigmoid(whole-tumour score), so the slice's features come from
    where the encoder sees tumour.

    Why ``max`` exists: a tumour covers a small share of an axial slice, and the average over the whole map
    dilutes a local pattern (an enhancing rim) by the area of the brain around it; the maximum keeps the
    strongest response wherever it lies.

    BatchNorm rather than a per-slice norm (GroupNorm/InstanceNorm): a per-slice norm
    removes each slice's overall intensity level from its features, and with global
    average pooling on top the encoder could no longer tell a slice with a bright
    enhancing lesion from one without; measured on the built-in cohort, the GroupNorm
    encoder did not learn at all in 8 epochs (train AUC 0.46) where BatchNorm reached
    0.89. The price: in train mode a slice's features depend on its batch-mates. In eval
    mode (running statistics) every slice is encoded on its own, so scoring is
    deterministic and independent of the batch and of slice order.
    """

    def __init__(
        self, in_channels: int = 4, width: int = 16, depth: int = 4, pooling: str = "mean", tumour_head: int = 0
    ):
        super().__init__()
        if in_channels < 1 or width < 1 or depth < 1:
            raise ValueError(f"in_channels, width and depth must be >= 1, got {in_channels}, {width}, {depth}")
        if pooling not in SLICE_POOLINGS:
            raise ValueError(f"pooling must be one of {SLICE_POOLINGS}, got {pooling!r}")
        self.in_channels = in_channels
        self.depth = depth
        self.pooling = pooling
        layers: list[nn.Module] = []
        channels_in = in_channels
        for i in range(depth):
            channels_out = width * 2**i
            layers += [
                # No conv bias: the BatchNorm right after removes any per-channel offset.
                nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(channels_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels_in = channels_out
        # Channels-last convolutions: the layout oneDNN and CUDA tensor cores are fastest with; on this
        # project's CPU it took the default `dvc repro` from 7 min 23 s to 5 min 23 s (same params).
        self.features = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        self.out_features = channels_in * (2 if pooling == "mean_max" else 1)
        # Created after the blocks, so that the blocks are initialised as in a model without it.
        # int(): checkpoints written before the tumour regions record the head as a bool
        maps = max(int(tumour_head), 1 if pooling == "gated_max" else 0)
        self.tumour_head = nn.Conv2d(channels_in, maps, kernel_size=1) if maps else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, H, W)`` -> ``(N, out_features)``."""
        return self.encode(x)[0]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(N, in_channels, H, W)`` -> features ``(N, out_features)`` and, with the tumour head, its logits
        ``(N, maps, H / 2**(depth - 1), W / 2**(depth - 1))``, the whole tumour first (None without)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected slices (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        min_side = 2**self.depth
        if x.shape[2] < min_side or x.shape[3] < min_side:
            raise ValueError(
                f"slices must be at least {min_side}x{min_side} for depth {self.depth}, got {tuple(x.shape[2:])}"
            )
        x = x.contiguous(memory_format=torch.channels_last)
        if self.tumour_head is None:
            return self._pool(self.features(x)), None
        before_pool = self.features[:-1](x)
        tumour_logits = self.tumour_head(before_pool)
        if self.pooling == "gated_max":
            return (before_pool * torch.sigmoid(tumour_logits[:, :1])).amax(dim=(2, 3)), tumour_logits
        return self._pool(self.features[-1](before_pool)), tumour_logits

    def _pool(self, maps: torch.Tensor) -> torch.Tensor:
        if self.pooling == "mean":
            return maps.mean(dim=(2, 3))
        if self.pooling == "max":
            return maps.amax(dim=(2, 3))
        return torch.cat([maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))], dim=1)


# --------------------------------------------------------------------- aggregator
class InstanceClassifier(nn.Module):
    """Instance stream: one linear score per instance and class, ``(N, K) -> (N, C)``.

    ``fc`` is a one-layer Sequential so that the keys are ``fc.0.weight``/``fc.0.bias``
    like the reference.
    """

    def __init__(self, in_features: int, n_classes: int = 1):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(in_features, n_classes))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(feats)


class BagClassifier(nn.Module):
    """Bag stream of DSMIL for *one* bag.

    ``q``: ``Linear(K,128) -> ReLU -> Linear(128,128) -> Tanh`` (nonlinear) or
    ``Linear(K,128)``; ``v``: identity, or ``Dropout -> Linear(K,K) -> ReLU`` when
    ``passing_v``; ``fcc``: ``Conv1d(C, C, kernel_size=K)``.
    """

    def __init__(
        self,
        in_features: int,
        n_classes: int = 1,
        nonlinear_q: bool = True,
        passing_v: bool = False,
        dropout_v: float = 0.0,
    ):
        super().__init__()
        if nonlinear_q:
            self.q = nn.Sequential(
                nn.Linear(in_features, QUERY_DIM),
                nn.ReLU(),
                nn.Linear(QUERY_DIM, QUERY_DIM),
                nn.Tanh(),
            )
        else:
            self.q = nn.Linear(in_features, QUERY_DIM)
        if passing_v:
            self.v = nn.Sequential(nn.Dropout(dropout_v), nn.Linear(in_features, in_features), nn.ReLU())
        else:
            self.v = nn.Identity()
        self.fcc = nn.Conv1d(n_classes, n_classes, kernel_size=in_features)

    def forward(self, feats: torch.Tensor, instance_logits: torch.Tensor):
        """One bag: feats ``(N, K)``, instance_logits ``(N, C)``.

        Returns ``(bag_logits (C,), attention (N, C), critical (C,))``; column c of
        the attention sums to 1 over the N instances.
        """
        critical = instance_logits.argmax(dim=0)  # (C,)
        queries = self.q(feats)  # (N, 128)
        q_max = self.q(feats[critical])  # (C, 128)
        scores = queries @ q_max.T / math.sqrt(queries.shape[1])  # (N, C)
        attention = torch.softmax(scores, dim=0)  # over instances
        pooled = attention.T @ self.v(feats)  # (C, K)
        bag_logits = self.fcc(pooled.unsqueeze(0)).reshape(-1)  # (C,)
        return bag_logits, attention, critical


class AggregatorOutput(NamedTuple):
    """Per-class outputs of an aggregator for a batch of B bags. An aggregator without one of the optional parts
    gives None for it (mean pooling has no attention, attention MIL no instance scores): never a stand-in."""

    bag_logits: torch.Tensor  # (B, C)
    instance_logits: torch.Tensor | None  # (sum N_b, C) a score per instance
    max_instance_logits: torch.Tensor | None  # (B, C), the critical instance's logit: DSMIL's second stream
    attention: torch.Tensor | None  # (sum N_b, C), sums to 1 within each bag
    critical: torch.Tensor | None  # (B, C) long, index within the bag of the instance that decides


class DSMILAggregator(nn.Module):
    """DSMIL aggregator on instance features (Li, Li & Eliceiri, CVPR 2021, eq. 1-4).

    ``state_dict`` keys: ``i_classifier.fc.0.{weight [C,K], bias [C]}``,
    ``b_classifier.q.0.* [128,K]``, ``b_classifier.q.2.* [128,128]`` (nonlinear q) or
    ``b_classifier.q.*`` (linear q), ``b_classifier.v.1.* [K,K]`` (passing_v),
    ``b_classifier.fcc.{weight [C,C,K], bias [C]}``.

    Always computes in float32: under autocast the argmax that picks the critical
    instance and the attention softmax would otherwise see bf16 scores, whose coarse
    rounding makes ties and flips of the critical instance common; the aggregator is a
    negligible share of the cost.
    """

    def __init__(
        self,
        in_features: int,
        n_classes: int = 1,
        nonlinear_q: bool = True,
        passing_v: bool = False,
        dropout_v: float = 0.0,
    ):
        super().__init__()
        self.in_features = in_features
        self.n_classes = n_classes
        self.i_classifier = InstanceClassifier(in_features, n_classes)
        self.b_classifier = BagClassifier(in_features, n_classes, nonlinear_q, passing_v, dropout_v)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Orthogonal weights and zero biases for every Linear and Conv1d (reference init)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d)):
                nn.init.orthogonal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, feats: torch.Tensor, bag_sizes: BagSizes | None = None) -> AggregatorOutput:
        """feats ``(sum N_b, K)`` of the concatenated bags; ``bag_sizes`` (B,) or None
        for a single bag. Returns an :class:`AggregatorOutput`."""
        if feats.dim() != 2 or feats.shape[1] != self.in_features:
            raise ValueError(f"expected features (N, {self.in_features}), got {tuple(feats.shape)}")
        sizes = as_bag_sizes([feats.shape[0]] if bag_sizes is None else bag_sizes, feats.shape[0])
        with torch.autocast(device_type=feats.device.type, enabled=False):
            feats = feats.float()
            instance_logits = self.i_classifier(feats)  # (sum N, C)
            # A loop over bags: B is small (a few patients) and the per-bag work is a
            # few tiny matmuls, so padding and masking would buy nothing but risk.
            bags, attention, critical = [], [], []
            for f, c in zip(torch.split(feats, sizes), torch.split(instance_logits, sizes)):
                b, a, k = self.b_classifier(f, c)
                bags.append(b)
                attention.append(a)
                critical.append(k)
            critical_t = torch.stack(critical)  # (B, C)
            first = bag_offsets(sizes).to(feats.device).unsqueeze(1)  # (B, 1)
            max_instance = instance_logits.gather(0, first + critical_t)  # (B, C)
        return AggregatorOutput(
            bag_logits=torch.stack(bags),
            instance_logits=instance_logits,
            max_instance_logits=max_instance,
            attention=torch.cat(attention),
            critical=critical_t,
        )
