"""Pixel supervision from the segmentation (``train.pixel_supervision``) and the gated max pooling of a slice
(``train.model.slice_pooling: gated_max``): the tumour maps preprocess writes, the encoder's tumour head, its loss,
and the training path that reads the maps while inference stays image-only."""

import copy
import dataclasses
import math
import shutil

import numpy as np
import pytest
import torch
from test_train import TINY_MODEL, tiny_config, toy_bags

import gliomil.params as P
from gliomil.data.bags import BagSet, draw_bags, draw_transform
from gliomil.data.preprocess import SliceGeometry, resize_weights, tumour_maps
from gliomil.data.slices import content_hash, read_manifest
from gliomil.errors import GliomilError, InputError, ParamsError
from gliomil.model.checkpoint import load_checkpoint
from gliomil.model.dsmil import SliceEncoder
from gliomil.model.mil import ModelConfig
from gliomil.training import loop
from gliomil.training.losses import pixel_supervision_loss


def with_maps(bag_set: BagSet) -> BagSet:
    """The toy bags' tumour maps on their marked slices: the whole tumour is the lesion square of toy_bags (rows
    and columns 5-10), its core the inner 4 x 4 pixels, the enhancing tumour that core's rim."""
    maps = []
    for bag, fractions in zip(bag_set.bags, bag_set.tumour_fraction):
        tumour_map = np.zeros((len(bag), 3, *bag.shape[2:]), dtype=np.uint8)
        marked = fractions > 0
        tumour_map[marked, 0, 5:11, 5:11] = 255
        tumour_map[marked, 1, 6:10, 6:10] = 255
        tumour_map[marked, 2, 6:10, 6:10] = 255
        tumour_map[marked, 2, 7:9, 7:9] = 0
        maps.append(tumour_map)
    return dataclasses.replace(bag_set, tumour_maps=maps)


@pytest.fixture(scope="module")
def toy_data():
    return with_maps(toy_bags(16, 12, seed=0)), toy_bags(6, 6, seed=1)


