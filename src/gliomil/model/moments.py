"""The tumour-moments stream (``train.model.tumour_moments``): the model measures its own tumour's intensities.

What the two-stage baseline ``predicted_mask`` measures (:mod:`gliomil.baselines.segmented`: a per-pixel segmenter,
then the statistics of each modality inside the predicted tumour), learned inside the model, read from the images:

1. a per-pixel logistic regression on each slice's four intensities and their means over the ``NEIGHBOURHOOD`` x
   ``NEIGHBOURHOOD`` square around the pixel (the baseline's features), ``SEGMENTER_GAIN x Conv1x1(8, 1)``, taught
   the tumour's interior (:meth:`TumourMoments.pixel_targets`: the pixels at least ``INTERIOR`` tumour) at full
   resolution by ``train.pixel_supervision``'s loss (every pixel of the slice; the baseline fits a standardised
   regression on sampled brain pixels of the whole tumour instead);
2. per bag, over all its slices, the moments of each modality inside the mask it predicts (the brain's pixels
   whose tumour probability is at least 0.5, as the baseline's): the mean and the standard deviation, and the log
   of the mask's mean area per slice, ``log(1 + pixels / N)``: ``2 * 4 + 1`` numbers per bag;
3. each number standardised by its running mean and variance over the training bags (BatchNorm's running
   statistics, used in training too: a batch of 4 bags is too few to standardise by), then a linear logit times
   ``CLASSIFIER_GAIN``, added to the aggregator's bag logit: the bag classifier reads the pooled MIL features and
   the tumour's moments side by side. It starts at zero, so an untrained stream changes nothing. The training loss
   also holds the grade loss of this logit alone (:func:`gliomil.training.loop.train_step`), as each of DSMIL's two
   streams has its own: taught only through the sum, the head learnt what the MIL stream left, and the encoder
   soon fits its training bags and leaves little (``benchmarks/moments_ceiling.py`` at seed 42 without this loss:
   the stream's logit alone 0.881, a regression refitted on the same nine numbers 0.904). With it the head moved
   little (its logit alone 0.887 at seed 42); early checkpoint selection accounts for part of the rest
   (docs/models.md, "The stream's head").

With ``train.model.tumour_shape`` the stream also reads the outline of its mask (:meth:`TumourMoments.slice_sums`):
``log((1 + sum of the slices' perimeters) / (1 + sum of their discs' perimeters))``, a slice's perimeter the number
of pixel edges between its mask and the rest (the slice's border included), its disc's ``sqrt(4 pi area)`` for the
mask's area in pixels: how far the outline is from a disc's, slice by slice, a 2-D counterpart of the sphericity in
radiomics' shape features (VASARI also grades the margins). Per-slice sums, so a bag of random slices measures it as
the whole patient does and chunks add up. In this cohort the shape holds grade beside the intensities: LGG grow
along the white matter (``wm_spread`` in :func:`gliomil.synthetic.cohort.sample_tumour`), HGG displace the brain
around them. The outline adds to the nine numbers inside the true interior and inside a linear per-pixel segmenter's
hard mask, the stream's kind, on seeds 42 to 44's folds (``benchmarks/baseline_ablation.py``'s ``outline`` rows;
docs/models.md, "The tumour's outline").

With ``train.pixel_target: regions`` the encoder's tumour head scores the three BraTS regions
(:data:`gliomil.vocabulary.TUMOUR_REGIONS`) on its ``(H, W) / 8`` cells, and the stream also reads four numbers from
it (:meth:`TumourMoments.region_areas`): the tumour core's and the enhancing tumour's areas as shares of the whole
tumour's, and the log of each one's mean area per slice, ``2 * 4 + 1 + 4`` numbers per bag. The true regions add
0.010 to 0.014 pooled AUC to the true interior's nine numbers at 64 px over seeds 42 to 44, where per-pixel
segmenters, which see a pixel's own neighbourhood, did not find them (``benchmarks/baseline_ablation.py``,
docs/models.md "What more the stream could measure"); the encoder's head sees the whole slice. Its areas are soft
(the sum of each cell's probability times the cell's pixels): the head is taught each cell's share of a region
(:func:`gliomil.training.losses.pixel_supervision_loss`), so a calibrated head's sum estimates the area even where a
rim a pixel or two thick never makes a cell more than half enhancing. They are detached as the mask is. Screened at
seed 42 (docs/models.md, "The regions in the stream"), the 13 numbers gave the nine's pooled AUC (0.884 both): after
20 epochs the head is far from calibrated (its enhancing area per slice 8.4 pixels in LGG against the truth's 1.1,
Spearman 0.31 with the truth), so this option is kept for a better head, not as a candidate that helped.

Why a hard mask: the grade loss does not reach the segmenter anyway (the mask is detached: the segmenter learns
where the tumour is from the segmentation only, and the grade cannot move it towards whatever region separates the
training bags), and soft weights let the brain's thousands of pixels with a small tumour probability swamp the
tumour's few hundred: in a first run with sigmoid weights, fold 0's selected model measured an SD of about 1 in
every modality, the brain's, and a "tumour" of 260 pixels a slice.

Why the gains: both parts are logistic regressions learned from zero (the segmenter's bias from ``PRIOR_LOGIT``),
and Adam moves each weight by about the learning rate per step, whatever its gradient's size. In the default 20
epochs (about 920 steps: 182 training patients a fold, 4 a step; at a mean rate of 5e-4) a weight travels about 0.5
at most, while the segmenter's weights on z-scored intensities must outweigh a bias of about -4 (the log-odds of a
brain pixel being tumour: about 2% are, 1% of the slices'), and a standardised logistic regression on the true
tumour's means, SDs and log size (the columns of ``data/baseline_features.csv``, all 285 patients) has weights up to
2.3 (flair SD) and -1.25 (t1 SD). A gain g gives that part g times the encoder's learning rate without a second
optimiser group; ``benchmarks/segmenter_gain.py`` measures the segmenter's Dice against its steps for several.

Moments are sums over the slices, so a bag scored in chunks (:meth:`gliomil.model.mil.MILModel.score_bag`) adds up
its chunks' sums. Everything here computes in float32: a bf16 ``sum x^2 - mean^2`` over a tumour's thousands of
pixels would be noise.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "NEIGHBOURHOOD",
    "INTERIOR",
    "SEGMENTER_GAIN",
    "CLASSIFIER_GAIN",
    "PRIOR_LOGIT",
    "MOMENTUM",
    "REGION_MAPS",
    "TumourMoments",
]

#: In-plane side of the square whose mean intensities each pixel also sees (the predicted_mask baseline's).
NEIGHBOURHOOD = 5
#: The segmenter is taught the tumour's interior: the pixels at least this share tumour in the whole tumour's map (at
#: the slices' resolution). Boundary pixels mix tumour and brain and dilute the tumour's moments: inside the true map
#: the nine numbers give a pooled AUC of 0.909, 0.896, 0.902 at >= 0.75 against 0.899, 0.882, 0.892 at >= 0.5
#: (seeds 42-44's folds, ``benchmarks/moments_ceiling.py``).
INTERIOR = 0.75
#: The segmenter's logit is SEGMENTER_GAIN x its linear layer's, the stream's grade logit CLASSIFIER_GAIN x its
#: classifier's (the module's docstring says why).
SEGMENTER_GAIN = 100.0
CLASSIFIER_GAIN = 10.0
EPS = 1e-5
#: The untrained segmenter's logit everywhere: the log-odds of a brain pixel being tumour (about 2% are: log(0.02 /
#: 0.98) = -3.9), the prior initialisation of Lin et al.'s focal-loss paper (ICCV 2017, section 4.1). Its mask
#: starts empty, not as the whole brain, and the segmenter starts from the prior, not from 50%.
PRIOR_LOGIT = -4.0
#: Weight of each training batch in the standardiser's running statistics, which start at mean 0 and variance 1.
MOMENTUM = 0.05
#: The regions besides the whole tumour whose areas the stream reads with ``regions``: the tumour core and the
#: enhancing tumour (:data:`gliomil.vocabulary.TUMOUR_REGIONS`' second and third).
REGION_MAPS = 2


class TumourMoments(nn.Module):
    """Per-pixel tumour segmenter and a linear grade logit on the bag's tumour moments.

    ``segment(slices (N, C, H, W)) -> logits (N, 1, H, W)``; ``slice_sums(slices, logits) -> (N, 1 + 2C)`` holding
    per slice ``sum w``, ``sum w x_c`` and ``sum w x_c^2``; ``bag_logits(sums (B, S), slices_per_bag (B,)) -> (B,)``
    with ``S = 1 + 2C``, two more with ``shape`` (the outline), three more with ``regions`` (:meth:`measure` appends
    :meth:`region_areas`). ``C`` is
    ``in_channels`` (4: flair, t1, t1ce, t2), the slice itself without its 2.5D neighbours.
    """

    def __init__(self, in_channels: int = 4, regions: bool = False, shape: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.regions = regions
        self.shape = shape
        self.segmenter = nn.Conv2d(2 * in_channels, 1, kernel_size=1)
        nn.init.zeros_(self.segmenter.weight)
        nn.init.constant_(self.segmenter.bias, PRIOR_LOGIT / SEGMENTER_GAIN)
        box = torch.full((in_channels, 1, NEIGHBOURHOOD, NEIGHBOURHOOD), 1.0 / NEIGHBOURHOOD**2)
        self.register_buffer("box", box, persistent=False)  # a fixed mean filter per modality, not a weight
        features = 2 * in_channels + 1 + (1 if shape else 0) + (2 * REGION_MAPS if regions else 0)
        self.register_buffer("running_mean", torch.zeros(features))
        self.register_buffer("running_var", torch.ones(features))
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))
        self.classifier = nn.Linear(features, 1)
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def segment(self, slices: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> the tumour logit of every pixel, ``(N, 1, H, W)`` float32."""
        if slices.dim() != 4 or slices.shape[1] != self.in_channels:
            raise ValueError(f"expected slices (N, {self.in_channels}, H, W), got {tuple(slices.shape)}")
        with torch.autocast(device_type=slices.device.type, enabled=False):
            # Channels-last: oneDNN's depthwise and 1 x 1 convolutions are several times faster in it than
            # avg_pool2d and NCHW on this project's CPU (the stream's share of a training step, docs/models.md).
            values = slices.float().contiguous(memory_format=torch.channels_last)
            local = F.conv2d(values, self.box, padding=NEIGHBOURHOOD // 2, groups=self.in_channels)
            return SEGMENTER_GAIN * self.segmenter(torch.cat([values, local], dim=1))

    @staticmethod
    def pixel_targets(tumour_maps: torch.Tensor) -> torch.Tensor:
        """The segmenter's targets: the whole tumour's maps ``(N, 1, H, W)``, each pixel's tumour share in [0, 1] ->
        1.0 where the share is at least ``INTERIOR``, else 0.0 (float32)."""
        return (tumour_maps >= INTERIOR).float()

    @staticmethod
    def slice_sums(slices: torch.Tensor, logits: torch.Tensor, shape: bool = False) -> torch.Tensor:
        """Per slice ``[sum w, sum w x_1 .. sum w x_C, sum w x_1^2 .. sum w x_C^2]``, ``(N, 1 + 2C)`` float32, with
        ``w`` 1 on the mask: the brain's pixels (any modality non-zero) where ``logits`` ``(N, 1, H, W)`` >= 0
        (probability >= 0.5), 0 elsewhere. No gradient flows through the mask. With ``shape``, ``(N, 3 + 2C)``: then
        the mask's perimeter in pixel edges (the vertical and horizontal edges between a mask pixel and a pixel
        outside it or the slice's border) and ``sqrt(4 pi sum w)``, the perimeter of a disc of the mask's area."""
        with torch.autocast(device_type=slices.device.type, enabled=False):
            values = slices.float()
            brain = (values != 0).any(dim=1, keepdim=True)
            weights = ((logits.detach() >= 0) & brain).float()  # (N, 1, H, W)
            mass = weights.sum(dim=(1, 2, 3)).unsqueeze(1)  # (N, 1)
            weighted = weights * values
            first = weighted.sum(dim=(2, 3))  # (N, C)
            second = (weighted * values).sum(dim=(2, 3))  # (N, C)
            if not shape:
                return torch.cat([mass, first, second], dim=1)
            framed = F.pad(weights, (1, 1, 1, 1))  # outside the slice is not mask
            edges = framed.diff(dim=2).abs().sum(dim=(1, 2, 3)) + framed.diff(dim=3).abs().sum(dim=(1, 2, 3))
            disc = torch.sqrt(4 * torch.pi * mass)
            return torch.cat([mass, first, second, edges.unsqueeze(1), disc], dim=1)

    @staticmethod
    def region_areas(tumour_logits: torch.Tensor, pixels: int) -> torch.Tensor:
        """The encoder's tumour head's logits ``(N, 3, h, w)`` (:data:`gliomil.vocabulary.TUMOUR_REGIONS`' order) of
        slices of ``pixels`` = H x W pixels -> each slice's soft area in pixels of the whole tumour, the tumour core
        and the enhancing tumour, ``(N, 3)`` float32: the sum of the cells' probabilities times a cell's pixels. No
        gradient flows back to the head."""
        if tumour_logits.dim() != 4 or tumour_logits.shape[1] != 1 + REGION_MAPS:
            raise ValueError(f"expected the three regions' logits (N, 3, h, w), got {tuple(tumour_logits.shape)}")
        cell = pixels / (tumour_logits.shape[2] * tumour_logits.shape[3])
        with torch.autocast(device_type=tumour_logits.device.type, enabled=False):
            return torch.sigmoid(tumour_logits.detach().float()).sum(dim=(2, 3)) * cell

    def measure(self, slices: torch.Tensor, tumour_logits: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``slices (N, C, H, W)`` and the encoder's tumour head's logits (only read with ``regions``) -> the
        segmenter's logits ``(N, 1, H, W)`` and each slice's sums ``(N, S)``: :meth:`slice_sums`, then with
        ``regions`` :meth:`region_areas`. A bag's sums are the sums of its slices' (chunks add up)."""
        pixel_logits = self.segment(slices)
        sums = self.slice_sums(slices, pixel_logits, self.shape)
        if self.regions:
            if tumour_logits is None:
                raise ValueError("the tumour-moments stream with regions reads the encoder's tumour head's logits")
            sums = torch.cat([sums, self.region_areas(tumour_logits, slices.shape[2] * slices.shape[3])], dim=1)
        return pixel_logits, sums

    def moments(self, sums: torch.Tensor, slices_per_bag: torch.Tensor) -> torch.Tensor:
        """A bag's summed :meth:`slice_sums` ``(B, 1 + 2C)`` and its slice count ``(B,)`` -> ``(B, 2C + 1)``: each
        modality's mean inside the mask, then its standard deviation, then ``log(1 + sum w / N)``. A bag with an
        empty mask (an untrained segmenter's: its logits are all ``PRIOR_LOGIT``) has means of 0, SDs of 0.001 (the
        variance's floor) and an area of 0.

        With ``shape``, sums ``(B, 3 + 2C)`` -> ``(B, 2C + 2)``: then the outline's
        ``log((1 + sum of perimeters) / (1 + sum of their discs' perimeters))`` (0 for an empty mask).

        With ``regions``, three more sums at the end (:meth:`measure`) -> four more numbers at the end: the tumour
        core's and the enhancing tumour's soft areas as shares of the whole tumour's (floored at one pixel), then
        ``log(1 + area / N)`` of each."""
        channels = self.in_channels
        slices = slices_per_bag.to(sums.device).float().unsqueeze(1)
        mass = sums[:, :1].clamp_min(1.0)
        mean = sums[:, 1 : 1 + channels] / mass
        variance = (sums[:, 1 + channels : 1 + 2 * channels] / mass - mean * mean).clamp_min(1e-6)
        numbers = [mean, variance.sqrt(), torch.log1p(sums[:, :1] / slices)]
        start = 1 + 2 * channels
        if self.shape:
            edges, discs = sums[:, start : start + 1], sums[:, start + 1 : start + 2]
            numbers.append(torch.log((1.0 + edges) / (1.0 + discs)))
            start += 2
        if self.regions:
            whole, regions = sums[:, start : start + 1], sums[:, start + 1 :]
            numbers += [regions / whole.clamp_min(1.0), torch.log1p(regions / slices)]
        return torch.cat(numbers, dim=1)

    def bag_logits(self, sums: torch.Tensor, slices_per_bag: torch.Tensor) -> torch.Tensor:
        """:meth:`moments`, standardised, -> the stream's HGG logit per bag, ``(B,)``. In train mode the batch first
        moves the running statistics ``MOMENTUM`` of the way to its own, from mean 0 and variance 1. They are not set
        by the first batch: an untrained segmenter measures an empty mask in every bag, and a variance learnt from it
        (0) would blow up every standardised value once the segmenter finds the tumour."""
        with torch.autocast(device_type=sums.device.type, enabled=False):
            moments = self.moments(sums.float(), slices_per_bag)
            if self.training:
                with torch.no_grad():
                    self.running_mean.lerp_(moments.mean(dim=0), MOMENTUM)
                    if len(moments) > 1:  # one bag has no spread to learn from
                        self.running_var.lerp_(moments.var(dim=0, unbiased=False), MOMENTUM)
                    self.batches_seen += 1
            standardised = (moments - self.running_mean) / torch.sqrt(self.running_var + EPS)
            return CLASSIFIER_GAIN * self.classifier(standardised)[:, 0]
