"""Tests of the DSMIL model: shapes, invariances, gradients and reference fidelity."""

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gliomil.model.dsmil import (
    DSMILAggregator,
    SliceEncoder,
    as_bag_sizes,
    bag_offsets,
)
from gliomil.model.mil import MILModel, ModelConfig
from gliomil.training.losses import mil_loss

SIZE = 32  # small slices keep the suite fast


def make_model(seed=0, **kwargs):
    torch.manual_seed(seed)
    kwargs.setdefault("width", 4)
    kwargs.setdefault("depth", 3)
    return MILModel(**kwargs)


def make_slices(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, SIZE, SIZE, generator=g)


# ------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("bag_sizes", [[1], [5], [1, 1], [3, 1, 7], [2, 9, 1, 4]])
def test_output_shapes(bag_sizes):
    model = make_model().eval()
    total, n_bags = sum(bag_sizes), len(bag_sizes)
    out = model(make_slices(total), bag_sizes)
    assert out.bag_logits.shape == (n_bags,)
    assert out.max_instance_logits.shape == (n_bags,)
    assert out.instance_logits.shape == (total,)
    assert out.attention.shape == (total,)
    assert out.critical.shape == (n_bags,) and out.critical.dtype == torch.long
    assert out.bag_sizes.tolist() == bag_sizes
    for name in ("bag_logits", "instance_logits", "max_instance_logits", "attention"):
        assert getattr(out, name).dtype == torch.float32
        assert torch.isfinite(getattr(out, name)).all()
    # The critical slice lies inside its bag and carries the bag's max instance logit.
    for k, inst, crit, mx in zip(
        bag_sizes, torch.split(out.instance_logits, bag_sizes), out.critical, out.max_instance_logits
    ):
        assert 0 <= int(crit) < k
        assert torch.equal(inst.max(), mx) and torch.equal(inst[crit], mx)


def test_bag_sizes_as_tensor_and_single_bag_attention():
    model = make_model().eval()
    out = model(make_slices(4), torch.tensor([3, 1]))
    assert out.bag_sizes.tolist() == [3, 1]
    assert out.attention[3].item() == pytest.approx(1.0)  # a bag of one slice
    assert out.critical[1].item() == 0


def test_encoder_features_and_minimum_size():
    enc = SliceEncoder(in_channels=4, width=16, depth=4)
    assert enc.out_features == 128
    assert enc(torch.randn(3, 4, 16, 16)).shape == (3, 128)  # smallest allowed: 2**depth
    assert enc(torch.randn(2, 4, 37, 21)).shape == (2, 128)  # odd, non-square sizes
    with pytest.raises(ValueError, match=r"slices must be at least 16x16 for depth 4, got \(8, 32\)"):
        enc(torch.randn(2, 4, 8, 32))
    with pytest.raises(ValueError, match=r"expected slices \(N, 4, H, W\), got \(2, 3, 32, 32\)"):
        enc(torch.randn(2, 3, 32, 32))


def test_bad_bag_sizes_are_rejected():
    model = make_model()
    x = make_slices(5)
    for bad, words in (
        ([2, 2], "bag_sizes add up to 4 but there are 5 slices"),
        ([5, 0], "every bag needs at least one slice"),
        ([], "bag_sizes is empty"),
        ([6, -1], "every bag needs at least one slice"),
    ):
        with pytest.raises(ValueError, match=words):
            model(x, bad)
    with pytest.raises(ValueError, match="bag_sizes must be a 1-D integer tensor"):
        as_bag_sizes(torch.tensor([[5]]))


def test_split_and_offsets():
    sizes = [3, 1, 2]
    parts = torch.split(torch.arange(6), sizes)
    assert [p.tolist() for p in parts] == [[0, 1, 2], [3], [4, 5]]
    assert bag_offsets(sizes).tolist() == [0, 3, 4]
    assert bag_offsets(sizes).tolist() == [int(p[0]) for p in parts]  # each bag's first slice


# -------------------------------------------------------------------- invariances
def test_slice_order_invariance_eval():
    model = make_model(passing_v=True, dropout_v=0.5).eval()
    sizes = [6, 1, 9]
    x = make_slices(sum(sizes))
    ref = model(x, sizes)
    g = torch.Generator().manual_seed(7)
    perm = torch.cat([torch.randperm(n, generator=g) + int(o) for n, o in zip(sizes, bag_offsets(sizes))])
    out = model(x[perm], sizes)
    torch.testing.assert_close(out.bag_logits, ref.bag_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.max_instance_logits, ref.max_instance_logits, rtol=1e-5, atol=1e-5)
    # Per-slice outputs follow their slice.
    torch.testing.assert_close(out.attention, ref.attention[perm], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.instance_logits, ref.instance_logits[perm], rtol=1e-5, atol=1e-6)
    offsets = bag_offsets(sizes)
    assert torch.equal(perm[offsets + out.critical], offsets + ref.critical)


