"""MIL diagnostics: how a DSMIL model spreads attention over the slices of each bag.

Pure numpy, arrays in, arrays/dicts out (no torch): the training loop hands over
``attention.detach().cpu().numpy()`` and instance logits once per epoch.

Per bag of N slices with attention ``a`` (sums to 1) and instance scores ``s`` (logits):

- entropy ``H = -sum a_i log a_i`` in nats (``0 log 0 = 0``); normalised ``H / log N``
  in [0, 1], undefined (NaN) for N = 1; effective instances ``exp(H)`` in [1, N];
- max weight (>= 1/N), top-k mass, Gini coefficient (0 uniform, (N-1)/N one-hot);
- spread (population std) of the instance logits and the critical instance
  (argmax of the logits, the instance DSMIL's bag stream queries with);
- with tumour fractions from preprocessing: attention mass on tumour slices, the share
  of tumour slices, and whether the critical slice is a tumour slice.

Entry points:

- :func:`batch_diagnostics` for many bags at once (flat arrays plus bag sizes, or
  equal-size bags as a ``(B, N)`` matrix) -> dict of per-bag arrays;
- :func:`bag_diagnostics` for one bag -> :class:`BagDiagnostics`;
- :func:`summarize` -> one dict of epoch-level numbers (for dvclive);
- :func:`detect_collapse` / :func:`collapse_warning` -> the per-epoch warning line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np

SUM_TOLERANCE = 1e-4
"""Largest allowed ``|sum(a) - 1|`` per bag; float32 softmax over 155 slices is off by ~1e-6."""


@dataclass(frozen=True)
class BagDiagnostics:
    """Diagnostics of one bag. Floats are plain Python floats; NaN where undefined."""

    n_instances: int
    entropy: float  # nats
    normalized_entropy: float  # H / log N in [0, 1]; NaN for N == 1
    effective_instances: float  # exp(H) in [1, N]
    max_attention: float  # >= 1/N
    top_k_mass: float  # sum of the min(top_k, N) largest weights
    gini: float  # 0 uniform ... (N-1)/N one-hot
    score_spread: float  # population std of the instance logits
    critical_index: int  # argmax of the instance logits (first on ties)
    critical_position: float  # in [0, 1] along the axial extent of the bag
    tumour_attention_mass: float  # attention on tumour slices; NaN without tumour info
    tumour_share: float  # share of the bag's slices that are tumour; NaN without tumour info
    critical_is_tumour: float  # 1.0 / 0.0; NaN without tumour info


_FIELDS = tuple(f.name for f in fields(BagDiagnostics))
_INT_FIELDS = ("n_instances", "critical_index")


# --------------------------------------------------------------------------- inputs


def _as_float_array(name: str, values, ndim: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim not in ndim:
        raise ValueError(f"{name} must be {' or '.join(f'{d}-D' for d in ndim)}, got shape {array.shape}")
    return array


def _bag_layout(n_values: int, bag_sizes) -> np.ndarray:
    """Validate bag sizes (B,) against the number of flat values; returns int64 sizes."""
    sizes = np.asarray(bag_sizes)
    if sizes.ndim != 1 or sizes.size == 0:
        raise ValueError(f"bag_sizes must be a non-empty 1-D array, got shape {sizes.shape}")
    if not np.issubdtype(sizes.dtype, np.integer):
        raise ValueError(f"bag_sizes must be integers, got dtype {sizes.dtype}")
    if sizes.min() < 1:
        raise ValueError(f"every bag needs at least one instance, bag {int(np.argmin(sizes))} has {int(sizes.min())}")
    if int(sizes.sum()) != n_values:
        raise ValueError(f"bag_sizes sum to {int(sizes.sum())} but attention has {n_values} values")
    return sizes.astype(np.int64)


def _to_padded(flat: np.ndarray, rows: np.ndarray, cols: np.ndarray, shape, fill: float) -> np.ndarray:
    padded = np.full(shape, fill, dtype=np.float64)
    padded[rows, cols] = flat
    return padded


def _check_attention(attention: np.ndarray, mask: np.ndarray) -> None:
    """attention: (B, Nmax) padded with 0. Raises ValueError naming the first bad bag."""
    if not np.isfinite(attention).all():
        raise ValueError("attention contains NaN or infinite values")
    if (attention < 0).any():
        bag = int(np.argwhere(attention < 0)[0, 0])
        raise ValueError(f"attention must be non-negative (bag {bag} has {attention[bag].min():.3g})")
    error = np.abs(attention.sum(axis=1) - 1.0)
    if (error > SUM_TOLERANCE).any():
        bag = int(np.argmax(error))
        raise ValueError(
            f"attention of every bag must sum to 1 within {SUM_TOLERANCE:g} "
            f"(bag {bag} of {int(mask[bag].sum())} instances sums to {attention[bag].sum():.6g})"
        )


def _check_unit_interval(name: str, values: np.ndarray, allow_nan: bool) -> None:
    finite = values[~np.isnan(values)] if allow_nan else values
    if not allow_nan and not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise ValueError(f"{name} must lie in [0, 1], got values in [{finite.min():.3g}, {finite.max():.3g}]")


# --------------------------------------------------------------------------- per bag


def batch_diagnostics(
    attention,
    instance_scores,
    bag_sizes=None,
    tumour_fraction=None,
    slice_positions=None,
    top_k: int = 3,
    tumour_threshold: float = 0.0,
) -> dict[str, np.ndarray]:
    """Diagnostics of B bags at once.

    Args:
        attention: attention weights, either flat ``(sum N_b,)`` with ``bag_sizes``, or
            ``(B, N)`` for B equal-size bags (then ``bag_sizes`` is None). Non-negative,
            each bag summing to 1 within ``SUM_TOLERANCE``; renormalised before use so
            float32 round-off cannot push normalised entropy above 1.
        instance_scores: instance logits, same shape as ``attention``.
        bag_sizes: ``(B,)`` ints >= 1, bags stored one after another in the flat arrays.
        tumour_fraction: same shape, share of each slice's area that is tumour, in [0, 1].
            NaN marks a slice without segmentation; a bag with any NaN gets NaN tumour
            diagnostics. None: no tumour info at all.
        slice_positions: same shape, relative axial position of each slice in its volume,
            in [0, 1]. None: the bag is taken to be sorted by position and evenly spaced,
            so the critical position is ``index / (N - 1)`` (0.5 for N == 1).
        top_k: how many of the largest weights ``top_k_mass`` adds up (>= 1).
        tumour_threshold: a slice is a tumour slice when its fraction is above this.

    Returns:
        dict with one ``(B,)`` array per :class:`BagDiagnostics` field (int64 for
        ``n_instances`` and ``critical_index``, float64 otherwise).

    Raises:
        ValueError: on a shape mismatch, negative or non-normalised attention,
            non-finite scores, or values outside [0, 1].
    """
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    if not 0.0 <= tumour_threshold < 1.0:
        raise ValueError(f"tumour_threshold must lie in [0, 1), got {tumour_threshold!r}")

    attention = _as_float_array("attention", attention, (1, 2) if bag_sizes is None else (1,))
    scores = _as_float_array("instance_scores", instance_scores, (attention.ndim,))
    extras = {
        name: None if values is None else _as_float_array(name, values, (attention.ndim,))
        for name, values in (("tumour_fraction", tumour_fraction), ("slice_positions", slice_positions))
    }
    for name, values in (("instance_scores", scores), *extras.items()):
        if values is not None and values.shape != attention.shape:
            raise ValueError(f"{name} has shape {values.shape} but attention has shape {attention.shape}")

    if bag_sizes is None and attention.ndim == 1:
        bag_sizes = [attention.size]
    if bag_sizes is None:
        # Equal-size bags: already the padded layout, nothing to scatter.
        if 0 in attention.shape:
            raise ValueError(f"need at least one bag of at least one instance, got shape {attention.shape}")
        sizes = np.full(attention.shape[0], attention.shape[1], dtype=np.int64)
        mask = np.ones(attention.shape, dtype=bool)

        def pad(values, fill):
            return values
    else:
        # Scatter the flat bags into a (B, Nmax) matrix so every statistic is a row
        # operation; brain MRI bags hold <= 155 slices, so padding waste is bounded.
        sizes = _bag_layout(attention.size, bag_sizes)
        rows = np.repeat(np.arange(sizes.size), sizes)
        cols = np.arange(attention.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        shape = (sizes.size, int(sizes.max()))
        mask = _to_padded(np.ones(attention.size), rows, cols, shape, 0.0).astype(bool)

        def pad(values, fill):
            return _to_padded(values, rows, cols, shape, fill)

    if not np.isfinite(scores).all():
        raise ValueError("instance_scores contains NaN or infinite values")
    if extras["tumour_fraction"] is not None:
        _check_unit_interval("tumour_fraction", extras["tumour_fraction"], allow_nan=True)
    if extras["slice_positions"] is not None:
        _check_unit_interval("slice_positions", extras["slice_positions"], allow_nan=False)

    # Zero padding contributes nothing to sums, maxima, the entropy (0 log 0 = 0) or
    # the descending sort (pads land after every real weight).
    weights = pad(attention, 0.0)
    _check_attention(weights, mask)
    weights = weights / weights.sum(axis=1, keepdims=True)

    out = _attention_shape(weights, sizes, top_k)
    out.update(_score_stats(pad(scores, 0.0), mask, sizes))
    out["critical_position"] = _critical_position(
        out["critical_index"], sizes, None if extras["slice_positions"] is None else pad(extras["slice_positions"], 0.0)
    )
    tumour = None if extras["tumour_fraction"] is None else pad(extras["tumour_fraction"], 0.0)
    out.update(_tumour_stats(weights, mask, sizes, out["critical_index"], tumour, tumour_threshold))
    return {name: out[name] for name in _FIELDS}


def _attention_shape(weights: np.ndarray, sizes: np.ndarray, top_k: int) -> dict[str, np.ndarray]:
    """weights: (B, Nmax), rows sum to 1, zero padded. Entropy, max, top-k, Gini per bag."""
    n = sizes.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(weights > 0, weights * np.log(weights), 0.0).sum(axis=1)
        # Round-off can make H a hair negative (one-hot) or above log N (uniform).
        entropy = np.clip(entropy, 0.0, np.log(n))
        normalized = np.where(sizes > 1, entropy / np.log(n), np.nan)
    descending = -np.sort(-weights, axis=1)
    # Gini from the ascending-sorted weights x_(i), i = 1..N, with sum 1:
    # G = 2 sum(i x_(i)) / N - (N + 1) / N. With descending rank r = N - i (0-based):
    # G = (N - 1) / N - 2 sum(r x_[r]) / N; pads sit at r >= N with weight 0.
    rank = np.arange(weights.shape[1], dtype=np.float64)
    gini = (n - 1.0) / n - 2.0 * (descending @ rank) / n
    return {
        "n_instances": sizes,
        "entropy": entropy,
        "normalized_entropy": normalized,
        "effective_instances": np.exp(entropy),
        "max_attention": descending[:, 0],
        # Pads are 0, so summing the first top_k columns is the top min(top_k, N) mass.
        "top_k_mass": descending[:, :top_k].sum(axis=1),
        "gini": np.clip(gini, 0.0, None),
    }


def _score_stats(scores: np.ndarray, mask: np.ndarray, sizes: np.ndarray) -> dict[str, np.ndarray]:
    """scores: (B, Nmax) logits, padding ignored via mask. Spread and critical index per bag."""
    mean = (scores * mask).sum(axis=1) / sizes
    spread = np.sqrt((((scores - mean[:, None]) * mask) ** 2).sum(axis=1) / sizes)
    critical = np.argmax(np.where(mask, scores, -np.inf), axis=1)  # first on ties, like np.argmax
    return {"score_spread": spread, "critical_index": critical.astype(np.int64)}


def _critical_position(critical: np.ndarray, sizes: np.ndarray, positions: np.ndarray | None) -> np.ndarray:
    if positions is not None:
        return positions[np.arange(critical.size), critical]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sizes > 1, critical / np.maximum(sizes - 1, 1), 0.5)


def _tumour_stats(weights, mask, sizes, critical, tumour, threshold) -> dict[str, np.ndarray]:
    """Attention mass on tumour slices, tumour share, critical-is-tumour per bag (NaN without info)."""
    n_bags = sizes.size
    if tumour is None:
        nan = np.full(n_bags, np.nan)
        return {"tumour_attention_mass": nan, "tumour_share": nan.copy(), "critical_is_tumour": nan.copy()}
    unknown = (np.isnan(tumour) & mask).any(axis=1)
    is_tumour = (np.nan_to_num(tumour, nan=0.0) > threshold) & mask
    mass = (weights * is_tumour).sum(axis=1)
    share = is_tumour.sum(axis=1) / sizes
    critical_is_tumour = is_tumour[np.arange(n_bags), critical].astype(np.float64)
    return {
        "tumour_attention_mass": np.where(unknown, np.nan, mass),
        "tumour_share": np.where(unknown, np.nan, share),
        "critical_is_tumour": np.where(unknown, np.nan, critical_is_tumour),
    }


def bag_diagnostics(
    attention,
    instance_scores,
    tumour_fraction=None,
    slice_positions=None,
    top_k: int = 3,
    tumour_threshold: float = 0.0,
) -> BagDiagnostics:
    """Diagnostics of one bag; all arrays ``(N,)``. See :func:`batch_diagnostics` for the arguments."""
    attention = np.asarray(attention)
    if attention.ndim != 1:
        raise ValueError(f"attention of one bag must be 1-D, got shape {attention.shape}")
    batch = batch_diagnostics(
        attention,
        instance_scores,
        bag_sizes=[attention.size],
        tumour_fraction=tumour_fraction,
        slice_positions=slice_positions,
        top_k=top_k,
        tumour_threshold=tumour_threshold,
    )
    return BagDiagnostics(
        **{name: (int if name in _INT_FIELDS else float)(values[0]) for name, values in batch.items()}
    )


# --------------------------------------------------------------------------- per epoch


def _as_columns(bags) -> dict[str, np.ndarray]:
    if isinstance(bags, Mapping):
        return {name: np.asarray(bags[name], dtype=np.float64) for name in _FIELDS}
    bags = list(bags)
    return {name: np.array([getattr(bag, name) for bag in bags], dtype=np.float64) for name in _FIELDS}


def _nanmean(values: np.ndarray) -> float:
    """Mean of the non-NaN values; NaN (and no RuntimeWarning) when there are none."""
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def summarize(bags: Sequence[BagDiagnostics] | Mapping[str, np.ndarray]) -> dict[str, float]:
    """Epoch-level means over bags.

    Args:
        bags: a list of :class:`BagDiagnostics`, or the dict of per-bag arrays that
            :func:`batch_diagnostics` returns (the fast path).

    Returns:
        dict of floats: ``mean_normalized_entropy``, ``mean_effective_instances``,
        ``mean_max_attention``, ``mean_top_k_mass``, ``mean_gini``, ``mean_score_spread``,
        ``mean_critical_position``, ``mean_n_instances``, ``mean_uniform_weight`` (mean
        of 1/N: what ``mean_max_attention`` would be under uniform attention),
        ``tumour_attention_mass``, ``tumour_share``, ``attention_tumour_lift``,
        ``critical_is_tumour_rate``, ``n_bags`` and ``n_single_instance_bags``.

    Single-instance bags are counted in ``n_bags`` but left out of every mean: their
    attention is 1 by construction and says nothing about where the model looks (they
    would otherwise pull ``mean_max_attention`` towards a false one-hot alarm).
    Tumour means use only bags with tumour info. ``attention_tumour_lift`` is
    ``tumour_attention_mass / tumour_share`` over those bags (a share-weighted mean of
    per-bag lifts, so bags without tumour slices do not make it undefined): 1 is chance,
    > 1 means attention favours tumour slices. Likewise ``critical_is_tumour_rate`` is to
    be read against ``tumour_share``, its chance level. NaN where nothing is defined.
    """
    columns = _as_columns(bags)
    n_bags = columns["n_instances"].size
    multi = columns["n_instances"] > 1
    used = {name: values[multi] for name, values in columns.items()}

    tumour_known = ~np.isnan(used["tumour_share"])
    mass = _nanmean(used["tumour_attention_mass"][tumour_known])
    share = _nanmean(used["tumour_share"][tumour_known])
    summary = {
        "mean_normalized_entropy": _nanmean(used["normalized_entropy"]),
        "mean_effective_instances": _nanmean(used["effective_instances"]),
        "mean_max_attention": _nanmean(used["max_attention"]),
        "mean_top_k_mass": _nanmean(used["top_k_mass"]),
        "mean_gini": _nanmean(used["gini"]),
        "mean_score_spread": _nanmean(used["score_spread"]),
        "mean_critical_position": _nanmean(used["critical_position"]),
        "mean_n_instances": _nanmean(used["n_instances"]),
        "mean_uniform_weight": _nanmean(1.0 / used["n_instances"]),
        "tumour_attention_mass": mass,
        "tumour_share": share,
        "attention_tumour_lift": mass / share if share > 0 else math.nan,
        "critical_is_tumour_rate": _nanmean(used["critical_is_tumour"]),
        "n_bags": float(n_bags),
        "n_single_instance_bags": float(n_bags - int(multi.sum())),
    }
    return summary


# --------------------------------------------------------------------------- collapse


@dataclass(frozen=True)
class CollapseThresholds:
    """When an epoch's attention counts as collapsed (params.yaml keys of the same names).

    uniform_entropy: mean normalised entropy above this is one half of a uniform
        collapse. For softmax attention whose logits have a small spread sigma,
        ``H / log N ~ 1 - sigma^2 / (2 log N)``; 0.98 at N = 32 means sigma < ~0.37
        nats, i.e. the weights barely differ. Entropy alone is too lenient at large N
        (one slice at 3x uniform among 100 still scores ~0.99), hence the second test.
    uniform_max_ratio: ... and mean max weight below ``uniform_max_ratio`` times the
        uniform weight (mean of 1/N). 1.5 means no slice gets even 1.5x its uniform
        share, while a model that finds a tumour spanning a third of the slices puts
        >= 2-3x uniform on them. Both tests must hold: the pair encodes the usual reading
        of uniform attention in the MIL literature, entropy near 1 and max weight near 1/N.
    onehot_max_attention: mean max weight above this is a one-hot collapse. With mean
        max > 0.95 at most 10% of bags can have a max below 0.5, and a bag with max 0.95
        among 32 slices has normalised entropy 0.11 at most, so no entropy test is
        needed; DSMIL's own critical-instance stream already covers a single slice, so
        a bag stream that copies it adds nothing.
    """

    uniform_entropy: float = 0.98
    uniform_max_ratio: float = 1.5
    onehot_max_attention: float = 0.95

    def __post_init__(self):
        if not 0.0 < self.uniform_entropy <= 1.0:
            raise ValueError(f"uniform_entropy must lie in (0, 1], got {self.uniform_entropy!r}")
        if not self.uniform_max_ratio >= 1.0:
            raise ValueError(f"uniform_max_ratio must be >= 1, got {self.uniform_max_ratio!r}")
        if not 0.0 < self.onehot_max_attention <= 1.0:
            raise ValueError(f"onehot_max_attention must lie in (0, 1], got {self.onehot_max_attention!r}")


COLLAPSE_KINDS = ("uniform", "one-hot")

#: The :func:`summarize` keys logged every epoch for training and inner-validation bags; they
#: include every input of :func:`detect_collapse`, so collapse epochs can be recounted from the logs.
LOGGED_KEYS = (
    "mean_normalized_entropy",
    "mean_effective_instances",
    "mean_max_attention",
    "mean_uniform_weight",
    "mean_top_k_mass",
    "mean_score_spread",
    "mean_critical_position",
    "tumour_attention_mass",
    "tumour_share",
    "attention_tumour_lift",
    "critical_is_tumour_rate",
)


#: :func:`summarize` keys that describe attention (none for an aggregator without attention: mean, max pooling)
#: and those that describe instance scores (none for one without them: gated attention).
ATTENTION_KEYS = (
    "mean_normalized_entropy",
    "mean_effective_instances",
    "mean_max_attention",
    "mean_uniform_weight",
    "mean_top_k_mass",
    "mean_gini",
    "tumour_attention_mass",
    "attention_tumour_lift",
)
SCORE_KEYS = ("mean_score_spread", "mean_critical_position", "critical_is_tumour_rate")


def applicable_keys(keys, attention: bool, instance_scores: bool) -> tuple[str, ...]:
    """The ``keys`` (e.g. :data:`LOGGED_KEYS`) that a model with or without attention and instance scores has."""
    return tuple(
        key for key in keys if (attention or key not in ATTENTION_KEYS) and (instance_scores or key not in SCORE_KEYS)
    )


def available_summary(attention, instance_scores, bag_sizes, tumour_fraction, slice_positions, top_k: int) -> dict:
    """:func:`summarize` of :func:`batch_diagnostics` for flat bags whose ``attention`` or ``instance_scores`` may
    be None (an aggregator without them), keeping only the keys their inputs define (:func:`applicable_keys`);
    ``{}`` with neither. A missing input is replaced by a uniform placeholder inside, never reported."""
    if attention is None and instance_scores is None:
        return {}
    sizes = np.asarray(bag_sizes, dtype=np.int64)
    present = attention if attention is not None else instance_scores
    summary = summarize(
        batch_diagnostics(
            np.repeat(1.0 / sizes, sizes) if attention is None else attention,
            np.zeros(len(present)) if instance_scores is None else instance_scores,
            bag_sizes=sizes,
            tumour_fraction=tumour_fraction,
            slice_positions=slice_positions,
            top_k=top_k,
        )
    )
    keep = applicable_keys(summary, attention is not None, instance_scores is not None)
    return {key: summary[key] for key in keep}


DEFAULT_THRESHOLDS = CollapseThresholds()


def detect_collapse(summary: Mapping[str, float], thresholds: CollapseThresholds = DEFAULT_THRESHOLDS) -> str | None:
    """``"uniform"``, ``"one-hot"`` or None for a :func:`summarize` dict.

    NaN means (e.g. every bag had a single instance) never trigger a collapse, and neither does a summary without
    attention (an aggregator that has none cannot collapse it).
    """
    if "mean_max_attention" not in summary:
        return None
    max_attention = summary["mean_max_attention"]
    if (
        summary["mean_normalized_entropy"] > thresholds.uniform_entropy
        and max_attention < thresholds.uniform_max_ratio * summary["mean_uniform_weight"]
    ):
        return "uniform"
    if max_attention > thresholds.onehot_max_attention:
        return "one-hot"
    return None


def collapse_warning(kind: str, fold, epoch, summary: Mapping[str, float]) -> str:
    """One log line naming fold, epoch and the numbers behind the verdict.

    e.g. ``"WARNING: fold 3 epoch 12: uniform attention collapse (mean normalised
    entropy 0.995, max weight 0.034 ~ 1/N 0.031)"``.
    """
    entropy = summary["mean_normalized_entropy"]
    max_attention = summary["mean_max_attention"]
    if kind == "uniform":
        detail = (
            f"mean normalised entropy {entropy:.3f}, "
            f"max weight {max_attention:.3f} ~ 1/N {summary['mean_uniform_weight']:.3f}"
        )
    elif kind == "one-hot":
        detail = (
            f"mean max weight {max_attention:.3f}, normalised entropy {entropy:.3f}, "
            f"effective instances {summary['mean_effective_instances']:.2f}"
        )
    else:
        raise ValueError(f"collapse kind must be one of {COLLAPSE_KINDS}, got {kind!r}")
    return f"WARNING: fold {fold} epoch {epoch}: {kind} attention collapse ({detail})"
