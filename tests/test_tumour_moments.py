"""The tumour-moments stream (train.model.tumour_moments, gliomil.model.moments): the moments by hand, chunked
scoring, the init and gradient contracts, training and the params check."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
from test_pixel_supervision import toy_data  # noqa: F401  (a fixture: toy bags with tumour maps)
from test_train import TINY_MODEL, tiny_config

import gliomil.params as P
from gliomil.errors import ParamsError
from gliomil.model.checkpoint import load_checkpoint
from gliomil.model.mil import ModelConfig
from gliomil.model.moments import CLASSIFIER_GAIN, INTERIOR, MOMENTUM, PRIOR_LOGIT, SEGMENTER_GAIN, TumourMoments
from gliomil.training import loop
from gliomil.training.losses import mil_loss, pixel_supervision_loss

MOMENTS_MODEL = dataclasses.replace(TINY_MODEL, tumour_head=1, tumour_moments=True)


def forced_logits(shape, inside: tuple[slice, slice], level: float = 40.0) -> torch.Tensor:
    """Segmenter logits (N, 1, H, W) that are +level inside the square (the mask) and -level outside."""
    logits = torch.full(shape, -level)
    logits[:, :, inside[0], inside[1]] = level
    return logits


def randomised_stream(config: ModelConfig):
    """The model of ``config`` in eval mode with a random stream head and a segmenter whose mask is part of a slice
    (seeded: torch.manual_seed(0))."""
    torch.manual_seed(0)
    model = config.build().eval()
    with torch.no_grad():
        model.moments.classifier.weight.normal_()
        model.moments.segmenter.weight.normal_(std=1.0 / SEGMENTER_GAIN)
        model.moments.segmenter.bias.zero_()
    return model


def test_the_moments_are_the_mean_sd_and_area_of_each_modality_inside_the_tumour_by_hand():
    rng = np.random.default_rng(0)
    slices = torch.from_numpy(rng.normal(2.0, 1.5, size=(3, 4, 12, 12)).astype(np.float32))
    slices[:, :, :2] = 0  # background rows: outside the brain, never counted even where the logits say tumour
    logits = forced_logits((3, 1, 12, 12), (slice(0, 6), slice(3, 9)))
    sums = TumourMoments.slice_sums(slices, logits)
    assert sums.shape == (3, 9)
    moments = TumourMoments().moments(sums.sum(dim=0, keepdim=True), torch.tensor([3]))
    inside = slices[:, :, 2:6, 3:9].numpy()  # rows 2-5 (0-1 are background), columns 3-8: 24 pixels per slice
    for c in range(4):
        values = inside[:, c].ravel().astype(np.float64)
        assert moments[0, c].item() == pytest.approx(values.mean(), abs=1e-5)
        assert moments[0, 4 + c].item() == pytest.approx(values.std(), abs=1e-4)  # population SD
    assert moments[0, 8].item() == pytest.approx(math.log1p(24.0), abs=1e-6)


def test_the_mask_is_the_brain_where_the_tumour_probability_reaches_a_half_and_an_empty_one_gives_floors():
    slices = torch.tensor([[[[1.0, 3.0, 5.0, 0.0]]] * 4])  # one slice (1, 4, 1, 4); the last pixel is background
    logits = torch.tensor([[[[-1e-3, 0.0, 2.0, 9.0]]]])  # probability just under 0.5, 0.5, 0.88; background
    sums = TumourMoments.slice_sums(slices, logits)
    assert sums[0].tolist() == [2.0, *[8.0] * 4, *[34.0] * 4]  # pixels 3 and 5 only
    moments = TumourMoments().moments(sums, torch.tensor([1]))
    assert moments[0].tolist() == pytest.approx([4.0] * 4 + [1.0] * 4 + [math.log1p(2.0)])
    empty = TumourMoments().moments(TumourMoments.slice_sums(slices, torch.full_like(logits, -1.0)), torch.tensor([1]))
    assert empty[0, :4].tolist() == [0.0] * 4 and empty[0, 4:8].tolist() == pytest.approx([1e-3] * 4)
    assert empty[0, 8].item() == 0.0


def test_the_segmenter_is_a_logistic_regression_on_each_pixel_and_its_five_by_five_mean():
    head = TumourMoments()
    assert not head.segmenter.weight.any()  # it starts from zero weights and the prior: an empty mask
    assert head.segment(torch.randn(2, 4, 9, 9)).eq(PRIOR_LOGIT).all()
    assert not TumourMoments.slice_sums(torch.randn(2, 4, 9, 9), head.segment(torch.randn(2, 4, 9, 9))).any()
    with torch.no_grad():
        head.segmenter.bias.fill_(-1.0 / SEGMENTER_GAIN)
        head.segmenter.weight[0, 4 + 2] = 1.0 / SEGMENTER_GAIN  # the t1ce local mean
        head.segmenter.weight[0, 0] = 10.0 / SEGMENTER_GAIN  # the flair value
    slices = torch.zeros(1, 4, 9, 9)
    slices[0, 2] = 25.0  # t1ce: mean 25 where the whole 5 x 5 square is inside, less at the border (zeros outside)
    slices[0, 0, 4, 4] = 0.5
    logits = head.segment(slices)[0, 0]
    assert logits[4, 4].item() == pytest.approx(25.0 + 5.0 - 1.0)
    assert logits[0, 0].item() == pytest.approx(25.0 * 9 / 25 - 1.0)  # a corner sees 3 x 3 of its 5 x 5 square
    assert logits[2, 6].item() == pytest.approx(25.0 - 1.0)
    assert logits[0, 2].item() == pytest.approx(25.0 * 15 / 25 - 1.0)  # an edge: 3 rows of 5


def test_the_training_step_teaches_the_segmenter_the_interior_and_the_stream_its_own_grade_loss():
    maps = torch.tensor([0.0, 0.5, 191 / 255, 192 / 255, 1.0]).reshape(1, 1, 1, 5)  # as draw_batch scales uint8
    assert INTERIOR == 0.75 and TumourMoments.pixel_targets(maps).flatten().tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    torch.manual_seed(0)
    model = MOMENTS_MODEL.build().train()
    slices, sizes, labels = torch.randn(6, 4, 16, 16), [3, 3], torch.tensor([1, 0])
    tumour_maps = torch.rand(6, 1, 16, 16)
    expected = copy.deepcopy(model)  # the same forward in train mode, before the step moves anything
    out = expected(slices, sizes)
    assert out.moments_logits.shape == (2,)
    by_hand = (
        mil_loss(out.bag_logits, out.max_instance_logits, labels)
        + mil_loss(out.moments_logits, None, labels)  # an untrained head's logit is 0: log 2 per bag
        + pixel_supervision_loss(out.tumour_logits, tumour_maps)
        + pixel_supervision_loss(out.pixel_logits, (tumour_maps >= INTERIOR).float())
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss, _ = loop.train_step(
        model, optimizer, scaler, mil_loss, slices, sizes, labels, None, 0.0, None, "tumour", 1.0, tumour_maps
    )
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)


def test_an_untrained_stream_adds_nothing_and_the_rest_is_initialised_as_without_it():
    torch.manual_seed(3)
    plain = dataclasses.replace(MOMENTS_MODEL, tumour_moments=False).build()
    torch.manual_seed(3)
    measured = MOMENTS_MODEL.build()
    weights, extended = plain.state_dict(), measured.state_dict()
    assert all(torch.equal(weights[key], extended[key]) for key in weights)
    assert sorted(set(extended) - set(weights)) == [
        "moments.batches_seen",
        "moments.classifier.bias",
        "moments.classifier.weight",
        "moments.running_mean",
        "moments.running_var",
        "moments.segmenter.bias",
        "moments.segmenter.weight",
    ]
    slices = torch.randn(9, 4, 16, 16)
    plain.eval(), measured.eval()
    with torch.no_grad():
        assert torch.equal(plain(slices, [4, 5]).bag_logits, measured(slices, [4, 5]).bag_logits)
    assert "tumour_moments" not in {k for k, v in dataclasses.asdict(ModelConfig()).items() if v}


def test_the_moments_are_standardised_by_running_statistics_that_start_at_zero_and_one_and_evaluation_keeps():
    head = TumourMoments()
    with torch.no_grad():
        head.classifier.weight.fill_(1.0)
    rng = np.random.default_rng(1)
    batches = [torch.from_numpy(rng.normal(size=(4, 9)).astype(np.float32)).abs() + 1 for _ in range(3)]
    sizes = torch.full((4,), 5)
    moments = [head.moments(b, sizes) for b in batches]
    head.train()
    logits = head.bag_logits(batches[0], sizes)
    mean = MOMENTUM * moments[0].mean(dim=0)  # from 0 and 1, not set by the first batch (an untrained segmenter's)
    var = (1 - MOMENTUM) + MOMENTUM * moments[0].var(dim=0, unbiased=False)
    assert torch.allclose(head.running_mean, mean) and torch.allclose(head.running_var, var)
    expected = CLASSIFIER_GAIN * ((moments[0] - mean) / torch.sqrt(var + 1e-5)).sum(dim=1)
    assert torch.allclose(logits, expected, atol=1e-4)
    head.bag_logits(batches[1], sizes)
    mean = (1 - MOMENTUM) * mean + MOMENTUM * moments[1].mean(dim=0)
    var = (1 - MOMENTUM) * var + MOMENTUM * moments[1].var(dim=0, unbiased=False)
    assert torch.allclose(head.running_mean, mean) and torch.allclose(head.running_var, var)
    assert int(head.batches_seen) == 2
    head.eval()
    first = head.bag_logits(batches[2], sizes)
    assert torch.allclose(head.running_mean, mean) and int(head.batches_seen) == 2  # evaluation learns nothing
    alone = torch.cat([head.bag_logits(batches[2][i : i + 1], sizes[:1]) for i in range(4)])
    assert torch.allclose(first, alone)  # and a bag's logit does not depend on the others scored with it


def test_the_grade_does_not_reach_the_segmenter_and_the_pixel_loss_does():
    model = MOMENTS_MODEL.build()
    with torch.no_grad():
        model.moments.classifier.weight.fill_(0.3)  # a trained stream: its logit depends on the moments
    out = model(torch.randn(8, 4, 16, 16), [3, 5])
    out.bag_logits.sum().backward(retain_graph=True)
    assert model.moments.classifier.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.moments.segmenter.parameters())
    out.pixel_logits.mean().backward()
    assert all(p.grad.abs().sum() > 0 for p in model.moments.segmenter.parameters())


@pytest.mark.parametrize("context", [0, 1])
def test_a_bag_scored_in_chunks_equals_the_whole_forward_and_reads_the_centre_slice(context):
    model = randomised_stream(dataclasses.replace(MOMENTS_MODEL, context_slices=context))
    slices = torch.randn(11, 4 * (2 * context + 1), 16, 16)
    with torch.no_grad():
        whole = model(slices, [11])
    mask = whole.pixel_logits >= 0
    assert 0.2 < mask.float().mean() < 0.8
    assert torch.allclose(model.score_bag(slices, chunk=3).bag_logits, whole.bag_logits, atol=1e-5)
    centre = slices[:, 4 * context : 4 * context + 4]
    assert torch.equal(model.centre(slices), centre)
    with torch.no_grad():
        assert torch.equal(whole.pixel_logits, model.moments.segment(centre))
        if context:  # a neighbour's channels would give another mask
            assert not torch.equal(whole.pixel_logits, model.moments.segment(slices[:, :4]))


def test_training_teaches_the_segmenter_the_tumour_and_predicts_from_images_alone(toy_data, tmp_path):  # noqa: F811
    train_set, val_set = toy_data  # validation bags carry no maps: selection reads images only
    config = tiny_config(epochs=8, lr=1e-2, pixel_supervision=1.0, model=MOMENTS_MODEL)
    result = loop.train_fold(config, 0, train_set, val_set, tmp_path / "best.pt", log=lambda _: None)
    assert result.best_epoch >= 1
    model, checkpoint = load_checkpoint(tmp_path / "best.pt")
    assert checkpoint["model_config"]["tumour_moments"] is True
    assert model.moments.classifier.weight.abs().sum() > 0  # the grade loss moved the stream's classifier
    # the segmenter fits the training patients' tumour maps far better than it did before training
    torch.manual_seed(config.seed * 1000)
    initial = ModelConfig(**checkpoint["model_config"]).build()
    slices = torch.from_numpy(np.concatenate(train_set.bags[:8]).astype(np.float32))
    maps = torch.from_numpy(np.concatenate(train_set.tumour_maps[:8])[:, :1] / 255.0)
    with torch.no_grad():
        losses = [float(pixel_supervision_loss(m.moments.segment(slices), maps)) for m in (initial, model)]
    assert losses[1] < 0.5 * losses[0], losses
    scores = model.score_bag(torch.from_numpy(val_set.bags[0].astype(np.float32)), chunk=4)
    assert scores.pixel_logits is None and scores.bag_logits.shape == (1,)


def test_params_refuse_the_moments_without_the_pixel_loss_that_teaches_their_segmenter():
    params = P.load_params("params.yaml")
    assert params["train"]["model"]["tumour_moments"] is False
    edited = copy.deepcopy(params)
    edited["train"]["model"]["tumour_moments"] = True
    with pytest.raises(ParamsError, match="set train.pixel_supervision > 0") as info:
        P.check_params(edited)
    assert "\n" not in str(info.value)
    edited["train"]["pixel_supervision"] = 1.0
    P.check_params(edited)


# -- with the three regions (train.pixel_target: regions) ----------------------------------------------------------
REGIONS_MODEL = dataclasses.replace(MOMENTS_MODEL, tumour_head=3)


def test_with_the_regions_the_stream_reads_the_heads_core_and_enhancing_areas_by_hand():
    cells = torch.full((2, 3, 2, 2), -40.0)  # two slices of 8 x 8 pixels on 2 x 2 cells of 16 pixels each
    cells[0, 0] = torch.tensor([[40.0, 40.0], [0.0, -40.0]])  # whole tumour: 1 + 1 + 0.5 cells
    cells[0, 1, 0, 0] = 0.0  # core: half a cell
    cells[1, 0, 1, 1] = 40.0  # the second slice: one cell of whole tumour, a quarter of it enhancing
    cells[1, 2, 1, 1] = -math.log(3.0)  # sigmoid = 1/4
    areas = TumourMoments.region_areas(cells, pixels=64)
    assert areas.flatten().tolist() == pytest.approx([40.0, 8.0, 0.0, 16.0, 0.0, 4.0], abs=1e-4)
    head = TumourMoments(regions=True)
    assert head.classifier.in_features == 13 and TumourMoments().classifier.in_features == 9
    slices = torch.rand(2, 4, 8, 8) + 1.0  # all brain
    logits = forced_logits((2, 1, 8, 8), (slice(0, 2), slice(0, 5)))  # the segmenter's mask: 10 pixels a slice
    pixel_logits, sums = head.measure(slices, cells)
    assert torch.equal(pixel_logits, head.segment(slices)) and sums.shape == (2, 12)
    bag = torch.cat([TumourMoments.slice_sums(slices, logits), areas], dim=1).sum(dim=0, keepdim=True)
    numbers = head.moments(bag, torch.tensor([2]))
    plain = TumourMoments().moments(bag[:, :9], torch.tensor([2]))
    assert torch.equal(numbers[:, :9], plain)  # the nine numbers are the stream's without the regions
    assert plain[0, 8].item() == pytest.approx(math.log1p(10.0), abs=1e-6)
    # core 8 and enhancing 4 pixels of a whole tumour of 56, over 2 slices
    by_hand = [8.0 / 56.0, 4.0 / 56.0, math.log1p(8.0 / 2), math.log1p(4.0 / 2)]
    assert numbers[0, 9:].tolist() == pytest.approx(by_hand, abs=1e-5)
    with pytest.raises(ValueError, match="three regions"):
        TumourMoments.region_areas(cells[:, :1], pixels=64)


def test_the_regions_stream_scores_in_chunks_as_a_whole_and_the_grade_reaches_neither_head():
    model = randomised_stream(REGIONS_MODEL)
    assert model.moments.regions and not MOMENTS_MODEL.build().moments.regions
    slices = torch.randn(11, 4, 16, 16)
    with torch.no_grad():
        whole = model(slices, [11])
    assert whole.tumour_logits.shape == (11, 3, 8, 8)
    assert torch.allclose(model.score_bag(slices, chunk=3).bag_logits, whole.bag_logits, atol=1e-5)
    # the regions move the stream's logit: the same model reading only the nine numbers gives another
    with torch.no_grad():
        nine = whole.moments_logits - CLASSIFIER_GAIN * model.moments.classifier.weight[0, 9:] @ (
            (
                model.moments.moments(
                    model.moments.measure(slices, whole.tumour_logits)[1].sum(0, keepdim=True), torch.tensor([11])
                )[0, 9:]
                - model.moments.running_mean[9:]
            )
            / torch.sqrt(model.moments.running_var[9:] + 1e-5)
        )
    assert not torch.allclose(nine, whole.moments_logits)
    model.train()
    out = model(slices, [5, 6])
    out.moments_logits.sum().backward()
    assert model.moments.classifier.weight.grad[0, 9:].abs().sum() > 0
    assert all(p.grad is None for p in model.encoder.parameters())  # neither the tumour head nor the blocks
    assert all(p.grad is None for p in model.moments.segmenter.parameters())


def test_training_with_the_regions_teaches_the_head_the_core_and_predicts_from_images_alone(toy_data, tmp_path):  # noqa: F811
    train_set, val_set = toy_data
    config = tiny_config(epochs=8, lr=1e-2, pixel_supervision=1.0, pixel_target="regions", model=REGIONS_MODEL)
    loop.train_fold(config, 0, train_set, val_set, tmp_path / "best.pt", log=lambda _: None)
    model, checkpoint = load_checkpoint(tmp_path / "best.pt")
    assert checkpoint["model_config"]["tumour_head"] == 3 and model.moments.regions
    assert model.moments.classifier.weight[0, 9:].abs().sum() > 0  # the grade loss reads the regions' numbers
    slices = torch.from_numpy(np.concatenate(train_set.bags[:8]).astype(np.float32))
    marked = torch.from_numpy(np.concatenate(train_set.tumour_fraction[:8]) > 0)  # the slices with the toy lesion
    torch.manual_seed(config.seed * 1000)
    initial = ModelConfig(**checkpoint["model_config"]).build()
    ratios = []
    for candidate in (initial, model):
        with torch.no_grad():
            core = TumourMoments.region_areas(candidate.eval().encoder.encode(slices)[1], 16 * 16)[:, 1]
        ratios.append(float(core[marked].mean() / core[~marked].mean()))
    # the head's core area is larger where the core is (16 pixels on each lesion slice, none elsewhere)
    assert ratios[0] < 1.2 and ratios[1] > 1.5, ratios
    scores = model.score_bag(torch.from_numpy(val_set.bags[0].astype(np.float32)), chunk=4)
    assert scores.bag_logits.shape == (1,)


# -- the outline (train.model.tumour_shape) ------------------------------------------------------------------------
SHAPE_MODEL = dataclasses.replace(MOMENTS_MODEL, tumour_shape=True)


def test_the_outline_is_the_masks_pixel_edges_against_a_discs_perimeter_by_hand():
    slices = torch.rand(3, 4, 12, 12) + 1.0  # all brain
    logits = torch.full((3, 1, 12, 12), -40.0)
    logits[0, 0, 2:6, 3:9] = 40.0  # a 4 x 6 rectangle inside the slice: 20 edges, 24 pixels
    logits[1, 0, 0:3, 0:2] = 40.0  # 3 x 2 in the corner: the slice's border is an edge too, 10 edges, 6 pixels
    logits[1, 0, 5, 5] = 40.0  # and a lone pixel: 4 more edges, 1 more pixel
    sums = TumourMoments.slice_sums(slices, logits, shape=True)  # the third slice's mask is empty
    assert sums.shape == (3, 11)
    assert torch.equal(sums[:, :9], TumourMoments.slice_sums(slices, logits))  # the nine sums are unchanged
    assert sums[:, 9].tolist() == [20.0, 14.0, 0.0]
    assert sums[:, 10].tolist() == pytest.approx([math.sqrt(4 * math.pi * 24), math.sqrt(4 * math.pi * 7), 0.0])
    stream = TumourMoments(shape=True)
    assert stream.classifier.in_features == 10
    numbers = stream.moments(sums.sum(dim=0, keepdim=True), torch.tensor([3]))
    assert torch.equal(numbers[:, :9], TumourMoments().moments(sums[:, :9].sum(dim=0, keepdim=True), torch.tensor([3])))
    circles = math.sqrt(4 * math.pi * 24) + math.sqrt(4 * math.pi * 7)
    assert numbers[0, 9].item() == pytest.approx(math.log((1 + 34.0) / (1 + circles)), abs=1e-6)
    empty = stream.moments(sums[2:], torch.tensor([1]))
    assert empty[0, 9].item() == 0.0
    # a ragged outline of the same area reads higher than a compact one
    square, comb = torch.full((1, 1, 12, 12), -40.0), torch.full((1, 1, 12, 12), -40.0)
    square[0, 0, 2:8, 2:8] = 40.0
    comb[0, 0, 2:8, 0:12:2] = 40.0  # six one-pixel columns of 6
    rough = [
        stream.moments(TumourMoments.slice_sums(slices[:1], m, shape=True), torch.tensor([1]))[0, 9]
        for m in (square, comb)
    ]
    assert rough[0] < rough[1]


def test_the_outline_stream_scores_in_chunks_as_a_whole_and_params_refuse_it_without_the_moments():
    model = randomised_stream(SHAPE_MODEL)
    slices = torch.randn(11, 4, 16, 16)
    with torch.no_grad():
        whole = model(slices, [11])
    assert torch.allclose(model.score_bag(slices, chunk=3).bag_logits, whole.bag_logits, atol=1e-5)
    model.train()
    model(slices, [5, 6]).moments_logits.sum().backward()
    assert model.moments.classifier.weight.grad[0, 9].abs() > 0  # the grade loss reads the outline
    assert all(p.grad is None for p in model.moments.segmenter.parameters())
    with pytest.raises(ValueError, match="needs tumour_moments"):
        dataclasses.replace(TINY_MODEL, tumour_shape=True).build()
    edited = copy.deepcopy(P.load_params("params.yaml"))
    assert edited["train"]["model"]["tumour_shape"] is False
    edited["train"]["model"]["tumour_shape"] = True
    with pytest.raises(ParamsError, match="set train.model.tumour_moments: true") as info:
        P.check_params(edited)
    assert "\n" not in str(info.value)
    edited["train"]["model"]["tumour_moments"], edited["train"]["pixel_supervision"] = True, 1.0
    P.check_params(edited)