def test_attention_is_a_distribution_per_bag():
    model = make_model().train()
    sizes = [4, 1, 11, 2]
    out = model(make_slices(sum(sizes)), sizes)
    assert (out.attention >= 0).all()
    sums = torch.stack([a.sum() for a in torch.split(out.attention, sizes)])
    torch.testing.assert_close(sums, torch.ones(len(sizes)), rtol=0, atol=1e-5)


def test_batched_forward_equals_per_bag():
    # In eval mode BatchNorm uses running statistics, so each slice is encoded on its own.
    model = make_model(passing_v=True).eval()
    sizes = [3, 1, 5]
    x = make_slices(sum(sizes))
    batched = model(x, sizes)
    singles = [model(part, [len(part)]) for part in torch.split(x, sizes)]
    for name in ("bag_logits", "max_instance_logits", "critical"):
        expected = torch.cat([getattr(s, name) for s in singles])
        torch.testing.assert_close(getattr(batched, name), expected, rtol=1e-5, atol=1e-5)
    for name in ("instance_logits", "attention"):
        expected = torch.cat([getattr(s, name) for s in singles])
        torch.testing.assert_close(getattr(batched, name), expected, rtol=1e-5, atol=1e-6)


def encode_by_hand(encoder: SliceEncoder, x: torch.Tensor) -> torch.Tensor:
    """The eval-mode encoder written out in float64: per block conv3x3 (no bias), BatchNorm with the running
    statistics, ReLU and a 2x2 max pool, then the mean over the plane."""
    h = x.double()
    convs = [m for m in encoder.features if isinstance(m, nn.Conv2d)]
    norms = [m for m in encoder.features if isinstance(m, nn.BatchNorm2d)]
    for conv, norm in zip(convs, norms):
        h = F.conv2d(h, conv.weight.detach().double(), padding=1)
        mean, var = norm.running_mean.double(), norm.running_var.double()
        scale, shift = norm.weight.detach().double(), norm.bias.detach().double()
        h = (h - mean[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-5) * scale[:, None, None]
        h = torch.clamp(h + shift[:, None, None], min=0)
        n, c, height, width = h.shape
        h = h.reshape(n, c, height // 2, 2, width // 2, 2).amax(dim=(3, 5))
    return h.mean(dim=(2, 3))


def test_forward_and_aggregate_on_encoder_features_match_a_hand_computation():
    model = make_model(passing_v=True).eval()
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():  # BatchNorm statistics and affine terms away from their identity defaults
        for norm in (m for m in model.encoder.modules() if isinstance(m, nn.BatchNorm2d)):
            norm.running_mean.copy_(torch.randn(norm.num_features, generator=g) * 0.1)
            norm.running_var.copy_(torch.rand(norm.num_features, generator=g) + 0.5)
            norm.weight.copy_(torch.rand(norm.num_features, generator=g) + 0.5)
            norm.bias.copy_(torch.randn(norm.num_features, generator=g) * 0.1)
    sizes = [3, 1, 5]
    x = make_slices(sum(sizes))
    forward = model(x, sizes)
    aggregated = model.aggregate(model.encoder(x), sizes)
    for name in forward._fields:  # the split into encoder and aggregator changes nothing
        torch.testing.assert_close(getattr(aggregated, name), getattr(forward, name), rtol=0, atol=0)

    feats = encode_by_hand(model.encoder, x)
    torch.testing.assert_close(model.encoder(x).double(), feats, rtol=1e-4, atol=1e-5)
    sd = model.aggregator.state_dict()
    assert forward.bag_sizes.tolist() == sizes
    for b, f in enumerate(torch.split(feats, sizes)):
        bag, scores, A, critical = rederive_bag(sd, f, nonlinear_q=True, passing_v=True)
        lo = int(bag_offsets(sizes)[b])
        hi = lo + sizes[b]
        assert forward.critical[b].item() == critical[0]
        torch.testing.assert_close(forward.bag_logits[b].double(), bag[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(forward.instance_logits[lo:hi].double(), scores[:, 0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(forward.max_instance_logits[b].double(), scores[:, 0].max(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(forward.attention[lo:hi].double(), A[:, 0], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 3, 256])
def test_score_bag_is_the_eval_forward_of_one_bag_for_any_chunk(chunk):
    model = make_model().eval()
    bag = make_slices(7)
    expected = model(bag, [7])
    out = model.score_bag(bag, chunk)
    assert out.bag_sizes.tolist() == [7] and not out.bag_logits.requires_grad
    for name in ("bag_logits", "max_instance_logits", "instance_logits", "attention"):
        torch.testing.assert_close(getattr(out, name), getattr(expected, name), rtol=1e-5, atol=1e-6)
    assert torch.equal(out.critical, expected.critical)


def test_model_config_builds_the_model_it_describes():
    model = ModelConfig(width=4, depth=3, nonlinear_q=False, prediction="both_streams").build()
    assert model.encoder.out_features == 16 and model.prediction == "both_streams"
    assert isinstance(model.aggregator.b_classifier.q, nn.Linear)
    with pytest.raises(ValueError, match="prediction must be one of"):
        ModelConfig(prediction="max").build()


def test_deterministic_for_same_seed():
    x, sizes = make_slices(7), [4, 3]
    a, b = make_model(seed=3).eval(), make_model(seed=3).eval()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    out_a1, out_a2, out_b = a(x, sizes), a(x, sizes), b(x, sizes)
    absent = {"tumour_logits", "pixel_logits", "moments_logits"}  # no tumour head or moments unless asked for
    assert all(getattr(out_a1, name) is None for name in absent)
    for name in set(out_a1._fields) - absent:
        assert torch.equal(getattr(out_a1, name), getattr(out_a2, name))
        assert torch.equal(getattr(out_a1, name), getattr(out_b, name))
    c = make_model(seed=4).eval()
    assert not torch.equal(c(x, sizes).bag_logits, out_a1.bag_logits)


# ---------------------------------------------------------------------- gradients
def test_gradients_reach_both_streams_and_encoder():
    model = make_model(passing_v=True).train()
    sizes = [3, 5, 1]
    out = model(make_slices(sum(sizes)), sizes)
    loss = mil_loss(
        out.bag_logits, out.max_instance_logits, torch.tensor([1, 0, 1]), label_smoothing=0.2, class_weights=(2.0, 0.7)
    )
    loss.backward()
    named = dict(model.named_parameters())
    for name in (
        "aggregator.i_classifier.fc.0.weight",
        "aggregator.b_classifier.q.0.weight",
        "aggregator.b_classifier.q.2.weight",
        "aggregator.b_classifier.v.1.weight",
        "aggregator.b_classifier.fcc.weight",
        "encoder.features.0.weight",
    ):
        grad = named[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_bf16_autocast_keeps_aggregator_in_float32():
    model = make_model().eval()
    sizes = [5, 3]
    x = make_slices(8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, sizes)
    assert out.bag_logits.dtype == torch.float32 and out.attention.dtype == torch.float32
    assert torch.isfinite(out.bag_logits).all()
    ref = model(x, sizes)
    torch.testing.assert_close(out.bag_logits, ref.bag_logits, rtol=0.05, atol=0.05)


# ----------------------------------------------------- reference names and formulas
def reference_state_dict(K, C, nonlinear_q, passing_v, seed=0):
    """Reference DSMIL aggregator keys and shapes, written out by hand, random values."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"i_classifier.fc.0.weight": (C, K), "i_classifier.fc.0.bias": (C,)}
    if nonlinear_q:
        shapes.update(
            {
                "b_classifier.q.0.weight": (128, K),
                "b_classifier.q.0.bias": (128,),
                "b_classifier.q.2.weight": (128, 128),
                "b_classifier.q.2.bias": (128,),
            }
        )
    else:
        shapes.update({"b_classifier.q.weight": (128, K), "b_classifier.q.bias": (128,)})
    if passing_v:
        shapes.update({"b_classifier.v.1.weight": (K, K), "b_classifier.v.1.bias": (K,)})
    shapes.update({"b_classifier.fcc.weight": (C, C, K), "b_classifier.fcc.bias": (C,)})
    return {k: torch.randn(*s, generator=g) * 0.3 for k, s in shapes.items()}


def rederive_bag(sd, feats, nonlinear_q, passing_v):
    """DSMIL on one bag from the formulas, with plain float64 tensor ops."""
    sd = {k: v.double() for k, v in sd.items()}
    feats = feats.double()

    def q(x):
        if nonlinear_q:
            h = torch.clamp(x @ sd["b_classifier.q.0.weight"].T + sd["b_classifier.q.0.bias"], min=0)
            return torch.tanh(h @ sd["b_classifier.q.2.weight"].T + sd["b_classifier.q.2.bias"])
        return x @ sd["b_classifier.q.weight"].T + sd["b_classifier.q.bias"]

    scores = feats @ sd["i_classifier.fc.0.weight"].T + sd["i_classifier.fc.0.bias"]  # (N, C)
    n, C = scores.shape
    critical = [max(range(n), key=lambda i: scores[i, c].item()) for c in range(C)]
    Q = q(feats)  # (N, 128)
    q_max = q(feats[critical])  # (C, 128)
    logits = Q @ q_max.T / math.sqrt(128)
    e = torch.exp(logits - logits.max(dim=0).values)
    A = e / e.sum(dim=0)  # (N, C)
    if passing_v:
        V = torch.clamp(feats @ sd["b_classifier.v.1.weight"].T + sd["b_classifier.v.1.bias"], min=0)
    else:
        V = feats
    B = A.T @ V  # (C, K)
    W = sd["b_classifier.fcc.weight"]  # (C, C, K)
    bag = torch.stack([(W[c] * B).sum() + sd["b_classifier.fcc.bias"][c] for c in range(C)])
    return bag, scores, A, critical


@pytest.mark.parametrize("nonlinear_q", [True, False])
@pytest.mark.parametrize("passing_v", [False, True])
@pytest.mark.parametrize("C", [1, 2])
def test_reference_state_dict_round_trip(nonlinear_q, passing_v, C):
    K = 24
    agg = DSMILAggregator(K, n_classes=C, nonlinear_q=nonlinear_q, passing_v=passing_v, dropout_v=0.3)
    sd = reference_state_dict(K, C, nonlinear_q, passing_v)
    own = agg.state_dict()
    assert list(own) == list(sd)
    assert all(own[k].shape == sd[k].shape for k in sd)
    agg.load_state_dict(sd, strict=True)
    agg.eval()  # dropout in v is off in eval

    sizes = [5, 1, 8]
    feats = torch.randn(sum(sizes), K, generator=torch.Generator().manual_seed(5))
    out = agg(feats, sizes)
    assert out.bag_logits.shape == (3, C) and out.attention.shape == (sum(sizes), C)
    for b, f in enumerate(torch.split(feats, sizes)):
        bag, scores, A, critical = rederive_bag(sd, f, nonlinear_q, passing_v)
        lo, hi = int(bag_offsets(sizes)[b]), int(bag_offsets(sizes)[b]) + sizes[b]
        assert out.critical[b].tolist() == critical
        torch.testing.assert_close(out.bag_logits[b].double(), bag, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.instance_logits[lo:hi].double(), scores, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out.attention[lo:hi].double(), A, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(out.max_instance_logits[b].double(), scores.max(dim=0).values, rtol=1e-5, atol=1e-5)


def test_strict_load_rejects_other_names():
    agg = DSMILAggregator(24, nonlinear_q=True)
    sd = reference_state_dict(24, 1, nonlinear_q=False, passing_v=False)  # linear-q keys
    with pytest.raises(RuntimeError, match=r"Missing key\(s\) in state_dict: \"b_classifier.q.0.weight\""):
        agg.load_state_dict(sd, strict=True)


def test_full_model_aggregator_keys_are_reference_names():
    model = MILModel(width=4, depth=3)
    K = model.encoder.out_features
    keys = {k.removeprefix("aggregator.") for k in model.state_dict() if k.startswith("aggregator.")}
    assert keys == set(reference_state_dict(K, 1, True, False))


# --------------------------------------------------------------------------- init
@pytest.mark.parametrize("K", [24, 200])  # fewer and more features than the query width
def test_orthogonal_init(K):
    agg = DSMILAggregator(K, n_classes=2, nonlinear_q=True, passing_v=True)
    checked = 0
    for module in agg.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            W = module.weight.detach().reshape(module.weight.shape[0], -1)
            rows, cols = W.shape
            # Orthonormal rows when there are no more rows than columns, else orthonormal columns.
            gram = W @ W.T if rows <= cols else W.T @ W
            torch.testing.assert_close(gram, torch.eye(min(rows, cols)), rtol=0, atol=1e-5)
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
            checked += 1
    assert checked == 5  # fc.0, q.0, q.2, v.1, fcc
