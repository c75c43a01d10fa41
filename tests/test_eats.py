import copy
import io

import pytest
import torch
import torch.nn.functional as F
from conftest import load_benchmark
from torch import nn

from blindsr import archs
from blindsr.errors import BlindSRError
from blindsr.ops import imresize
from blindsr.strategies.eats import (
    EATS,
    Erasure,
    branched_forward,
    eligible_layers,
    full_forward,
    pick_layers,
    sample_erasure,
)


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        h = self.conv1(x)
        h.mul_(0.5)  # in place on a module output, which is used again after conv2
        return x + self.conv2(torch.relu(h)) + h


class Toy(nn.Module):
    """In-place ops on module outputs, a shared activation and a conv called twice."""

    def __init__(self, c: int = 5) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.Sequential(Block(c), Block(c))
        self.act = nn.LeakyReLU(0.2, inplace=True)
        self.shared = nn.Conv2d(c, c, 3, padding=1)
        self.tail = nn.Conv2d(c, 3, 3, padding=1)
        self.scale = 2

    def forward(self, x):
        f = self.blocks(self.act(self.head(x)))
        y = self.shared(f)
        y += f
        y = self.shared(self.act(y))
        return F.interpolate(self.tail(y), scale_factor=2) + F.interpolate(x, scale_factor=2)


