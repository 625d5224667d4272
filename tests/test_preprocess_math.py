"""Normalisation, cropping, slice selection and resizing on arrays where the answer is known."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gliomil.data.brats import Volumes
from gliomil.data.preprocess import (
    PreprocessSettings,
    bounding_box,
    brain_mask,
    clip_and_zscore,
    enclosing_square,
    preprocess_volumes,
    resample,
    resize_weights,
    zscore_parameters,
)
from gliomil.data.slices import content_hash


def normalised(volume, mask, percentiles=(0.5, 99.5)):
    """clip_and_zscore of a whole volume with statistics from its masked voxels (as preprocess_volumes)."""
    zscore = zscore_parameters(volume[mask], percentiles)
    return clip_and_zscore(volume.copy(), mask, zscore)


def test_zscore_uses_brain_voxels_only_and_zeroes_background():
    volume = np.zeros((4, 4, 2), dtype=np.float32)
    mask = np.zeros_like(volume, dtype=bool)
    mask[:2, :2, 0] = True
    volume[:2, :2, 0] = [[1, 2], [3, 4]]
    volume[3, 3, 1] = 1000.0  # outside the mask: must not move the statistics
    out = normalised(volume, mask, percentiles=(0, 100))
    expected = (np.array([1, 2, 3, 4]) - 2.5) / np.std([1, 2, 3, 4])
    np.testing.assert_allclose(out[:2, :2, 0].ravel(), expected, rtol=1e-6)
    assert out.dtype == np.float32
    assert np.all(out[~mask] == 0)


def test_percentile_clipping_limits_outliers_before_zscore():
    values = np.arange(101, dtype=np.float32)  # percentiles of 0..100 are the values themselves
    values[-1] = 1e6
    mask = np.ones(values.shape, dtype=bool)
    out = normalised(values, mask, percentiles=(10, 90))
    clipped = np.clip(values.astype(np.float64), 10, np.percentile(values, 90))
    np.testing.assert_allclose(out, (clipped - clipped.mean()) / clipped.std(), rtol=1e-5)


@pytest.mark.parametrize("percentiles", [(0.5, 99.5), (0, 100), (10, 90), (33.3, 66.7), (50, 50)])
def test_zscore_parameters_match_float64_numpy(percentiles):
    rng = np.random.default_rng(3)
    # Ties and a heavy tail, like integer-valued scanner intensities.
    brain = np.round(rng.lognormal(5, 0.6, size=10_001)).astype(np.float32)
    reference = brain.astype(np.float64)
    low, high = np.percentile(reference, percentiles)
    clipped = np.clip(reference, low, high)

    zscore = zscore_parameters(brain.copy(), percentiles)

    np.testing.assert_allclose([zscore.low, zscore.high], [low, high], rtol=1e-12)
    np.testing.assert_allclose([zscore.mean, zscore.std], [clipped.mean(), clipped.std() or 1.0], rtol=1e-6)


def test_constant_modality_becomes_zero_not_nan():
    volume = np.full((3, 3, 3), 7.0, dtype=np.float32)
    assert zscore_parameters(volume.ravel().copy()).std == 1.0
    out = normalised(volume, np.ones_like(volume, dtype=bool))
    assert np.all(out == 0)


def test_enclosing_square_centres_the_shorter_side():
    mask = np.zeros((20, 20, 3), dtype=bool)
    mask[4:14, 8:12, 1] = True  # 10 wide in x, 4 in y
    x_box, y_box, z_box = bounding_box(mask)
    assert (x_box, y_box, z_box) == (slice(4, 14), slice(8, 12), slice(1, 2))
    x0, y0, side = enclosing_square(x_box, y_box)
    assert (x0, side) == (4, 10)
    assert y0 == 8 - 3  # (10 - 4) // 2 = 3 voxels of margin before the brain in y


@pytest.mark.parametrize("size_in, size_out", [(8, 8), (24, 10), (170, 64), (37, 16), (13, 32), (64, 128)])
def test_resize_weights_match_torch_antialiased_bilinear(size_in, size_out):
    rng = np.random.default_rng(size_in)
    planes = rng.normal(size=(3, size_in, size_in + 5)).astype(np.float32)
    rows, columns = resize_weights(size_in, size_out), resize_weights(size_in + 5, size_out + 2)

    ours = resample(planes, rows, columns)

    expected = F.interpolate(
        torch.from_numpy(planes)[None],
        size=(size_out, size_out + 2),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )[0].numpy()
    # Both use float32 weights and sums; values are ~N(0, 1).
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=5e-5)


def test_resize_keeps_constant_images_constant_and_identity_at_same_size():
    weights = resize_weights(10, 5)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(resample(np.full((2, 10, 10), 3.0, dtype=np.float32), weights, weights), 3.0, rtol=1e-6)
    np.testing.assert_array_equal(resize_weights(8, 8), np.eye(8))
    noise = np.random.default_rng(0).normal(size=(4, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(resample(noise, resize_weights(8, 8), resize_weights(8, 8)), noise)


def ras_volumes(images, seg):
    """Volumes already in RAS order, as load_volumes returns them for a file with an identity affine."""
    identity = np.array([[0, 1], [1, 1], [2, 1]])
    return Volumes(images=images, seg=seg, affine=np.eye(4), files={}, orientation=identity, stored_shape=seg.shape)


def _cube_subject(shape=(24, 24, 12), tumour_slices=(5, 6)):
    images = np.zeros((4,) + shape, dtype=np.float32)
    rng = np.random.default_rng(1)
    images[:, 4:20, 6:18, 2:10] = rng.uniform(50, 100, size=(4, 16, 12, 8))
    seg = np.zeros(shape, dtype=np.uint8)
    for z in tumour_slices:
        seg[8:12, 8:12, z] = 2
    return ras_volumes(images, seg)


def test_preprocess_volumes_keeps_brain_slices_and_records_tumour_fraction():
    volumes = _cube_subject()
    bag = preprocess_volumes(
        volumes, PreprocessSettings(image_size=8, clip_percentiles=(0, 100), min_brain_fraction=0.1)
    )
    np.testing.assert_array_equal(bag.z_index, np.arange(2, 10))  # slices 2..9 hold brain
    assert bag.slices.shape == (8, 4, 8, 8) and bag.slices.dtype == np.float16
    # brain is 16 x 12 inside a 16 x 16 square
    np.testing.assert_allclose(bag.brain_fraction, 16 * 12 / 256)
    expected_tumour = np.where(np.isin(bag.z_index, [5, 6]), 16 / (16 * 12), 0.0)
    np.testing.assert_allclose(bag.tumour_fraction, expected_tumour)
    np.testing.assert_allclose(bag.position, np.linspace(0, 1, 8))


def reference_slices(volumes, settings):
    """The slices spelled out step by step on whole arrays: z-score every voxel in float64, zero-pad and
    crop the square, resize with torch. preprocess_volumes must give the same up to float rounding."""
    images = volumes.images
    mask = np.any(images != 0, axis=0)
    normal = np.zeros(images.shape, dtype=np.float32)
    for channel, volume in enumerate(images):
        brain = volume[mask].astype(np.float64)
        brain = np.clip(brain, *np.percentile(brain, settings.clip_percentiles))
        normal[channel][mask] = (brain - brain.mean()) / (brain.std() or 1.0)
    xs, ys = np.flatnonzero(mask.any(axis=(1, 2))), np.flatnonzero(mask.any(axis=(0, 2)))
    side = max(xs[-1] + 1 - xs[0], ys[-1] + 1 - ys[0])
    x0 = xs[0] - (side - (xs[-1] + 1 - xs[0])) // 2
    y0 = ys[0] - (side - (ys[-1] + 1 - ys[0])) // 2
    padded = np.pad(normal, ((0, 0), (side, side), (side, side), (0, 0)))
    square = padded[:, x0 + side : x0 + 2 * side, y0 + side : y0 + 2 * side]
    keep = np.flatnonzero(mask.sum(axis=(0, 1)) / side**2 >= settings.min_brain_fraction)
    kept = torch.from_numpy(np.ascontiguousarray(square[..., keep].transpose(3, 0, 1, 2)))
    size = (settings.image_size, settings.image_size)
    return F.interpolate(kept, size=size, mode="bilinear", antialias=True, align_corners=False).numpy()


@pytest.mark.parametrize("image_size", [10, 24, 32])
def test_preprocess_volumes_equals_normalise_crop_and_resize_of_whole_arrays(image_size):
    rng = np.random.default_rng(7)
    images = np.zeros((4, 20, 30, 10), dtype=np.float32)
    # Brain 8 wide in x at the volume's edge, 24 high in y: the square reaches outside the volume.
    brain = rng.random((8, 24, 8)) < 0.8
    images[:, 0:8, 3:27, 1:9] = np.where(brain, rng.uniform(1, 100, size=(4, 8, 24, 8)), 0)
    images[2, 0:4] = 0  # a modality may be 0 where another one is not
    volumes = ras_volumes(images, np.zeros(images.shape[1:], dtype=np.uint8))
    settings = PreprocessSettings(image_size=image_size, clip_percentiles=(2, 98), min_brain_fraction=0.2)

    bag = preprocess_volumes(volumes, settings)

    expected = reference_slices(volumes, settings)
    assert bag.slices.shape == expected.shape
    np.testing.assert_allclose(bag.slices.astype(np.float32), expected, rtol=2e-3, atol=2e-3)


def test_preprocess_volumes_drops_slices_below_the_brain_fraction():
    volumes = _cube_subject()
    volumes.images[:, 4:6, 6:8, 1] = 1.0  # a sliver of brain on slice 1: 4 of 256 pixels
    bag = preprocess_volumes(volumes, PreprocessSettings(image_size=8, min_brain_fraction=0.1))
    assert 1 not in bag.z_index
    bag_all = preprocess_volumes(volumes, PreprocessSettings(image_size=8, min_brain_fraction=0.0))
    assert 1 in bag_all.z_index


def test_brain_mask_is_the_union_of_modalities():
    images = np.zeros((4, 2, 2, 1), dtype=np.float32)
    images[0, 0, 0, 0] = 1
    images[3, 1, 1, 0] = -2
    np.testing.assert_array_equal(brain_mask(images)[..., 0], [[True, False], [False, True]])


def test_content_hash_changes_with_content_shape_and_dtype():
    a = np.zeros((2, 3), dtype=np.float16)
    assert content_hash(a) == content_hash(a.copy())
    assert content_hash(a) != content_hash(a.reshape(3, 2))
    assert content_hash(a) != content_hash(a.astype(np.float32))
    b = a.copy()
    b[0, 0] = 1
    assert content_hash(a) != content_hash(b)


def test_preprocess_volumes_with_no_brain_slice_is_a_clear_error():
    volumes = _cube_subject()
    with pytest.raises(ValueError, match="brain fraction"):
        preprocess_volumes(volumes, PreprocessSettings(image_size=8, min_brain_fraction=1.0))