# -- the loss ---------------------------------------------------------------------------------------------------------
def bce(logit: float, target: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_the_pixel_loss_matches_a_hand_computation():
    # one slice, a 4x4 map on a 2x2 grid of cells: each cell's target is the mean of its 2x2 pixels
    rows = [[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.5]]
    tumour_map = torch.tensor([[rows]])
    logits = torch.tensor([[[[2.0, -1.0], [0.0, 0.5]]]])
    by_hand = (bce(2.0, 0.75) + bce(-1.0, 0.0) + bce(0.0, 0.0) + bce(0.5, 0.125)) / 4
    assert pixel_supervision_loss(logits, tumour_map).item() == pytest.approx(by_hand, abs=1e-6)
    # a second map (a region inside the first) on the same cells: the mean over both maps' cells
    inner = [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    two_maps = torch.tensor([[rows, inner]])
    two_logits = torch.tensor([[[[2.0, -1.0], [0.0, 0.5]], [[1.0, 0.0], [-2.0, 3.0]]]])
    second = bce(1.0, 0.25) + bce(0.0, 0.0) + bce(-2.0, 0.0) + bce(3.0, 0.0)
    by_hand_two = (by_hand * 4 + second) / 8
    assert pixel_supervision_loss(two_logits, two_maps).item() == pytest.approx(by_hand_two, abs=1e-6)
    # logits at the map's own resolution (the tumour-moments segmenter's): each pixel is its own target
    full = torch.linspace(-3.0, 3.0, 16).reshape(1, 1, 4, 4)
    by_hand_full = sum(bce(float(z), t) for z, t in zip(full.flatten(), tumour_map.flatten().tolist())) / 16
    assert pixel_supervision_loss(full, tumour_map).item() == pytest.approx(by_hand_full, abs=1e-6)


def test_the_pixel_loss_is_lowest_where_the_head_finds_the_tumour():
    tumour_map = torch.zeros(2, 1, 8, 8)
    tumour_map[0, 0, :4, :4] = 1.0  # slice 0: tumour in the top-left cell; slice 1: none
    right = torch.full((2, 1, 2, 2), -8.0)
    right[0, 0, 0, 0] = 8.0
    wrong = torch.full((2, 1, 2, 2), -8.0)
    wrong[1, 0, 1, 1] = 8.0
    assert pixel_supervision_loss(right, tumour_map).item() < 0.01
    assert pixel_supervision_loss(wrong, tumour_map).item() > 1.0


def test_the_pixel_loss_rejects_maps_that_do_not_fit_the_head():
    with pytest.raises(ValueError, match="same slices and maps"):
        pixel_supervision_loss(torch.zeros(2, 1, 2, 2), torch.zeros(3, 1, 4, 4))
    with pytest.raises(ValueError, match="same slices and maps"):
        pixel_supervision_loss(torch.zeros(2, 1, 2, 2), torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="do not tile"):
        pixel_supervision_loss(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 4, 4))


# -- the encoder's tumour head and the gated pooling ------------------------------------------------------------------
def test_the_tumour_head_scores_the_last_map_before_its_pool_and_leaves_the_features_alone():
    torch.manual_seed(0)
    plain = SliceEncoder(4, width=4, depth=3).eval()
    x = torch.randn(3, 4, 16, 16)
    for maps in (1, 3):
        headed = SliceEncoder(4, width=4, depth=3, tumour_head=maps).eval()
        assert plain.tumour_head is None and set(plain.state_dict()) < set(headed.state_dict())
        headed.load_state_dict({**headed.state_dict(), **plain.state_dict()})
        features, tumour_logits = headed.encode(x)
        assert tumour_logits.shape == (3, maps, 4, 4)  # 16 / 2**(depth - 1) cells a side
        assert torch.equal(features, plain(x)) and plain.encode(x)[1] is None
    # a checkpoint written before the regions records its head as a bool: one map
    assert SliceEncoder(4, width=4, depth=3, tumour_head=True).tumour_head.out_channels == 1


def test_gated_max_pooling_is_the_max_of_the_features_times_the_heads_sigmoid():
    torch.manual_seed(0)
    encoder = SliceEncoder(4, width=4, depth=2, pooling="gated_max").eval()
    assert encoder.tumour_head is not None  # the gate needs the head, with or without pixel supervision
    x = torch.randn(2, 4, 8, 8)
    before_pool = encoder.features[:-1](x)  # (2, 8, 4, 4)
    with torch.no_grad():
        gate = torch.sigmoid(encoder.tumour_head(before_pool))
        assert torch.allclose(encoder(x), (before_pool * gate).flatten(2).max(dim=2).values)
        encoder.tumour_head.weight.zero_()
        encoder.tumour_head.bias.fill_(30.0)  # the gate open everywhere: plain max pooling
        assert torch.allclose(encoder(x), encoder.features(x).flatten(2).max(dim=2).values)
        encoder.tumour_head.bias.fill_(-30.0)  # closed everywhere: nothing gets through
        assert encoder(x).abs().max().item() < 1e-10
    # with the regions' maps the gate is the whole tumour's, the first
    torch.manual_seed(0)
    regions = SliceEncoder(4, width=4, depth=2, pooling="gated_max", tumour_head=3).eval()
    with torch.no_grad():
        before_pool = regions.features[:-1](x)
        gate = torch.sigmoid(regions.tumour_head(before_pool)[:, :1])
        assert torch.allclose(regions(x), (before_pool * gate).flatten(2).max(dim=2).values)
        regions.tumour_head.bias[1:].fill_(-30.0)  # the other regions' scores do not reach the features
        assert torch.allclose(regions(x), (before_pool * gate).flatten(2).max(dim=2).values)


def test_every_aggregator_builds_on_the_gated_pooling_and_the_head_adds_two_weights_after_the_blocks():
    for aggregator in ("dsmil", "mean", "max", "abmil"):
        prediction = "both_streams" if aggregator == "dsmil" else "bag_stream"
        config = ModelConfig(width=4, depth=2, aggregator=aggregator, prediction=prediction, slice_pooling="gated_max")
        out = config.build()(torch.randn(5, 4, 8, 8), [2, 3])
        assert out.bag_logits.shape == (2,) and out.tumour_logits.shape == (5, 1, 4, 4)
    torch.manual_seed(3)
    before = ModelConfig(width=4, depth=2).build()
    torch.manual_seed(3)
    headed = ModelConfig(width=4, depth=2, tumour_head=1).build()
    # the head comes after the encoder's blocks: they are drawn exactly as without it
    blocks = before.encoder.features.state_dict()
    assert all(torch.equal(headed.encoder.features.state_dict()[key], value) for key, value in blocks.items())
    added = set(headed.state_dict()) - set(before.state_dict())
    assert added == {"encoder.tumour_head.weight", "encoder.tumour_head.bias"}


# -- drawing bags with their maps -------------------------------------------------------------------------------------
def test_the_maps_move_with_the_slices_and_change_no_draw(toy_data):
    train_set, _ = toy_data
    marked = dataclasses.replace(train_set, bags=[bag.copy() for bag in train_set.bags])
    for bag, tumour_map in zip(marked.bags, marked.tumour_maps):
        bag[:, 0] = tumour_map[:, 0] / 255  # channel 0 shows where the map says tumour
    chosen = np.array([0, 3, 17, 20])
    for geometry in (False, True):
        with_map = draw_bags(marked, chosen, 8, np.random.default_rng(7), augment=True, geometry=geometry)
        without = draw_bags(
            dataclasses.replace(marked, tumour_maps=None), chosen, 8, np.random.default_rng(7), True, geometry
        )
        assert without.tumour_maps is None
        assert np.array_equal(with_map.slices, without.slices)
        assert all(np.array_equal(a, b) for a, b in zip(with_map.picks, without.picks))
        assert with_map.tumour_maps.shape == (len(with_map.slices), 3, 16, 16) and with_map.tumour_maps.max() == 1.0
        # the gain scales the slices, not the map: compare where each is non-zero
        assert np.array_equal(with_map.slices[:, 0] != 0, with_map.tumour_maps[:, 0] != 0)
        # the regions move as one: the core stays inside the whole tumour
        assert not (with_map.tumour_maps[:, 1] > with_map.tumour_maps[:, 0]).any()
        # the whole tumour's map alone (pixel_target tumour) is the first map of the same draw, nothing else moved
        whole = draw_bags(marked, chosen, 8, np.random.default_rng(7), True, geometry, maps=1)
        assert whole.tumour_maps.shape == (len(with_map.slices), 1, 16, 16) and whole.tumour_maps.flags.c_contiguous
        assert np.array_equal(whole.tumour_maps, with_map.tumour_maps[:, :1])
        assert np.array_equal(whole.slices, with_map.slices)
    with pytest.raises(ValueError, match="maps must be 1 to 3"):
        draw_bags(marked, chosen, 8, np.random.default_rng(7), True, maps=0)


def test_a_transform_moves_any_planes_as_one_of_the_eight_symmetries():
    planes = np.arange(2 * 3 * 3).reshape(2, 3, 3)
    for seed in range(8):
        transform = draw_transform(np.random.default_rng(seed), (2, 4, 3, 3), geometry=True)
        moved = transform.move(planes)
        expected = planes[..., ::-1, :] if transform.flip_left_right else planes
        expected = np.rot90(expected, transform.quarter_turns, axes=(-2, -1))
        assert np.array_equal(moved, expected[..., ::-1] if transform.flip_anterior_posterior else expected)


# -- training ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pixel_target", ["tumour", "regions"])
def test_pixel_supervision_trains_the_head_and_saves_a_model_that_predicts_from_images_alone(
    toy_data, tmp_path, pixel_target
):
    train_set, val_set = toy_data  # the inner-validation set has no maps: model selection reads images only
    # Mean pooling: the head feeds nothing but the pixel loss, so only that loss can move its weights.
    maps = {"tumour": 1, "regions": 3}[pixel_target]
    headed = dataclasses.replace(TINY_MODEL, tumour_head=maps)
    config = tiny_config(epochs=2, pixel_supervision=1.0, pixel_target=pixel_target, model=headed)
    result = loop.train_fold(config, 0, train_set, val_set, tmp_path / "best.pt", log=lambda _: None)
    plain = loop.train_fold(tiny_config(epochs=2), 0, train_set, val_set, tmp_path / "plain.pt", log=lambda _: None)
    assert result.history != plain.history
    model, checkpoint = load_checkpoint(tmp_path / "best.pt")
    assert checkpoint["model_config"]["tumour_head"] == maps
    initial = ModelConfig(**checkpoint["model_config"])
    torch.manual_seed(config.seed * 1000)
    before, after = initial.build().encoder.tumour_head.weight, model.encoder.tumour_head.weight
    assert after.shape[0] == maps
    assert all(not torch.equal(before[k], after[k]) for k in range(maps))  # every region's map learnt
    scores = model.score_bag(torch.from_numpy(val_set.bags[0].astype(np.float32)), chunk=4)
    assert scores.tumour_logits is None and scores.bag_logits.shape == (1,)


def test_the_head_is_built_only_where_something_uses_it():
    model = dataclasses.asdict(TINY_MODEL)
    del model["tumour_head"]  # not a param: the training config decides it
    train = dict(
        pixel_supervision=0.0,
        model=model,
        diagnostics=dict(top_k=3, uniform_entropy=0.98, uniform_max_ratio=1.5, onehot_max_attention=0.95),
    )
    top = dict(seed=1, label_smoothing=0.0, use_class_weights=False)
    assert loop.TrainConfig.from_settings(top, train).model.tumour_head == 0
    assert loop.TrainConfig.from_settings(top, {**train, "pixel_target": "regions"}).model.tumour_head == 0
    supervised = {**train, "pixel_supervision": 0.5}
    assert loop.TrainConfig.from_settings(top, supervised).model.tumour_head == 1
    assert loop.TrainConfig.from_settings(top, {**supervised, "pixel_target": "regions"}).model.tumour_head == 3


def test_pixel_supervision_without_a_segmentation_stops_before_training_naming_the_param_and_the_subject(
    toy_data, tmp_path
):
    train_set, val_set = toy_data
    maps = list(train_set.tumour_maps)
    maps[5] = None
    config = tiny_config(epochs=1, pixel_supervision=1.0, model=dataclasses.replace(TINY_MODEL, tumour_head=1))
    with pytest.raises(GliomilError, match="train.pixel_supervision > 0 needs a segmentation") as info:
        loop.train_fold(
            config, 0, dataclasses.replace(train_set, tumour_maps=maps), val_set, tmp_path / "best.pt", log=print
        )
    assert train_set.subject_ids[5] in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "best.pt").exists()


