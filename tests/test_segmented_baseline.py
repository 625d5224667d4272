"""The image-only two-stage baseline ``predicted_mask`` (gliomil.baselines.segmented): its pixel features and
statistics by hand, a segmenter that finds a tumour it was taught, and folds that read no held-out patient's mask."""

import dataclasses
import math

import numpy as np
import pytest

from gliomil.baselines import segmented
from gliomil.data.bags import BagSet
from gliomil.data.folds import FoldSplit
from gliomil.errors import GliomilError


def phantom_bag(rng: np.random.Generator, hgg: bool, size: int = 16, n_slices: int = 4):
    """A bag (S, 4, size, size) float16 of brain (a disc of noise; 0 outside) with a bright FLAIR square on slices
    1-2, and its tumour maps (S, 3, size, size) uint8. An HGG square is heterogeneous (its T1ce alternates between
    bright and dark), an LGG square is uniform."""
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 < (size / 2 - 1) ** 2
    bag = rng.normal(0.0, 0.3, (n_slices, 4, size, size)) * disc
    bag[bag == 0] = 0.01 * disc[np.newaxis, np.newaxis].repeat(n_slices, 0).repeat(4, 1)[bag == 0]
    maps = np.zeros((n_slices, 3, size, size), dtype=np.uint8)
    corner = rng.integers(4, size - 9)
    square = (slice(1, 3), slice(corner, corner + 5), slice(corner, corner + 5))
    bag[square[0], 0, square[1], square[2]] += 2.5
    bag[square[0], 2, square[1], square[2]] += np.where((yy + xx)[square[1:]] % 2 == 0, 2.0, -2.0) if hgg else 0.5
    maps[square[0], 0, square[1], square[2]] = 255
    return bag.astype(np.float16), maps


def phantom_cohort(n: int = 24, seed: int = 0) -> BagSet:
    rng = np.random.default_rng(seed)
    labels = np.array([i % 2 for i in range(n)], dtype=np.int64)
    bags, maps = zip(*(phantom_bag(rng, bool(label)) for label in labels))
    ids = [f"P{i:02d}" for i in range(n)]
    return BagSet(ids, labels, list(bags), [np.zeros(4)] * n, [np.zeros(4)] * n, list(maps))


def splits_of(bag_set: BagSet, k: int = 3) -> list[FoldSplit]:
    ids = bag_set.subject_ids
    out = []
    for fold in range(k):
        test = ids[fold::k]
        rest = [s for s in ids if s not in test]
        out.append(FoldSplit(fold, rest[2:], rest[:2], test))
    return out


# -- by hand ----------------------------------------------------------------------------------------------------------
def test_pixel_features_by_hand():
    slices = np.zeros((1, 4, 7, 7), dtype=np.float16)
    slices[0, 1, 3, 3] = 25.0  # one pixel of t1: its 5 x 5 mean is 1 on the square around it, 0 beyond
    features = segmented.pixel_features(slices)
    assert features.shape == (1, 7, 7, 8) and features.dtype == np.float32
    assert features[0, 3, 3, 1] == 25.0 and features[0, :, :, 1].sum() == 25.0
    local = features[0, :, :, 5]
    np.testing.assert_allclose(local[1:6, 1:6], 1.0, rtol=1e-6)
    assert local[0].sum() == local[6].sum() == local[:, 0].sum() == local[:, 6].sum() == 0
    assert not features[..., [0, 2, 3, 4, 6, 7]].any()


def test_mask_statistics_by_hand():
    slices = np.zeros((1, 4, 2, 2))
    slices[0, 0] = [[1.0, 2.0], [3.0, 100.0]]  # flair inside the mask: 1, 2, 3
    slices[0, 3] = [[-1.0, 0.0], [1.0, 7.0]]  # t2 inside: -1, 0, 1
    mask = np.array([[[True, True], [True, False]]])
    values = dict(zip(segmented.statistics_names(), segmented.mask_statistics(slices, mask)))
    assert len(values) == 21
    assert values["flair_mask_mean"] == pytest.approx(2.0)
    assert values["flair_mask_std"] == pytest.approx(math.sqrt(2 / 3))
    # numpy's default (linear) percentiles of 1, 2, 3: 1 + 2 * 0.1, 2, 1 + 2 * 0.9
    percentiles = (values["flair_mask_p10"], values["flair_mask_p50"], values["flair_mask_p90"])
    assert percentiles == pytest.approx((1.2, 2, 2.8))
    assert values["t2_mask_mean"] == pytest.approx(0.0) and values["t1_mask_std"] == 0.0
    assert values["log_mask_pixels"] == pytest.approx(math.log(3))
    with pytest.raises(ValueError, match="empty"):
        segmented.mask_statistics(slices, np.zeros_like(mask))