def build(arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if arch == "toy":
        model = Toy()
    elif arch == "srresnet":
        model = archs.build("srresnet", num_feat=6, num_block=2, scale=2)
    elif arch == "amnet":
        model = archs.build("amnet", num_feat=6, num_block=2, predictor_feat=4, am_hidden=4,
                            scale=2)
    elif arch == "han-lite":
        if arch not in archs.ARCHS:
            pytest.skip("han-lite is not registered")
        model = archs.build(arch, num_feat=8, num_group=2, num_block=1, reduction=4, scale=2)
    else:
        model = archs.build("rrdbnet", num_feat=6, num_block=1, num_grow_ch=4, scale=2)
    with torch.no_grad():  # weights large enough that every channel matters
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


def reference(model: nn.Module, e: Erasure) -> nn.Module:
    """A deep copy with the erased filters overwritten by their disruptors (kernel and bias)."""
    ref = copy.deepcopy(model)
    conv = ref.get_submodule(e.layer)
    with torch.no_grad():
        conv.weight[list(e.erased)] = conv.weight[list(e.disruptors)]
        if conv.bias is not None:
            conv.bias[list(e.erased)] = conv.bias[list(e.disruptors)]
    return ref


def make(params=None, arch="srresnet", seed=0):
    g = build(arch, seed)
    return EATS(g, EATS.parse_params(params or {}), 2, torch.device("cpu"))


def batch(rand_image, n=2, has_hr=None):
    return {"lr": rand_image(n, h=8, w=8, seed=2), "hr": rand_image(n, h=16, w=16, seed=1),
            "has_hr": torch.tensor(has_hr or [True] * n), "has_lr": torch.ones(n, dtype=bool)}


@pytest.mark.parametrize("arch", ["srresnet", "rrdbnet", "han-lite", "toy"])
@pytest.mark.parametrize("filters", [1, 3])
def test_erased_network_equals_a_copy_with_the_channels_copied(rand_image, arch, filters):
    model = build(arch)
    x = rand_image(2, h=8, w=8)
    g = torch.Generator().manual_seed(0)
    layers = eligible_layers(model, x[:1], filters)
    changed = []
    for layer in layers:
        e = sample_erasure(model, [layer], filters, g)
        with torch.no_grad():
            want_plain, want = model(x), reference(model, e)(x)
            out, erased = branched_forward(model, x, e)
            out_full, erased_full = full_forward(model, x, e)
        assert (erased - want).abs().max() < 1e-6, layer
        assert (erased_full - want).abs().max() < 1e-6, layer
        assert torch.equal(out, want_plain) and torch.equal(out_full, want_plain)
        changed.append(bool((erased - out).abs().max() > 1e-3))
    # the erasure matters (except where e.g. a ReLU after a tiny squeeze conv zeroes both)
    assert sum(changed) >= 0.8 * len(changed)


def conv_calls(model: nn.Module, fn) -> list[str]:
    """Names of the convs that compute (not those whose call is replayed) while ``fn()`` runs."""
    names = {id(m): n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    calls: list[str] = []
    original = nn.Conv2d._conv_forward

    def counted(self, *args):
        calls.append(names[id(self)])
        return original(self, *args)

    nn.Conv2d._conv_forward = counted
    try:
        fn()
    finally:
        nn.Conv2d._conv_forward = original
    return calls


@pytest.mark.parametrize("arch", ["srresnet", "rrdbnet", "han-lite", "amnet", "toy"])
def test_the_erased_pass_runs_only_the_layers_from_the_erased_one_on(rand_image, arch):
    model = build(arch)
    x = rand_image(2, h=8, w=8)
    with torch.no_grad():
        plain = conv_calls(model, lambda: model(x))
        for layer in eligible_layers(model, x[:1]):
            e = Erasure(layer, (0,), (1,))
            calls = conv_calls(model, lambda e=e: branched_forward(model, x, e))
            after = plain[plain.index(layer) + 1:]  # pass 2 returns l's recorded output
            assert calls == plain + after, layer


def test_replay_and_full_give_the_same_gradients_through_both_passes(rand_image):
    model = build("toy")
    x = rand_image(2, h=8, w=8)
    target = rand_image(2, h=16, w=16, seed=3)
    for layer in ["head", "blocks.0.conv2", "blocks.1.conv1", "shared"]:
        e = Erasure(layer, (1,), (3,))
        grads = []
        for fn in (branched_forward, full_forward):
            model.zero_grad()
            out, erased = fn(model, x, e)
            ((out - target).abs().mean() + (erased - 0.5).abs().mean()).backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        for a, b in zip(*grads, strict=True):
            assert torch.allclose(a, b, atol=1e-6)


def test_erased_batch_runs_the_erased_network_on_the_first_samples_only(rand_image):
    model = build("toy")
    x = rand_image(3, h=8, w=8)
    target = rand_image(3, h=16, w=16, seed=3)
    for layer in ["head", "blocks.1.conv1", "shared"]:
        e = Erasure(layer, (1,), (3,))
        with torch.no_grad():
            want = reference(model, e)(x[:2])
        grads = []
        for fn in (branched_forward, full_forward):
            model.zero_grad()
            out, erased = fn(model, x, e, 2)
            assert out.shape[0] == 3 and erased.shape[0] == 2
            assert (erased - want).abs().max() < 1e-6, layer
            ((out - target).abs().mean() + (erased - 0.5).abs().mean()).backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        for a, b in zip(*grads, strict=True):
            assert torch.allclose(a, b, atol=1e-6)
    s = make({"erased_batch": 2})
    b = batch(rand_image, n=4, has_hr=[True, False, True, True])
    (u,) = list(s.training_step(b, 0))
    lr = b["lr"][[0, 2]]  # the first two samples that have an HR
    with torch.no_grad():
        l_er = (reference(s.generator, s.last)(lr) - imresize(lr, scale=2)).abs().mean()
    assert u.logs["l_erased"].item() == pytest.approx(l_er.item(), rel=1e-5)
    s = make({"erased_batch": 5})  # more than the batch: all of it
    b = batch(rand_image, n=3)
    (u,) = list(s.training_step(b, 0))
    with torch.no_grad():
        want = (reference(s.generator, s.last)(b["lr"]) - imresize(b["lr"], scale=2)).abs().mean()
    assert u.logs["l_erased"].item() == pytest.approx(want.item(), rel=1e-5)


class ScalarSide(nn.Module):
    """A frontier module that also returns a 0-dim tensor (not batch-first)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.g = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        return self.conv(x), self.g * 2


class WithScalar(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = ScalarSide()
        self.tail = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x):
        y, g = self.head(x)
        return self.tail(y) * g


def test_erased_batch_refuses_outputs_that_are_not_batch_first(rand_image):
    model = WithScalar()
    x = rand_image(3, h=8, w=8)
    e = Erasure("tail", (0,), (1,))
    with torch.no_grad():
        _, erased = branched_forward(model, x, e)  # the whole batch: any output is fine
        assert torch.allclose(erased, reference(model, e)(x), atol=1e-6)
        with pytest.raises(BlindSRError, match="erased_batch needs .* batch-first, got a tensor "
                                               r"of shape \(\)"):
            branched_forward(model, x, e, 2)


def test_gradients_reach_the_parameters_through_the_erased_term_alone(rand_image):
    model = build("srresnet")
    x = rand_image(2, h=8, w=8)
    e = Erasure("body.0.conv2", (2,), (4,))
    _, erased = branched_forward(model, x, e)
    erased.abs().mean().backward()
    conv = model.get_submodule(e.layer)
    assert model.conv_first.weight.grad.abs().sum() > 0  # before the erased layer
    assert model.conv_last.weight.grad.abs().sum() > 0  # after it
    assert conv.weight.grad[4].abs().sum() > 0 and conv.bias.grad[4] != 0  # the disruptor
    assert conv.weight.grad[2].abs().sum() == 0 and conv.bias.grad[2] == 0  # erased: unused


def test_step_changes_nothing_in_place_and_leaves_no_trace(rand_image):
    s = make({"filters": 2})
    b = batch(rand_image)
    before = {k: v.clone() for k, v in s.generator.state_dict().items()}
    (u,) = list(s.training_step(b, 0))
    for k, v in s.generator.state_dict().items():
        assert torch.equal(v, before[k]), k
    for m in s.generator.modules():
        assert "forward" not in m.__dict__
        assert not m._forward_hooks and not m._forward_pre_hooks
    u.loss.backward()
    assert all(p.grad is not None for p in s.generator.parameters())
    # the next forward is the plain network again
    with torch.no_grad():
        assert torch.equal(s.generator(b["lr"]), copy.deepcopy(s.generator)(b["lr"]))


def test_loss_is_l1_to_hr_plus_l1_of_the_erased_network_to_bicubic(rand_image):
    s = make({"erased_weight": 0.5})
    b = batch(rand_image, n=3, has_hr=[True, False, True])
    (u,) = list(s.training_step(b, 0))
    lr, hr = b["lr"][[0, 2]], b["hr"][[0, 2]]
    with torch.no_grad():
        l_hr = (s.generator(lr) - hr).abs().mean()
        l_er = (reference(s.generator, s.last)(lr) - imresize(lr, scale=2)).abs().mean()
    assert u.loss.item() == pytest.approx(l_hr.item() + 0.5 * l_er.item(), rel=1e-5)
    assert u.logs["l_l1"].item() == pytest.approx(l_hr.item(), rel=1e-5)
    assert u.logs["l_erased"].item() == pytest.approx(l_er.item(), rel=1e-5)
    assert u.optimizers == ("generator",)
    assert list(s.training_step(batch(rand_image, has_hr=[False, False]), 1)) == []


def test_weight_zero_is_plain_l1_without_the_erased_pass(rand_image):
    s = make({"erased_weight": 0})
    b = batch(rand_image)
    s.eligible(b["lr"])  # the one-off trace of the layers
    with torch.no_grad():
        plain = conv_calls(s.generator, lambda: s.generator(b["lr"]))
        updates = []
        calls = conv_calls(s.generator, lambda: updates.extend(s.training_step(b, 0)))
        want = (s.generator(b["lr"]) - b["hr"]).abs().mean()
    assert calls == plain
    assert updates[0].loss.item() == pytest.approx(want.item(), rel=1e-6)


def test_layers_and_filters_are_drawn_uniformly():
    model = build("srresnet")  # 6 features
    layers = ["conv_first", "body.0.conv1", "body.1.conv2"]
    g = torch.Generator().manual_seed(0)
    draws = [sample_erasure(model, layers, 1, g) for _ in range(3000)]
    per_layer = torch.tensor([sum(d.layer == n for d in draws) for n in layers])
    pairs = torch.zeros(6, 6)
    for d in draws:
        pairs[d.erased[0], d.disruptors[0]] += 1
    assert per_layer.sub(1000).abs().max() < 100  # about 4 standard deviations
    assert pairs.diagonal().sum() == 0  # k != j
    off = pairs[~torch.eye(6, dtype=bool)]
    assert off.sub(100).abs().max() < 45  # 30 (j, k) pairs of 100 expected draws each


def test_eligible_layers_and_layer_ratio(rand_image):
    model = build("srresnet")
    x = rand_image(1, h=8, w=8)
    all_layers = eligible_layers(model, x)
    assert all_layers == ["conv_first", "body.0.conv1", "body.0.conv2", "body.1.conv1",
                          "body.1.conv2", "upconv1", "conv_hr"]  # x2: no upconv2; no conv_last
    names = list("abcdefgh")
    assert pick_layers(names, 0.25, "shallow") == ["a", "b"]
    assert pick_layers(names, 0.25, "deep") == ["g", "h"]
    assert pick_layers(names, 0.5, "spread") == ["a", "c", "f", "h"]
    assert pick_layers(names, 0.01, "shallow") == ["a"] and pick_layers(names, 1.0, "deep") == names
    s = make({"layer_ratio": 0.3})
    b = batch(rand_image)
    seen = set()
    for step in range(30):
        list(s.training_step(b, step))
        seen.add(s.last.layer)
    assert seen == {"conv_first", "body.0.conv1", "body.0.conv2"}  # ceil(0.3 * 7) = 3


def test_filters_per_step(rand_image):
    s = make({"filters": 5})
    b = batch(rand_image)
    # 6-channel convs can take 5 erased filters (a disruptor must remain); conv_last cannot
    assert "conv_last" not in s.eligible(b["lr"]) and "conv_first" in s.eligible(b["lr"])
    for step in range(10):
        list(s.training_step(b, step))
        e = s.last
        assert len(e.erased) == len(set(e.erased)) == 5 and len(e.disruptors) == 5
        assert not set(e.disruptors) & set(e.erased)
    assert make({"filters": 6}).eligible(b["lr"]) == ["upconv1"]  # 24 channels, the rest 6
    with pytest.raises(BlindSRError, match="no conv layer .* at least 25 output channels"):
        list(make({"filters": 24}).training_step(b, 0))


def test_choices_are_deterministic_given_the_seed(rand_image):
    b = batch(rand_image)

    def draws(strategy, n=8):
        out = []
        for step in range(n):
            list(strategy.training_step(b, step))
            out.append(strategy.last)
        return out

    assert draws(make({"seed": 3})) == draws(make({"seed": 3}))
    assert draws(make({"seed": 3})) != draws(make({"seed": 4}))
    torch.manual_seed(3)  # the loop seeds torch with train.seed before building the strategy
    assert draws(make({"seed": None}, seed=3)) == draws(make({"seed": 3}))


def test_state_round_trip_resumes_the_same_choices(rand_image):
    b = batch(rand_image)
    a = make({"seed": 1})
    for step in range(3):
        list(a.training_step(b, step))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)  # tensors only: loadable with weights_only=True
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    resumed = make({"seed": 99})
    resumed.load_state_dict(state)
    for step in range(3, 6):
        list(a.training_step(b, step))
        list(resumed.training_step(b, step))
        assert a.last == resumed.last
    with pytest.raises(BlindSRError, match="lacks 'rng'"):
        resumed.load_state_dict({})


def test_changing_control_flow_is_reported(rand_image):
    class Flip(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
            self.c, self.out = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 3, 1)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return self.out(self.c((self.a if self.calls % 2 else self.b)(x)))

    with pytest.raises(BlindSRError, match="differ between two forward passes"):
        branched_forward(Flip(), rand_image(1, h=4, w=4), Erasure("c", (0,), (1,)))


def test_params_are_validated():
    assert EATS.parse_params({}).filters == 1 and EATS.parse_params({}).branch == "replay"
    with pytest.raises(BlindSRError, match="layer_ratio: must be > 0"):
        EATS.parse_params({"layer_ratio": 0})
    with pytest.raises(BlindSRError, match="filters: must be >= 1"):
        EATS.parse_params({"filters": 0})
    with pytest.raises(BlindSRError, match="allowed: filters, layer_ratio"):
        EATS.parse_params({"filter": 2})


def test_trains_in_the_loop_and_resumes_bit_identically(tmp_path):
    import json
    import shutil
    from pathlib import Path

    import numpy as np
    from PIL import Image
    from safetensors.torch import load_file

    from blindsr.config import load_config
    from blindsr.train import train

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((36, 40, 3)) * 255).astype(np.uint8)).save(data / f"{i}.png")
    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    cfg = load_config(tiny, [f"output_dir={json.dumps(str(tmp_path / 'runs'))}",
                             f"data.train=[{{path: {json.dumps(str(data))}}}]",
                             "strategy.name=eats", "strategy.params={filters: 2}",
                             "train.channels_last=true"])
    result = train(cfg, progress=False)
    ckpt = tmp_path / "runs" / "tiny" / "checkpoints"
    reference = load_file(str(ckpt / "step_0000004" / "weights.safetensors"))
    last = result.strategy.last
    rows = (tmp_path / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()
    assert all("train/l_erased" in json.loads(r) for r in rows)
    shutil.rmtree(ckpt / "step_0000004")
    resumed = train(cfg, progress=False)  # from step 2: the strategy's generator state too
    assert resumed.strategy.last == last
    again = load_file(str(ckpt / "step_0000004" / "weights.safetensors"))
    assert all(torch.equal(again[k], reference[k]) for k in reference)


def test_bicubic_gap_script_prices_the_collapse(shared, tmp_path, monkeypatch, capsys):
    """benchmarks/bicubic_gap.py: bicubic itself is 0 from bicubic (no threshold); a
    network gets a finite threshold = (bicubic's L1 - its L1) / its distance to bicubic."""
    import json

    from blindsr.checkpoint import save_model

    monkeypatch.setenv("BLINDSR_DATA", str(shared / "datasets"))
    script = load_benchmark("bicubic_gap")
    torch.manual_seed(0)
    net = save_model(archs.build("srresnet", num_feat=4, num_block=1, scale=4),
                     tmp_path / "net.safetensors")
    assert script.main(["--model", "bicubic", "--model", str(net), "--crops", "2",
                        "--patch", "32"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["models"]
    assert rows["bicubic"]["bicubic_cheaper_above_w"] is None
    assert rows["bicubic"]["l1_bicubic"] == 0.0
    r = rows[str(net)]
    expected = (rows["bicubic"]["l1_hr"] - r["l1_hr"]) / r["l1_bicubic"]
    assert r["l1_bicubic"] > 0 and r["bicubic_cheaper_above_w"] == pytest.approx(expected, abs=2e-2)


def test_overhead_script_times_every_case(monkeypatch, capsys):
    script = load_benchmark("eats_overhead")
    monkeypatch.setattr("sys.argv", ["eats_overhead", "--feat", "4", "--blocks", "1", "--batch",
                                     "4", "--patch", "32", "--erased-batch", "1"])
    script.main()
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| ") and "ms" not in r]
    assert [r.split(" | ")[0] for r in rows] == [
        "| plain", "| replay", "| replay, erased_batch 1", "| full", "| batched"]
    assert rows[0].split(" | ")[2] == "1.00x"