def test_the_regions_refuse_a_binary_mask_naming_the_subject_and_the_whole_tumour_takes_it(toy_data, tmp_path):
    train_set, val_set = toy_data
    maps = list(train_set.tumour_maps)
    binary = maps[7].copy()
    binary[:, 1], binary[:, 2] = binary[:, 0], 0  # a 0/1 mask is read as label 1 alone: all core, no enhancing
    maps[7] = binary
    masked = dataclasses.replace(train_set, tumour_maps=maps)
    regions = tiny_config(
        epochs=1, pixel_supervision=1.0, pixel_target="regions", model=dataclasses.replace(TINY_MODEL, tumour_head=3)
    )
    with pytest.raises(GliomilError, match="holds label 1 alone, as a binary mask does") as info:
        loop.train_fold(regions, 0, masked, val_set, tmp_path / "best.pt", log=print)
    assert train_set.subject_ids[7] in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "best.pt").exists()
    tumour = tiny_config(epochs=1, pixel_supervision=1.0, model=dataclasses.replace(TINY_MODEL, tumour_head=1))
    loop.train_fold(tumour, 0, masked, val_set, tmp_path / "best.pt", log=lambda _: None)
    assert (tmp_path / "best.pt").exists()


def test_with_pixel_supervision_off_the_maps_change_nothing(toy_data, tmp_path):
    train_set, val_set = toy_data
    config = tiny_config(epochs=2)
    with_maps = loop.train_fold(config, 0, train_set, val_set, tmp_path / "maps.pt", log=lambda _: None)
    plain = dataclasses.replace(train_set, tumour_maps=None)
    without = loop.train_fold(config, 0, plain, val_set, tmp_path / "plain.pt", log=lambda _: None)
    assert with_maps.history == without.history
    weights = [torch.load(tmp_path / name, weights_only=True)["model"] for name in ("maps.pt", "plain.pt")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_params_refuse_pixel_supervision_on_slices_that_do_not_tile_into_the_heads_cells():
    params = P.load_params("params.yaml")
    edited = copy.deepcopy(params)
    edited["train"]["pixel_supervision"] = 1.0
    edited["train"]["model"]["slice_pooling"] = "gated_max"
    P.check_params(edited)  # 64 pixels, depth 4: cells of 8 x 8
    edited["preprocess"]["image_size"] = 100
    with pytest.raises(ParamsError, match="image_size 100 is not a multiple of 8") as info:
        P.check_params(edited)
    assert "\n" not in str(info.value)
    edited["train"]["pixel_supervision"] = 0.0  # the gate alone needs no tiling
    P.check_params(edited)


# -- the store ------------------------------------------------------------------------------------------------------
def test_the_stored_maps_are_the_brats_regions_of_the_labels_inside_the_brain():
    seg = np.zeros((4, 4, 2), dtype=np.uint8)  # (X, Y, Z), two axial slices
    seg[0, 0, 0], seg[1, 0, 0], seg[2, 0, 0] = 1, 2, 4  # necrosis, oedema, enhancing
    seg[3, 3, 1] = 4  # enhancing, but outside the brain
    identity = resize_weights(4, 4)  # a 4 x 4 box kept at 4 x 4 pixels: no resampling
    geometry = SliceGeometry(np.array([0, 1]), slice(0, 4), slice(0, 4), identity, identity)
    brain = np.ones((2, 4, 4), dtype=bool)  # (S, box Y, box X)
    brain[1, 3, 3] = False
    maps = tumour_maps(geometry, seg, brain)
    expected = np.zeros((2, 3, 4, 4), dtype=np.uint8)  # (S, region, X, Y)
    expected[0, :, 0, 0] = 255, 255, 0  # label 1: whole tumour and core
    expected[0, :, 1, 0] = 255, 0, 0  # label 2: whole tumour only
    expected[0, :, 2, 0] = 255, 255, 255  # label 4: every region
    assert np.array_equal(maps.resized, expected)
    assert maps.region_pixels.sum() == 6


def test_a_store_hands_training_its_verified_tumour_maps_and_names_a_corrupted_one(tiny_store, tmp_path):
    ids = read_manifest(tiny_store)["subject_id"].tolist()
    assert BagSet.load(tiny_store, ids).tumour_maps is None  # read only when asked for
    loaded = BagSet.load(tiny_store, ids, tumour_maps=True)
    for bag, tumour_map, fractions in zip(loaded.bags, loaded.tumour_maps, loaded.tumour_fraction):
        assert tumour_map.shape == (len(bag), 3, *bag.shape[2:]) and tumour_map.dtype == np.uint8
        assert not tumour_map[fractions == 0].any() and tumour_map[fractions > 0, 0].any()
        # nested regions: whole tumour >= tumour core >= enhancing tumour, pixel by pixel
        assert (tumour_map[:, 0] >= tumour_map[:, 1]).all() and (tumour_map[:, 1] >= tumour_map[:, 2]).all()
    copy = tmp_path / "preprocessed"
    shutil.copytree(tiny_store, copy)
    victim = ids[3]
    path = copy / "tumour_maps" / f"{victim}.npy"
    damaged = np.load(path)
    damaged[0, 0, 0, 0] ^= 1  # one bit: same size, same shape
    np.save(path, damaged)
    with pytest.raises(InputError, match="tumour map differs from the manifest's SHA-256") as info:
        BagSet.load(copy, ids, tumour_maps=True)
    assert str(info.value).startswith(f"{victim}: {path}: ") and "\n" not in str(info.value)
    BagSet.load(copy, ids)  # images alone never read the maps


def test_a_store_written_before_the_tumour_regions_asks_for_a_new_preprocess(tiny_store, tmp_path):
    copy = tmp_path / "preprocessed"
    shutil.copytree(tiny_store, copy)
    manifest = read_manifest(copy)
    victim = manifest["subject_id"].iloc[2]
    path = copy / "tumour_maps" / f"{victim}.npy"
    whole_tumour_only = np.ascontiguousarray(np.load(path)[:, 0])  # the earlier store's (S, H, W) map
    np.save(path, whole_tumour_only)
    manifest.loc[manifest["subject_id"] == victim, "tumour_map_sha256"] = content_hash(whole_tumour_only)
    manifest.to_csv(copy / "manifest.csv", index=False)
    with pytest.raises(InputError, match="written before the tumour regions; re-run the preprocess stage$") as info:
        BagSet.load(copy, manifest["subject_id"].tolist(), tumour_maps=True)
    assert str(info.value).startswith(f"{victim}: {path}: ") and "\n" not in str(info.value)


def test_a_store_written_before_tumour_maps_asks_for_a_new_preprocess(tiny_store, tmp_path):
    copy = tmp_path / "preprocessed"
    shutil.copytree(tiny_store, copy)
    manifest = read_manifest(copy)
    manifest.drop(columns="tumour_map_sha256").to_csv(copy / "manifest.csv", index=False)
    ids = manifest["subject_id"].tolist()
    BagSet.load(copy, ids)  # training without pixel supervision reads it as before
    with pytest.raises(GliomilError, match="written before tumour maps existed; re-run the preprocess stage$"):
        BagSet.load(copy, ids, tumour_maps=True)