# -- the segmenter ----------------------------------------------------------------------------------------------------
def taught(bags, maps, rng):
    """A segmenter fitted on the drawn pixels of bags and their maps, as fold_predictions fits a fold's."""
    features, is_tumour = [], []
    for bag, tumour_map in zip(bags, maps):
        chosen = segmented.draw_pixels(bag, rng)
        assert len(chosen) == min(segmented.PIXEL_SAMPLES, segmented.brain_pixels(bag).sum())
        assert segmented.brain_pixels(bag).flat[chosen].all()
        features.append(segmented.pixel_features(bag).reshape(-1, 8)[chosen])
        is_tumour.append(tumour_map[:, 0].reshape(-1)[chosen] >= segmented.MAP_TUMOUR)
    return segmented.fit_segmenter(np.concatenate(features), np.concatenate(is_tumour))


def test_the_segmenter_finds_the_tumour_it_was_taught_from_the_images_alone():
    cohort = phantom_cohort(24, seed=0)
    segmenter = taught(cohort.bags[:16], cohort.tumour_maps[:16], np.random.default_rng(0))
    dice = []
    for bag, tumour_map in zip(cohort.bags[16:], cohort.tumour_maps[16:]):
        mask, truth = segmented.segment(segmenter, bag), tumour_map[:, 0] >= 128
        dice.append(2 * (mask & truth).sum() / (mask.sum() + truth.sum()))
    assert min(dice) > 0.8
    # a brain without any tumour-like pixel still gets statistics: its MIN_PIXELS most probable brain pixels
    quiet = cohort.bags[16].copy()
    quiet[:, 0] = np.minimum(quiet[:, 0], 0.5)
    mask = segmented.segment(segmenter, quiet)
    assert mask.sum() == segmented.MIN_PIXELS and not (mask & ~segmented.brain_pixels(quiet)).any()


def test_a_segmenter_needs_both_kinds_of_pixel():
    cohort = phantom_cohort(4)
    empty = [np.zeros_like(m) for m in cohort.tumour_maps]
    with pytest.raises(GliomilError, match="only one class of pixel"):
        taught(cohort.bags, empty, np.random.default_rng(0))


# -- the folds --------------------------------------------------------------------------------------------------------
def test_fold_predictions_score_the_held_out_patients_from_their_images_alone():
    cohort = phantom_cohort(24, seed=1)
    splits = splits_of(cohort)
    predictions = segmented.fold_predictions(cohort, splits, seed=42)
    assert set(predictions["baseline"]) == {segmented.NAME}
    for split in splits:
        rows = predictions[predictions["fold"] == split.fold]
        assert list(rows["subject_id"]) == split.test  # the fold's held-out patients, in its order
        assert list(rows["label"]) == [int(s[1:]) % 2 for s in split.test]
    # heterogeneous against uniform tumours: the statistics inside the predicted mask rank them
    assert ((predictions["probability"] > 0.5) == (predictions["label"] == 1)).mean() > 0.9
    # deterministic, and blind to the held-out patients' masks: wiping them changes no probability
    again = segmented.fold_predictions(cohort, splits, seed=42)
    assert again.equals(predictions)
    for split in splits:
        held_out = {cohort.subject_ids.index(s) for s in split.test}
        wiped = [np.zeros_like(m) if i in held_out else m for i, m in enumerate(cohort.tumour_maps)]
        blind = segmented.fold_predictions(dataclasses.replace(cohort, tumour_maps=wiped), [split], seed=42)
        assert blind.equals(predictions[predictions["fold"] == split.fold].reset_index(drop=True))


def test_a_fold_without_any_training_segmentation_is_one_line():
    cohort = phantom_cohort(12)
    splits = splits_of(cohort)
    training = {cohort.subject_ids.index(s) for s in (*splits[0].train, *splits[0].inner_val)}
    without = [None if i in training else m for i, m in enumerate(cohort.tumour_maps)]
    with pytest.raises(GliomilError, match=r"none of fold 0's training patients has a segmentation \(e\.g\. P04\)"):
        segmented.fold_predictions(dataclasses.replace(cohort, tumour_maps=without), splits, seed=42)
    with pytest.raises(GliomilError, match=r"subjects \['Q99'\] of the split are not in the slice store"):
        segmented.fold_predictions(cohort, [FoldSplit(0, cohort.subject_ids, [], ["Q99"])], seed=42)
