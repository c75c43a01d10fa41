"""Compression of DRN models: prunable layers, physical channel removal (pixel shuffle and
concatenation), channel number search, dual regression selection, the L1 baseline, costs."""

import copy
import itertools

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from blindsr import archs
from blindsr.compress import dr
from blindsr.compress.dr import capture, channel_scores, dr_prune
from blindsr.compress.l1 import filter_norms, l1_keep, l1_prune
from blindsr.compress.measure import count_macs, count_params, latency
from blindsr.compress.objective import DualObjective
from blindsr.compress.pipeline import split_trainset
from blindsr.compress.prune import (
    layer_widths,
    mask_channels,
    prunable_layers,
    prune_channels,
    removed_fraction,
)
from blindsr.compress.search import (
    V,
    allocate,
    candidate_widths,
    channel_weights,
    decode_widths,
    round_width,
    search_widths,
    uniform_widths,
)
from blindsr.errors import BlindSRError


def tiny(scale=4, num_block=2, num_feat=4, seed=0):
    torch.manual_seed(seed)
    return archs.build("drn", scale=scale, num_block=num_block, num_feat=num_feat)


def batches(scale=4, n=2, size=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(n, 3, size * scale, size * scale, generator=g)
    lr = torch.nn.functional.avg_pool2d(hr, scale)
    return itertools.repeat((lr, hr))


def l1_objective():
    """L_DR stand-in: the multi-scale L1 against average-pooled HR (no dual models)."""

    def loss_fn(outputs, lr, hr, duals, lam):
        total = sum((o - nn.functional.adaptive_avg_pool2d(hr, o.shape[-2:])).abs().mean()
                    for o in outputs)
        return total, {}

    return DualObjective(None, 0.0, loss_fn)


# ------------------------------------------------------------------------------ layers, pruning


def test_prunable_layers_in_forward_order():
    layers = prunable_layers(tiny(scale=8, num_block=2, num_feat=2))
    assert [x.name for x in layers] == [
        "up.0.blocks.0", "up.0.blocks.1", "up.0", "up.1.blocks.0", "up.1.blocks.1", "up.1",
        "up.2.blocks.0", "up.2.blocks.1", "up.2"]
    up = layers[2]
    assert (up.kind, up.producer, up.consumer, up.group, up.width) == (
        "up", "up.0.upconv", "up.0.reduce", 4, 16)
    assert (layers[0].producer, layers[0].consumer, layers[0].group) == (
        "up.0.blocks.0.conv1", "up.0.blocks.0.conv2", 1)
    assert layers[-1].width == 8


@pytest.mark.parametrize("scale", [4, 8])
def test_physical_pruning_equals_masking(scale, rand_image):
    """THE correctness test: removing random channels (RCAB inner channels and pixel-shuffle
    groups) gives exactly the original network with those channels zeroed."""
    model = tiny(scale=scale, num_block=2, num_feat=2).eval()
    g = torch.Generator().manual_seed(1)
    keep, masks = {}, {}
    for layer in prunable_layers(model):
        k = int(torch.randint(1, layer.width, (1,), generator=g))
        idx = torch.randperm(layer.width, generator=g)[:k]
        keep[layer.name] = idx.tolist()
        masks[layer.name] = torch.zeros(layer.width).index_fill_(0, idx, 1.0)
    pruned = prune_channels(model, keep).eval()
    assert layer_widths(pruned) == {k: len(v) for k, v in keep.items()}
    assert count_params(pruned) < count_params(model)
    x = rand_image(2, 3, 5, 6)
    with torch.no_grad():
        got = pruned.forward_all(x)
        with mask_channels(model, masks):
            want = model.forward_all(x)
        unmasked = model(x)
    for a, b in zip(got, want, strict=True):
        assert (a - b).abs().max() < 1e-5
    assert (got[-1] - unmasked).abs().max() > 1e-4  # the masks did change the function


def test_pruned_checkpoint_rebuilds_from_shapes():
    model = tiny()
    pruned = prune_channels(model, {"up.0": [0, 5, 9], "up.1.blocks.1": [2]})
    clone = archs.from_state_dict(pruned.state_dict())
    assert clone.up_widths == [3, 16] and clone.block_widths == [16, 16, 16, 1]


def test_prune_channels_rejects_bad_selections():
    model = tiny(num_block=1)
    with pytest.raises(BlindSRError, match="at least one channel"):
        prune_channels(model, {"up.0": []})
    with pytest.raises(BlindSRError, match=r"in \[0, 16\)"):
        prune_channels(model, {"up.0": [3, 16]})
    with pytest.raises(BlindSRError, match="not a prunable layer"):
        prune_channels(model, {"head": [0]})
    with pytest.raises(BlindSRError, match="DRN models only, got srresnet"):
        prunable_layers(archs.build("srresnet", num_feat=4, num_block=1))


# ------------------------------------------------------------------------------------- search


def test_candidate_widths():
    assert V == (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    assert candidate_widths(64, 0.5) == [16, 16, 20, 24, 28, 32]  # 32 v, down to multiples of 4
    assert candidate_widths(10, 0.3, multiple=1) == [3, 4, 4, 5, 6, 7]
    assert candidate_widths(64, 0.7) == [8, 8, 12, 12, 16, 16]
    assert round_width(1.2, 16, 4) == 4 and round_width(99, 16, 4) == 16  # clamped to [4, 16]
    with pytest.raises(BlindSRError, match=r"ratio must be a number in \(0, 1\)"):
        candidate_widths(64, 1.0)


def test_channel_weights_mix_the_top_channels_by_norm():
    model = tiny(num_block=1)
    layers = prunable_layers(model)
    with torch.no_grad():
        conv = model.get_submodule(layers[0].consumer)
        conv.weight.copy_(torch.arange(16.0).view(1, 16, 1, 1).expand_as(conv.weight))
    cands = torch.tensor([[2, 3, 4, 5, 6, 8]] * len(layers))
    alpha = torch.zeros(len(layers), 6)
    alpha[0, 1] = 50.0  # all the mass on the 3-channel candidate
    m = channel_weights(model, layers, alpha, cands)[layers[0].name]
    assert torch.allclose(m, torch.tensor([0.0] * 13 + [1.0] * 3), atol=1e-6)  # largest norms
    uniform = channel_weights(model, layers, torch.zeros(len(layers), 6), cands)
    assert uniform[layers[0].name][-1] == pytest.approx(1.0)  # in every candidate
    assert uniform[layers[0].name][-4] == pytest.approx(4 / 6)  # in the 4 largest only


def test_search_argmax_returns_candidates_removing_at_least_the_ratio():
    model = tiny()
    ratio = 0.4
    result = search_widths(model, ratio, batches(seed=0), batches(seed=1), l1_objective(),
                           steps=3, multiple=1, decode="argmax")
    full = layer_widths(model)
    assert set(result.widths) == set(full)
    for name, width in result.widths.items():
        assert width in result.candidates[name] == candidate_widths(full[name], ratio, 1)
        assert sum(result.probs[name]) == pytest.approx(1.0, abs=1e-5)
    assert removed_fraction(result.widths, full) >= ratio
    assert len(result.losses["alpha"]) == 3
    assert any(max(p) > 1 / 6 + 1e-4 for p in result.probs.values())  # alpha moved
    assert layer_widths(model) == full  # the search worked on a copy


def test_search_budget_decoding_removes_exactly_the_ratio():
    model = tiny()
    full = layer_widths(model)
    for ratio in (0.3, 0.5, 0.7):
        result = search_widths(model, ratio, batches(seed=0), batches(seed=1), l1_objective(),
                               steps=2, multiple=1)
        assert sum(result.widths.values()) == int((1 - ratio) * sum(full.values()) + 1e-6)
        assert all(1 <= result.widths[n] <= full[n] for n in full)
    with pytest.raises(BlindSRError, match="decoding must be budget or argmax"):
        search_widths(model, 0.5, batches(), batches(), l1_objective(), steps=1, decode="max")


def test_allocate_follows_the_preference_and_meets_the_budget():
    full = {"a": 16, "b": 16, "c": 16, "d": 16}
    even = allocate({n: 1.0 for n in full}, full, 0.5, multiple=1)
    assert even == {n: 8 for n in full}
    skewed = allocate({"a": 3.0, "b": 1.0, "c": 1.0, "d": 1.0}, full, 0.5, multiple=1)
    assert skewed["a"] > skewed["b"] and sum(skewed.values()) == 32
    # a layer that would exceed its width is capped and the rest share what is left
    capped = allocate({"a": 100.0, "b": 1.0, "c": 1.0, "d": 1.0}, full, 0.25, multiple=1)
    assert capped["a"] == 16 and sum(capped.values()) == 48
    assert sorted(capped[n] for n in "bcd") == [10, 11, 11]  # 32 / 3 rounded to the total
    # multiples: rounded down, then the shortfall handed out one multiple at a time
    fours = allocate({n: 1.0 for n in full}, full, 0.3, multiple=4)
    assert sorted(fours.values()) == [8, 12, 12, 12] and sum(fours.values()) == 44
    with pytest.raises(BlindSRError, match="positive preference"):
        allocate({"a": 1.0}, full, 0.5)
    # minimum widths that push the total over the budget are taken back from the largest surplus
    tiny_pref = allocate({"a": 1.0, "b": 1e-3, "c": 1e-3}, dict.fromkeys("abc", 24), 2 / 3, 4)
    assert tiny_pref == {"a": 16, "b": 4, "c": 4}
    # a full width that is not a multiple is still reachable with what rounding left
    tens = allocate(dict.fromkeys("abc", 1.0), dict.fromkeys("abc", 10), 0.1, 4)
    assert sorted(tens.values()) == [8, 8, 10]


def test_decode_widths_argmax_and_budget():
    full = {"a": 10, "b": 10}
    cands = torch.tensor([candidate_widths(10, 0.4, 1)] * 2)  # [3, 3, 4, 4, 5, 6]
    probs = torch.tensor([[0.0] * 5 + [1.0], [1.0] + [0.0] * 5])
    assert decode_widths(probs, cands, full, 0.4, 1, "argmax") == {"a": 6, "b": 3}
    budget = decode_widths(probs, cands, full, 0.4, 1, "budget")
    assert budget == {"a": 8, "b": 4}  # 12 kept in the ratio 1.0 : 0.5
    flat = decode_widths(torch.full((2, 6), 1 / 6), cands, full, 0.4, 1, "budget")
    assert flat == {"a": 6, "b": 6}  # a search that learnt nothing gives uniform widths
    # ... also with mixed layer widths and multiples (candidates rounded differently per layer)
    model = tiny(scale=8, num_feat=16)
    mixed = layer_widths(model)
    assert len(set(mixed.values())) > 1
    layers = prunable_layers(model)
    cand = torch.tensor([candidate_widths(la.width, 0.3, 4) for la in layers])
    flat = torch.full((len(layers), len(V)), 1 / len(V))
    assert decode_widths(flat, cand, mixed, 0.3, 4, "budget") == uniform_widths(model, 0.3, 4)
    with pytest.raises(BlindSRError, match="budget or argmax"):
        decode_widths(probs, cands, full, 0.4, 1, "mode")


def test_search_alpha_lr_sets_how_far_the_architecture_weights_move():
    def spread(alpha_lr):
        result = search_widths(tiny(), 0.4, batches(seed=0), batches(seed=1), l1_objective(),
                               steps=3, multiple=1, alpha_lr=alpha_lr)
        return max(max(p) - min(p) for p in result.probs.values())

    slow, fast = spread(3e-4), spread(3e-2)
    assert fast > 10 * slow > 0


def test_search_leaves_the_dual_models_alone_and_needs_steps():
    from blindsr.compress.objective import make_duals

    duals = make_duals(4, num_feat=4)
    before = {k: v.clone() for k, v in duals.state_dict().items()}
    objective = DualObjective(duals, 0.1)
    search_widths(tiny(), 0.5, batches(seed=0), batches(seed=1), objective, steps=2, multiple=1)
    assert all(torch.equal(before[k], v) for k, v in duals.state_dict().items())
    with pytest.raises(BlindSRError, match="search steps must be >= 1"):
        search_widths(tiny(), 0.5, batches(), batches(), objective, steps=0)


def test_uniform_widths():
    widths = uniform_widths(tiny(num_block=1), 0.5, multiple=4)
    assert widths == {"up.0.blocks.0": 8, "up.0": 8, "up.1.blocks.0": 8, "up.1": 8}
    widths = uniform_widths(tiny(num_block=1), 0.3, multiple=4)  # 11.2 each: 44 of 64 kept
    assert sum(widths.values()) == 44 and set(widths.values()) == {8, 12}


# ---------------------------------------------------------------------------- DR channel pruning


def test_channel_scores_are_summed_kernel_norms():
    grad = torch.zeros(2, 3, 3, 3)
    grad[0, 1] = 1.0  # norm 3
    grad[1, 1, 0, 0] = 4.0  # norm 4
    grad[1, 2, 0, :2] = torch.tensor([3.0, 4.0])  # norm 5
    assert channel_scores(grad).tolist() == [0.0, 7.0, 5.0]


def test_capture_stops_at_the_wanted_layer(rand_image):
    model = tiny(num_block=1)
    seen = []
    model.tail[2].register_forward_hook(lambda *a: seen.append(1))
    out = capture(model, "up.0.reduce", rand_image(1, 3, 4, 4))
    assert out.shape == (1, 8, 8, 8) and seen == []


def test_dr_selection_picks_live_channels_and_keeps_the_function(rand_image):
    """Channels whose producer is dead (zero outputs) get zero gradient, so the greedy
    selection must pick the live ones; warm-started without tuning, the function is kept."""
    model = tiny(num_block=1)
    live = [3, 11]
    with torch.no_grad():
        conv1 = model.up[1].blocks[0].conv1
        dead = [c for c in range(16) if c not in live]
        conv1.weight[dead] = 0
        conv1.bias[dead] = -1.0  # relu(-1) = 0: dead channels
        conv1.weight[live] = 0
        conv1.bias[live] = 1.0  # constant, surely alive
    pruned, kept = dr_prune(model, {"up.1.blocks.0": 2}, batches(), l1_objective(),
                            gamma=1.0, tune_steps=0, refit="none")
    assert kept["up.1.blocks.0"] == live
    assert kept["up.0"] == list(range(16))  # layers without a target keep everything
    assert pruned.block_widths == [16, 2]
    x = rand_image(1, 3, 5, 5)
    with torch.no_grad():
        assert (pruned(x) - model(x)).abs().max() < 1e-5


def test_refit_recovers_weights_that_lost_nothing_and_cuts_the_feature_error():
    model = tiny(num_block=1)
    layer = next(la for la in prunable_layers(model) if la.name == "up.1.blocks.0")
    conv2 = model.up[1].blocks[0].conv2
    drop = list(range(8, 16))
    with torch.no_grad():
        conv2.weight[:, drop] = 0  # these inputs carry nothing: keeping the rest loses nothing
    work = copy.deepcopy(model)
    keep = torch.arange(8)
    with torch.no_grad():
        work.up[1].blocks[0].conv2.weight.normal_()  # a wrong start the refit must undo
        work.up[1].blocks[0].conv2.weight[:, drop] = 0
    data = batches(n=4, size=8)

    def feature_error(net, reference):
        x, _ = next(data)
        with torch.no_grad():
            return float((capture(net, layer.consumer, x)
                          - capture(reference, layer.consumer, x)).pow(2).mean())

    assert feature_error(work, model) > 1e-3
    dr.refit_consumer(work, model, layer, keep, data, n_batches=2, ridge=1e-10)
    assert feature_error(work, model) < 1e-8  # the consumer reproduces the original again

    fresh = tiny(num_block=1)  # now a real cut: channels 8..15 carry signal
    masked = copy.deepcopy(fresh)
    with torch.no_grad():
        masked.up[1].blocks[0].conv2.weight[:, drop] = 0
    refit = copy.deepcopy(masked)
    dr.refit_consumer(refit, fresh, layer, keep, data, n_batches=2)
    assert feature_error(refit, fresh) < 0.8 * feature_error(masked, fresh)
    with torch.no_grad():
        assert torch.equal(refit.up[1].blocks[0].conv2.weight[:, drop],
                           torch.zeros_like(conv2.weight[:, drop]))


def test_refit_of_a_pixel_shuffle_layer_and_its_hookup(monkeypatch):
    """The 1x1 reduction after the pixel shuffle is refit too; dr_prune with refit="last"
    refits every pruned layer once, with the channels it kept, and not at all with "none"."""
    model = tiny(num_block=1)
    layer = next(la for la in prunable_layers(model) if la.name == "up.1")
    reduce = model.get_submodule(layer.consumer)
    assert reduce.kernel_size == (1, 1)
    with torch.no_grad():
        reduce.weight[:, 5:] = 0
    work = copy.deepcopy(model)
    with torch.no_grad():
        work.get_submodule(layer.consumer).weight.mul_(3.0)
    dr.refit_consumer(work, model, layer, torch.arange(5), batches(n=4, size=8), 2, ridge=1e-10)
    x, _ = next(batches(n=2, size=8, seed=3))
    with torch.no_grad():
        assert torch.allclose(work(x), model(x), atol=1e-5)
    calls = []
    real = dr.refit_consumer
    monkeypatch.setattr(dr, "refit_consumer",
                        lambda w, o, la, keep, *a: calls.append((la.name, keep.tolist()))
                        or real(w, o, la, keep, *a))
    widths = {"up.0.blocks.0": 3, "up.1": 5}
    _, kept = dr_prune(model, widths, batches(), l1_objective(), per_round=8, refit="last")
    assert calls == [(name, kept[name]) for name in widths]
    calls.clear()
    dr_prune(model, widths, batches(), l1_objective(), per_round=8, refit="none")
    assert calls == []


def _duplicate_channels_model():
    """tiny(num_block=1) where, in up.1.blocks.0, channels 0 and 1 are the same strong feature
    (identical producer filters and consumer columns), channel 2 a weaker, different one, and
    every other channel dead."""
    model = tiny(num_block=1)
    block = model.up[1].blocks[0]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        block.conv1.weight.zero_()
        block.conv1.bias.fill_(-1.0)  # dead
        block.conv1.weight[0] = torch.randn(block.conv1.weight[0].shape, generator=g)
        block.conv1.weight[1] = block.conv1.weight[0]
        block.conv1.weight[2] = torch.randn(block.conv1.weight[2].shape, generator=g)
        block.conv1.bias[:3] = 0.5
        block.conv2.weight[:, 1] = block.conv2.weight[:, 0] = 3 * block.conv2.weight[:, 0]
        block.conv2.weight[:, 2] *= 0.2
    return model


@pytest.mark.parametrize("refit, copies", [("none", 2), ("last", 2), ("each", 1)])
def test_refitting_every_round_stops_the_selection_picking_duplicates(refit, copies):
    """With the selected channels solved by least squares after every round, the next gradient
    is that of what they leave unexplained, so a copy of a selected channel scores nothing and
    the other feature is picked (orthogonal matching pursuit); with the original weights the
    copy, whose contribution the residual still holds, is picked again."""
    model = _duplicate_channels_model()
    _, kept = dr_prune(model, {"up.1.blocks.0": 2}, batches(size=8), l1_objective(),
                       gamma=0.0, tune_steps=0, per_round=1, refit=refit)
    kept = set(kept["up.1.blocks.0"])
    assert len(kept & {0, 1}) == copies and (copies == 2 or 2 in kept)


def test_each_round_fits_the_selected_weights_and_the_bias(monkeypatch):
    """refit="each" builds one fit per pruned layer and uses it after every round (and for the
    bias before the first); the kept weights are its solution for the final selection."""
    model = _duplicate_channels_model()
    fits, solves = [], []
    real = dr.ConsumerFit

    class Spy(real):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            fits.append(self)

        def solve(self, keep, fit_bias=True):
            solves.append(sorted(torch.as_tensor(keep).tolist()))
            return super().solve(keep, fit_bias)

    monkeypatch.setattr(dr, "ConsumerFit", Spy)
    monkeypatch.setattr(dr, "refit_consumer", lambda *a: pytest.fail("no final refit in each"))
    pruned, kept = dr_prune(model, {"up.1.blocks.0": 2}, batches(size=8), l1_objective(),
                            gamma=0.0, tune_steps=0, per_round=1)
    assert len(fits) == 1
    k = sorted(kept["up.1.blocks.0"])
    assert len(solves) == 3 and solves[0] == [] and set(solves[1]) < set(k) and solves[2] == k
    weight, bias = fits[0].solve(torch.tensor(k))
    conv2 = pruned.up[1].blocks[0].conv2
    assert torch.allclose(conv2.weight, weight) and torch.allclose(conv2.bias, bias)


def test_newton_scores_rank_channels_by_the_exact_least_squares_gain():
    """For the feature loss alone, the Newton score of a channel is (up to one factor shared by
    all channels) what adding it to the selected set takes off the least-squares error."""
    model = tiny(num_block=1)
    layer = next(la for la in prunable_layers(model) if la.name == "up.1.blocks.0")
    data = batches(size=8)
    fit = dr.ConsumerFit(model, model, layer, data, 1, ridge=1e-10)
    x, _ = next(data)
    inputs = dr.consumer_input(model, layer.consumer, x).detach()
    target = dr.capture(model, layer.consumer, x).detach()
    conv = model.get_submodule(layer.consumer)
    selected = torch.zeros(16, dtype=torch.bool)
    selected[[2, 5, 11]] = True
    keep = selected.nonzero().flatten()
    weight, bias = fit.solve(keep)
    w = torch.zeros_like(conv.weight)
    w[:, keep] = weight
    w.requires_grad_(True)
    loss = nn.functional.mse_loss(nn.functional.conv2d(inputs, w, bias, padding=1), target)
    (grad,) = torch.autograd.grad(loss, [w])
    scores = fit.newton_scores(grad, selected)

    def gain(c):  # error with the selection minus error with c added, from the normal equations
        def explained(idx):
            taps = (idx[:, None] * 9 + torch.arange(9)).flatten()
            cols = torch.cat([taps, torch.tensor([fit.gram.shape[0] - 1])])
            g, r = fit.gram[cols][:, cols], fit.rhs[cols]
            return float((r * (torch.linalg.pinv(g, hermitian=True) @ r)).sum())
        return explained(torch.cat([keep, torch.tensor([c])])) - explained(keep)

    others = [c for c in range(16) if not selected[c]]
    gains = torch.tensor([gain(c) for c in others])
    live = gains > 1e-6 * gains.max()
    ratio = scores[others][live].double() / gains[live]
    assert live.sum() >= 3 and float(ratio.std() / ratio.mean()) < 1e-3
    assert int(scores[others].argmax()) == int(gains.argmax())


def test_dr_prune_reaches_the_widths_and_tunes():
    model = tiny(num_block=1)
    widths = {"up.0.blocks.0": 3, "up.0": 5, "up.1.blocks.0": 16, "up.1": 2}
    pruned, kept = dr_prune(model, widths, batches(), l1_objective(), tune_steps=2,
                            per_round=2, tune_lr=1e-2)
    assert layer_widths(pruned) == widths
    assert all(len(set(v)) == len(v) for v in kept.values())
    bias0 = model.up[0].blocks[0].conv2.bias
    assert not torch.equal(pruned.up[0].blocks[0].conv2.bias, bias0)  # the bias was tuned
    with pytest.raises(BlindSRError, match="cannot keep 17 of 16"):
        dr_prune(model, {**widths, "up.0": 17}, batches(), l1_objective())
    with pytest.raises(BlindSRError, match="this model does not have: up.9 "):
        dr_prune(model, {**widths, "up.9": 2}, batches(), l1_objective())


def _hand_selection_grad(original, masked, consumer, x, y, gamma, objective, target_net=None):
    """dL/dW' of Eq. 5 at W' = 0 for ``consumer``, computed on a copy of ``original`` whose
    consumers in ``masked`` keep only the given input channels: L = MSE(feature, feature of
    ``target_net`` (default: the original network)) + gamma * L_DR(outputs)."""
    net = copy.deepcopy(original)
    with torch.no_grad():
        for path, keep in masked.items():
            weight = net.get_submodule(path).weight
            drop = torch.ones(weight.shape[1], dtype=torch.bool)
            drop[keep] = False
            weight[:, drop] = 0
    feats = {}
    source = (target_net or original).get_submodule(consumer)
    handle = source.register_forward_hook(lambda m, a, out: feats.update(target=out.detach()))
    with torch.no_grad():
        (target_net or original)(x)
    handle.remove()
    conv = net.get_submodule(consumer)
    conv.weight = nn.Parameter(torch.zeros_like(conv.weight))
    handle = conv.register_forward_hook(lambda m, a, out: feats.update(feature=out))
    outputs = net.forward_all(x)
    handle.remove()
    loss = (feats["feature"] - feats["target"]).pow(2).mean() + gamma * objective.loss(
        outputs, x, y)
    return torch.autograd.grad(loss, [conv.weight])[0]


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_dr_selection_gradient_by_hand(gamma, monkeypatch):
    """The selection gradient is that of MSE(feature, ORIGINAL network's feature) + gamma L_DR,
    with the earlier layers already pruned in the network being pruned (Eq. 5)."""
    seen = []
    monkeypatch.setattr(dr, "channel_scores",
                        lambda grad: (seen.append(grad.clone()), channel_scores(grad))[1])
    model, objective = tiny(), l1_objective()
    x, y = next(batches())
    _, kept = dr_prune(model, {"up.0.blocks.0": 4, "up.0.blocks.1": 2}, batches(), objective,
                       gamma=gamma, tune_steps=0, per_round=4,  # one gradient per layer
                       refit="none")  # the hand gradient keeps the original weights
    assert len(seen) == 2

    def rel(a, b):
        return float((a - b).abs().max() / b.abs().max())

    first = _hand_selection_grad(model, {}, "up.0.blocks.0.conv2", x, y, gamma, objective)
    assert rel(seen[0], first) < 1e-5
    assert kept["up.0.blocks.0"] == sorted(channel_scores(first).topk(4).indices.tolist())
    masked = {"up.0.blocks.0.conv2": kept["up.0.blocks.0"]}
    args = (model, masked, "up.0.blocks.1.conv2", x, y)
    assert rel(seen[1], _hand_selection_grad(*args, gamma, objective)) < 1e-5
    # what a wrong target or a wrong gamma would give is far from it
    pruned_net = copy.deepcopy(model)
    with torch.no_grad():
        conv2 = pruned_net.up[0].blocks[0].conv2
        drop = [c for c in range(16) if c not in kept["up.0.blocks.0"]]
        conv2.weight[:, drop] = 0
    assert rel(seen[1], _hand_selection_grad(*args, gamma, objective, pruned_net)) > 1e-2
    assert rel(seen[1], _hand_selection_grad(*args, 1.0 - gamma / 4, objective)) > 1e-1


def test_dr_pruned_model_equals_the_masked_working_network(monkeypatch, rand_image):
    """After selection and tuning, the working network has zero weights on the unselected
    inputs of every pruned consumer, and physical removal keeps its function."""
    works = []

    def spy(net, keep):
        works.append(copy.deepcopy(net))
        return prune_channels(net, keep)

    monkeypatch.setattr(dr, "prune_channels", spy)
    model = tiny(num_block=1)
    widths = {"up.0.blocks.0": 3, "up.0": 5, "up.1": 2}
    pruned, kept = dr_prune(model, widths, batches(), l1_objective(), tune_steps=2,
                            per_round=2, tune_lr=1e-2)
    (work,) = works
    for layer in prunable_layers(work):
        weight = work.get_submodule(layer.consumer).weight
        dropped = [c for c in range(layer.width) if c not in kept[layer.name]]
        assert len(dropped) == layer.width - widths.get(layer.name, layer.width)
        assert weight[:, dropped].abs().sum() == 0
    x = rand_image(1, 3, 5, 6)
    with torch.no_grad():
        for a, b in zip(pruned.forward_all(x), work.forward_all(x), strict=True):
            assert (a - b).abs().max() < 1e-5
        assert (pruned(x) - model(x)).abs().max() > 1e-4  # tuned: not the original any more


# ------------------------------------------------------------------------------- L1 baseline


def test_l1_keeps_the_largest_filters():
    model = tiny(num_block=1)
    with torch.no_grad():
        conv1 = model.up[0].blocks[0].conv1
        conv1.weight.mul_(0.01)
        conv1.weight[[2, 7, 9, 13]] = 1.0
        upconv = model.up[1].upconv  # 4 filters per pixel-shuffle channel
        upconv.weight.mul_(0.01)
        upconv.weight[4 * 5:4 * 5 + 4] = 1.0
        upconv.weight[4 * 12 + 1] = 2.0  # one big filter in channel 12's group
    norms = filter_norms(model)
    assert norms["up.1"].shape == (16,)
    keep = l1_keep(model, {"up.0.blocks.0": 4, "up.0": 16, "up.1.blocks.0": 16, "up.1": 2})
    assert keep["up.0.blocks.0"] == [2, 7, 9, 13]
    assert keep["up.1"] == [5, 12]
    pruned, kept = l1_prune(model, 0.75, multiple=1)
    assert kept["up.0.blocks.0"] == [2, 7, 9, 13]
    assert layer_widths(pruned) == {"up.0.blocks.0": 4, "up.0": 4, "up.1.blocks.0": 4, "up.1": 4}


# ------------------------------------------------------------------------------ costs, data


def test_mac_counter():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_macs(conv, (10, 12)) == 10 * 12 * 8 * 3 * 9
    model = tiny(num_block=1)
    pruned = prune_channels(model, {"up.0.blocks.0": [0]})
    # one RCAB conv pair at the LR size loses 15 of 16 inner channels: 2 * 15 * 16 * 9 per pixel
    assert count_macs(model, (6, 6)) - count_macs(pruned, (6, 6)) == 36 * 2 * 15 * 16 * 9
    assert latency(pruned, (8, 8), repeats=2) > 0


def test_split_trainset_holds_out_every_kth_image(tmp_path):
    from blindsr.data import TrainSet, resolve_dataset

    for name, count in (("many", 12), ("one", 1)):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.fromarray(np.full((16, 16, 3), i * 10, np.uint8)).save(
                tmp_path / name / f"{i:02d}.png")
    sources = [(resolve_dataset(str(tmp_path / n), 4), 1.0) for n in ("many", "one")]
    dataset = TrainSet(sources, 16, 4, seed=3)
    train, val = split_trainset(dataset, 5)
    values = [[int(img[0, 0, 0]) // 10 for img in s.hr] for s in (*train.sources, *val.sources)]
    assert values == [[0, 1, 2, 3, 5, 6, 7, 8, 10, 11], [0], [4, 9], [0]]
    assert val.seed == 4 and train.seed == 3 and len(dataset.sources[0].hr) == 12
