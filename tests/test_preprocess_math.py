"""Normalisation, cropping, slice selection and resizing on arrays where the answer is known."""

import numpy as np
import pytest

from gliomil.brats import Volumes
from gliomil.preprocess import (PreprocessSettings, brain_mask, clip_and_zscore, content_hash, crop_square,
                                preprocess_volumes, resize_slices, square_bounding_box)


def test_zscore_uses_brain_voxels_only_and_zeroes_background():
    volume = np.zeros((4, 4, 2), dtype=np.float32)
    mask = np.zeros_like(volume, dtype=bool)
    mask[:2, :2, 0] = True
    volume[:2, :2, 0] = [[1, 2], [3, 4]]
    volume[3, 3, 1] = 1000.0  # outside the mask: must not move the statistics
    out = clip_and_zscore(volume, mask, percentiles=(0, 100))
    expected = (np.array([1, 2, 3, 4]) - 2.5) / np.std([1, 2, 3, 4])
    np.testing.assert_allclose(out[:2, :2, 0].ravel(), expected, rtol=1e-6)
    assert out.dtype == np.float32
    assert np.all(out[~mask] == 0)


def test_percentile_clipping_limits_outliers_before_zscore():
    values = np.arange(101, dtype=np.float32)  # percentiles of 0..100 are the values themselves
    values[-1] = 1e6
    mask = np.ones(values.shape, dtype=bool)
    out = clip_and_zscore(values, mask, percentiles=(10, 90))
    clipped = np.clip(values.astype(np.float64), 10, np.percentile(values, 90))
    np.testing.assert_allclose(out, (clipped - clipped.mean()) / clipped.std(), rtol=1e-5)


def test_constant_modality_becomes_zero_not_nan():
    volume = np.full((3, 3, 3), 7.0, dtype=np.float32)
    out = clip_and_zscore(volume, np.ones_like(volume, dtype=bool))
    assert np.all(out == 0)


def test_square_bounding_box_centres_the_shorter_side():
    mask = np.zeros((20, 20, 3), dtype=bool)
    mask[4:14, 8:12, 1] = True  # 10 wide in x, 4 in y
    x0, y0, side = square_bounding_box(mask)
    assert (x0, side) == (4, 10)
    assert y0 == 8 - 3  # (10 - 4) // 2 = 3 voxels of margin before the brain in y


def test_crop_square_pads_outside_the_volume_with_zeros():
    array = np.arange(1, 17, dtype=np.float32).reshape(4, 4, 1)
    out = crop_square(array, -1, 2, 3)
    assert out.shape == (3, 3, 1)
    np.testing.assert_array_equal(out[..., 0], [[0, 0, 0], [3, 4, 0], [7, 8, 0]])


def test_resize_keeps_constant_images_constant_and_identity_at_same_size():
    stack = np.full((2, 4, 10, 10), 3.0, dtype=np.float32)
    np.testing.assert_allclose(resize_slices(stack, 5), 3.0, rtol=1e-6)
    noise = np.random.default_rng(0).normal(size=(1, 4, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(resize_slices(noise, 8), noise)


def _cube_subject(shape=(24, 24, 12), tumour_slices=(5, 6)):
    images = np.zeros((4,) + shape, dtype=np.float32)
    rng = np.random.default_rng(1)
    images[:, 4:20, 6:18, 2:10] = rng.uniform(50, 100, size=(4, 16, 12, 8))
    seg = np.zeros(shape, dtype=np.uint8)
    for z in tumour_slices:
        seg[8:12, 8:12, z] = 2
    return Volumes(images=images, seg=seg, affine=np.eye(4), files={})


def test_preprocess_volumes_keeps_brain_slices_and_records_tumour_fraction():
    volumes = _cube_subject()
    bag = preprocess_volumes(volumes, PreprocessSettings(image_size=8, clip_percentiles=(0, 100),
                                                         min_brain_fraction=0.1))
    np.testing.assert_array_equal(bag.z_index, np.arange(2, 10))  # slices 2..9 hold brain
    assert bag.slices.shape == (8, 4, 8, 8) and bag.slices.dtype == np.float16
    # brain is 16 x 12 inside a 16 x 16 square
    np.testing.assert_allclose(bag.brain_fraction, 16 * 12 / 256)
    expected_tumour = np.where(np.isin(bag.z_index, [5, 6]), 16 / (16 * 12), 0.0)
    np.testing.assert_allclose(bag.tumour_fraction, expected_tumour)
    np.testing.assert_allclose(bag.position, np.linspace(0, 1, 8))


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
