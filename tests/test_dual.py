"""The `dual` strategy (DRN dual regression + unpaired adaptation): the loss against hand
computations, the ablations, the masks, both generator kinds and runs through the loop."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from blindsr import archs, degrade, io
from blindsr.config import load_config
from blindsr.errors import BlindSRError
from blindsr.ops import imresize
from blindsr.strategies import Update, get_strategy
from blindsr.strategies.dual import (
    Dual,
    DualModels,
    dual_regression_loss,
    generator_outputs,
)
from blindsr.train import train
from blindsr.train_state import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


class Pyramid(nn.Module):
    """A tiny stand-in for DRN: ``forward_all`` gives the 1x, 2x, ..., sx outputs."""

    def __init__(self, scale: int = 4, feat: int = 4) -> None:
        super().__init__()
        stages = scale.bit_length() - 1
        self.head = nn.Conv2d(3, feat, 3, padding=1)
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Conv2d(feat, 4 * feat, 3, padding=1), nn.PixelShuffle(2))
            for _ in range(stages))
        self.tails = nn.ModuleList(nn.Conv2d(feat, 3, 3, padding=1) for _ in range(stages + 1))

    def forward_all(self, x):
        f = self.head(x)
        outs = [self.tails[0](f) + x]
        for up, tail in zip(self.ups, self.tails[1:], strict=True):
            f = up(f)
            outs.append(tail(f) + F.interpolate(x, size=f.shape[-2:], mode="nearest"))
        return outs

    def forward(self, x):
        return self.forward_all(x)[-1]


def const(value, n=2, size=8):
    return torch.full((n, 3, size, size), float(value))


def make(generator=None, scale=4, **params):
    torch.manual_seed(0)
    g = generator if generator is not None else archs.build(
        "srresnet", num_feat=4, num_block=1, scale=scale)
    return Dual(g, Dual.parse_params({"dual_feat": 4, **params}), scale, torch.device("cpu"))


def batch(rand_image, has_hr=(True, True), scale=4, size=16):
    n = len(has_hr)
    return {"hr": rand_image(n, 3, size, size, seed=1),
            "lr": rand_image(n, 3, size // scale, size // scale, seed=2),
            "has_hr": torch.tensor(has_hr), "has_lr": torch.ones(n, dtype=torch.bool)}


# ------------------------------------------------------------------------------ dual models


@pytest.mark.parametrize(("scale", "stages"), [(2, 1), (4, 2), (8, 3)])
def test_dual_models_one_x2_block_per_stage_or_one_model(scale, stages):
    x = torch.rand(1, 3, 2 * scale, 2 * scale)
    per = DualModels(scale, num_feat=5)
    assert len(per) == stages
    first = per.blocks[0][0]
    assert (first.in_channels, first.out_channels, first.stride, first.bias) == (3, 5, (2, 2), None)
    assert per.blocks[0][1].negative_slope == 0.2 and per.blocks[0][-1].out_channels == 3
    outs = [torch.rand(1, 3, 2 * 2**k, 2 * 2**k) for k in range(stages + 1)]
    assert [tuple(p.shape[-2:]) for p in per(outs)] == [tuple(o.shape[-2:]) for o in outs[:-1]]
    single = DualModels(scale, num_feat=5, per_stage=False)
    assert len(single) == 1
    strides = [m.stride for m in single.blocks[0] if isinstance(m, nn.Conv2d)]
    assert strides == [(2, 2)] * stages + [(1, 1)]
    assert single([x])[0].shape == (1, 3, 2, 2)


def test_x3_uses_one_aligned_stride_3_conv_and_other_scales_fail():
    d = DualModels(3, num_feat=4)
    first = d.blocks[0][0]
    assert len(d) == 1 and (first.stride, first.padding) == ((3, 3), (0, 0))
    x = torch.zeros(1, 3, 9, 9)
    x[..., 3:6, 3:6] = 1.0  # exactly the HR pixels of LR pixel (1, 1)
    with torch.no_grad():
        feat = d.blocks[0][0](x)
    assert feat[..., 1, 1].abs().sum() > 0 and feat[..., 0, 0].abs().sum() == 0
    assert d([torch.rand(1, 3, 12, 9)])[0].shape == (1, 3, 4, 3)
    for bad in (5, 6, 1):
        with pytest.raises(BlindSRError, match="3 or a power of two"):
            DualModels(bad)
    with pytest.raises(BlindSRError, match="need 3 generator outputs"):
        DualModels(4)([torch.rand(1, 3, 8, 8), torch.rand(1, 3, 16, 16)])


def test_generator_outputs_uses_forward_all_when_present():
    x = torch.rand(1, 3, 4, 4)
    outs = generator_outputs(Pyramid(4), x)
    assert [o.shape[-1] for o in outs] == [4, 8, 16]
    srres = archs.build("srresnet", num_feat=4, num_block=1, scale=4)
    (out,) = generator_outputs(srres, x)
    assert out.shape == (1, 3, 16, 16)


# ------------------------------------------------------------------------------ the loss


def test_single_output_loss_by_hand():
    # primal |0.5 - 0.25| = 0.25; fixed dual: imresize(0.5) = 0.5 vs LR 0.2 -> 0.3
    total, logs = dual_regression_loss([const(0.5)], const(0.2, size=2), const(0.25), None,
                                       lam=0.1, fixed=True)
    assert float(logs["l_primal"]) == pytest.approx(0.25)
    assert float(logs["l_dual"]) == pytest.approx(0.3)
    assert float(total) == pytest.approx(0.25 + 0.1 * 0.3)


def test_multi_scale_loss_with_mask_by_hand():
    outs = [const(0.1, size=2), const(0.3, size=4), const(0.6, size=8)]
    lr, hr = const(0.2, size=2), const(0.5, size=8)
    total, logs = dual_regression_loss(outs, lr, hr, None, lam=0.1, fixed=True)
    # primal (1x target: the LR input, as DRN): |0.1-0.2| + |0.3-0.5| + |0.6-0.5|;
    # dual: |0.3-0.2| + |0.6-0.5| (targets: LR, HR/2)
    assert float(logs["l_primal"]) == pytest.approx(0.4)
    assert float(logs["l_dual"]) == pytest.approx(0.2)
    assert float(total) == pytest.approx(0.42)
    paired = torch.tensor([True, False])
    total, logs = dual_regression_loss(outs, lr, hr, None, lam=0.1, fixed=True, paired=paired)
    # primal: sample 0 only, divided by the batch (Algorithm 2): 0.4 / 2. Dual, sample 1 (no HR):
    # level 0 vs LR 0.1, level 1 vs its own 2x output 0.3 -> |0.6-0.3| = 0.3
    assert float(logs["l_primal"]) == pytest.approx(0.2)
    assert float(logs["l_dual"]) == pytest.approx(0.1 + (0.1 + 0.3) / 2)
    assert float(total) == pytest.approx(0.2 + 0.1 * 0.3)


def test_lam_zero_is_the_plain_multi_scale_l1(rand_image):
    hr = rand_image(2, 3, 16, 16, seed=3)
    outs = [rand_image(2, 3, s, s, seed=s) for s in (4, 8, 16)]
    lr = rand_image(2, 3, 4, 4)
    total, logs = dual_regression_loss(outs, lr, hr, None, lam=0.0)
    want = F.l1_loss(outs[0], lr) + F.l1_loss(outs[1], imresize(hr, 0.5)) + F.l1_loss(outs[2], hr)
    assert float(total) == pytest.approx(float(want), rel=1e-6)
    assert float(logs["l_dual"]) == 0.0
    (sr,) = outs[-1:]
    total, _ = dual_regression_loss([sr], rand_image(2, 3, 4, 4), hr, None, lam=0.0)
    assert float(total) == pytest.approx(float(F.l1_loss(sr, hr)), rel=1e-6)


def test_fixed_dual_is_matlab_bicubic(rand_image):
    sr, lr, hr = rand_image(2, 3, 16, 16, seed=1), rand_image(2, 3, 4, 4, seed=2), None
    _, logs = dual_regression_loss([sr], lr, hr, None, lam=0.1, fixed=True)
    assert float(logs["l_dual"]) == pytest.approx(float(F.l1_loss(imresize(sr, 0.25), lr)))
    outs = [rand_image(2, 3, s, s, seed=s) for s in (4, 8, 16)]
    _, logs = dual_regression_loss(outs, lr, hr, None, lam=0.1, fixed=True)
    want = F.l1_loss(imresize(outs[1], 0.5), lr) + F.l1_loss(imresize(outs[2], 0.5), outs[1])
    assert float(logs["l_dual"]) == pytest.approx(float(want), rel=1e-6)


def test_trained_duals_follow_drn_targets(rand_image):
    duals = DualModels(4, num_feat=4)
    outs = [rand_image(2, 3, s, s, seed=s) for s in (4, 8, 16)]
    lr, hr = rand_image(2, 3, 4, 4, seed=1), rand_image(2, 3, 16, 16, seed=2)
    _, logs = dual_regression_loss(outs, lr, hr, duals, lam=0.1)
    with torch.no_grad():
        want = (F.l1_loss(duals.blocks[0](outs[1]), lr)
                + F.l1_loss(duals.blocks[1](outs[2]), imresize(hr, 0.5)))
    assert float(logs["l_dual"]) == pytest.approx(float(want), rel=1e-6)


def test_primal_only_on_paired_dual_on_all(rand_image):
    duals = DualModels(4, num_feat=4, per_stage=False)
    sr = rand_image(2, 3, 16, 16, seed=1).requires_grad_(True)
    lr, hr = rand_image(2, 3, 4, 4, seed=2), rand_image(2, 3, 16, 16, seed=3)
    paired = torch.tensor([True, False])
    base, logs = dual_regression_loss([sr], lr, hr, duals, paired=paired)
    hr2, lr2 = hr.clone(), lr.clone()
    hr2[1] = 1 - hr2[1]  # the unpaired sample's (meaningless) HR never counts
    again, _ = dual_regression_loss([sr], lr, hr2, duals, paired=paired)
    assert float(again.detach()) == float(base.detach())
    lr2[1] = 1 - lr2[1]  # its LR does, through the dual loss
    _, logs2 = dual_regression_loss([sr], lr2, hr, duals, paired=paired)
    assert float(logs2["l_dual"]) != pytest.approx(float(logs["l_dual"]))
    assert float(logs2["l_primal"]) == float(logs["l_primal"])
    total, _ = dual_regression_loss([sr], lr, hr, None, lam=0.0, paired=paired)
    total.backward()
    assert sr.grad[0].abs().sum() > 0 and sr.grad[1].abs().sum() == 0
    with pytest.raises(BlindSRError, match="marked paired but no HR"):
        dual_regression_loss([sr], lr, None, duals, paired=torch.tensor([True, True]))
    with pytest.raises(BlindSRError, match="needs dual models or fixed"):
        dual_regression_loss([sr], lr, hr, None, lam=0.1)


# ------------------------------------------------------------------------------ the strategy


def test_registered_networks_and_optimiser():
    assert get_strategy("dual") is Dual
    s = make()
    assert set(s.networks()) == {"dual"} and not s.networks()["dual"].per_stage
    assert s.default_optim()["dual"] == {"type": "adam", "lr": 1e-4, "betas": [0.9, 0.999]}
    assert s.degrades_itself() is False
    for params in ({"fixed": True}, {"lam": 0.0}):
        s = make(**params)
        assert s.networks() == {} and s.default_optim() == {}
    p = Dual.parse_params({})
    assert (p.lam, p.fixed, p.dual_feat, p.unpaired_ratio) == (0.1, False, 16, None)
    with pytest.raises(BlindSRError, match="dual_init: given, but there are no dual models"):
        Dual.parse_params({"fixed": True, "dual_init": "runs/x"})
    with pytest.raises(BlindSRError, match="unpaired_ratio: must be < 1"):
        Dual.parse_params({"unpaired_ratio": 1.0})


@pytest.mark.parametrize("kind", ["pyramid", "srresnet"])
def test_one_joint_update_trains_generator_and_duals(rand_image, kind):
    s = make(Pyramid(4)) if kind == "pyramid" else make()
    assert s.duals.per_stage is (kind == "pyramid")
    assert len(s.duals) == (2 if kind == "pyramid" else 1)
    (u,) = list(s.training_step(batch(rand_image, (True, False)), 0))
    assert isinstance(u, Update) and u.optimizers == ("generator", "dual")
    assert {"l_primal", "l_dual", "l_total", "unpaired"} <= set(u.logs)
    assert float(u.logs["unpaired"]) == 0.5
    u.loss.backward()
    assert all(p.grad is not None for p in s.generator.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in s.duals.parameters())


@pytest.mark.parametrize("scale", [4, 8])
def test_drn_generator_gets_one_dual_block_per_stage(rand_image, scale):
    if "drn" not in archs.ARCHS:
        pytest.skip("the drn architecture is not registered")
    torch.manual_seed(0)
    g = archs.build("drn", scale=scale, num_block=1, num_feat=2)
    s = make(g, scale=scale)
    assert s.duals.per_stage and len(s.duals) == scale.bit_length() - 1
    (u,) = list(s.training_step(batch(rand_image, (True, False), scale, 2 * scale), 0))
    u.loss.backward()
    assert all(p.grad is not None for p in s.duals.parameters())


@pytest.mark.parametrize("kind", ["pyramid", "srresnet"])
def test_fixed_dual_term_alone_trains_the_generator_through_imresize(rand_image, kind):
    """``fixed: true`` on LR-only samples (no primal term): the generator's gradient is that of
    lam x L1(imresize(output), target), so it flows back through the bicubic downsampling."""
    s = make(Pyramid(4) if kind == "pyramid" else None, fixed=True, lam=0.5)
    b = batch(rand_image, (False, False))
    (u,) = list(s.training_step(b, 0))
    assert float(u.logs["l_primal"]) == 0 and u.optimizers == ("generator",)
    u.loss.backward()
    got = {n: p.grad.clone() for n, p in s.generator.named_parameters() if p.grad is not None}
    s.generator.zero_grad(set_to_none=True)
    outs, lr = generator_outputs(s.generator, b["lr"]), b["lr"]
    if kind == "pyramid":  # 2x -> LR, 4x -> its own (detached) 2x output
        hand = (F.l1_loss(imresize(outs[1], 0.5), lr)
                + F.l1_loss(imresize(outs[2], 0.5), outs[1].detach()))
    else:
        hand = F.l1_loss(imresize(outs[-1], 0.25), lr)
    (0.5 * hand).backward()
    want = {n: p.grad for n, p in s.generator.named_parameters() if p.grad is not None}
    assert set(got) == set(want)
    assert len(got) == len(list(s.generator.parameters())) - (2 if kind == "pyramid" else 0)
    for name, grad in want.items():  # (the pyramid's 1x tail has no dual term)
        assert grad.abs().sum() > 0 and torch.allclose(got[name], grad, rtol=1e-4, atol=1e-7)


def test_lr_only_batches(rand_image):
    assert list(make(lam=0.0).training_step(batch(rand_image, (False, False)), 0)) == []
    (u,) = list(make().training_step(batch(rand_image, (False, False)), 0))
    assert float(u.logs["l_primal"]) == 0.0 and float(u.logs["l_dual"]) > 0
    (u,) = list(make(fixed=True).training_step(batch(rand_image, (False, False)), 0))
    assert u.optimizers == ("generator",)


def test_unpaired_ratio_is_checked_against_the_data_weights_before_training():
    make(unpaired_ratio=0.3).check_data({"paired": 0.7, "lr": 0.3})
    make().check_data({"paired": 0.5, "lr": 0.5})  # no ratio given: any mix
    with pytest.raises(BlindSRError, match="unpaired_ratio: is 0.3, but the data.train weights "
                                           "give LR-only sources 0.500 of the samples"):
        make(unpaired_ratio=0.3).check_data({"paired": 0.5, "lr": 0.5})
    with pytest.raises(BlindSRError, match="give LR-only sources 0.000"):
        make(unpaired_ratio=0.3).check_data({"hr": 1.0})
    s = make()
    assert s.state_dict() == {}
    s.load_state_dict({"seen": 8, "unpaired": 2, "checked": False})  # an older checkpoint's
    with pytest.raises(BlindSRError, match="has no state to load"):
        s.load_state_dict({"rng": 1})


def test_a_wrong_unpaired_ratio_stops_before_the_first_iteration(tmp_path):
    cfg = tiny_config(tmp_path, "strategy.params.unpaired_ratio=0.9")
    with pytest.raises(BlindSRError, match="unpaired_ratio: is 0.9, but the data.train weights"):
        train(cfg, progress=False)
    assert not list((tmp_path).rglob("checkpoints"))


# ------------------------------------------------------------------------------ through the loop


def images(folder: Path, n: int = 2, size: int = 24, scale: int = 1) -> Path:
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(len(str(folder)))
    for i in range(n):
        small = torch.rand(1, 3, size // 4, size // 4, generator=g)
        img = F.interpolate(small, size=(size, size), mode="bilinear")
        if scale > 1:  # synthetic LR without its HR (DRN-Adapt's nearest setting)
            img = degrade.apply(img, "nearest", scale)
        io.write_image(folder / f"img{i}.png", io.ImageData(img.clamp(0, 1), None, 8))
    return folder


def tiny_config(tmp_path: Path, *extra: str):
    hr = images(tmp_path / "hr")
    lr = images(tmp_path / "lr_nearest", size=32, scale=4)
    data = [{"path": str(hr), "weight": 0.7}, {"path": f"lr:{lr}", "weight": 0.3}]
    return load_config(ROOT / "configs" / "tiny.yaml", [
        f"output_dir={json.dumps(str(tmp_path / 'runs'))}", f"data.train={json.dumps(data)}",
        "degradation.kind=preset", "degradation.preset=bicubic", "train.patch=16",
        "train.batch=4", "train.iterations=2", "train.checkpoint_every=1",
        "strategy.name=dual", 'strategy.params={"dual_feat": 4}', *extra])


def test_mixed_lr_only_data_trains_checkpoints_and_resumes(tmp_path):
    cfg = tiny_config(tmp_path, "train.channels_last=true")
    result = train(cfg, progress=False)
    assert set(result.networks) == {"generator", "dual"}
    rows = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("train/unpaired", 0) > 0 for r in rows)  # LR-only samples got through
    ckpts = result.run_dir / "checkpoints"
    first, _ = load_checkpoint(ckpts / "step_0000001")
    reference, state = load_checkpoint(ckpts / "step_0000002")
    assert any(not torch.equal(v, reference["dual"][k]) for k, v in first["dual"].items())
    shutil.rmtree(ckpts / "step_0000002")
    train(cfg, progress=False)  # resumes from step 1, dual models and their Adam included
    again, state2 = load_checkpoint(ckpts / "step_0000002")
    assert state2["strategy"] == state["strategy"]
    for net in reference:
        assert all(torch.equal(v, again[net][k]) for k, v in reference[net].items()), net
    s = make(dual_init=str(result.run_dir))  # DRN-Adapt: start D from a trained run
    assert all(torch.equal(v, reference["dual"][k]) for k, v in s.duals.state_dict().items())
    with pytest.raises(BlindSRError, match="dual_init: .* holds no training checkpoint"):
        make(dual_init=str(tmp_path))
    with pytest.raises(BlindSRError, match=r"dual weights do not fit \(wrong shape: .* vs "):
        make(dual_init=str(result.run_dir), dual_feat=8)  # the run's duals have 4 features


def test_a_resumed_run_needs_neither_its_dual_init_nor_its_model_init(tmp_path):
    source = train(tiny_config(tmp_path / "a"), progress=False).run_dir
    src = str(source)
    cfg = tiny_config(tmp_path / "b", f"model.init={json.dumps(src + '/model.safetensors')}",
                      f'strategy.params={{"dual_feat": 4, "dual_init": {json.dumps(src)}}}')
    run = train(cfg, progress=False).run_dir
    reference, _ = load_checkpoint(run / "checkpoints" / "step_0000002")
    shutil.rmtree(run / "checkpoints" / "step_0000002")
    shutil.rmtree(source)  # what the run started from is gone
    train(cfg, progress=False)  # resumes from step 1 all the same
    again, _ = load_checkpoint(run / "checkpoints" / "step_0000002")
    for net in reference:
        assert all(torch.equal(v, again[net][k]) for k, v in reference[net].items()), net


def test_dual_init_refuses_a_run_still_training(tmp_path):
    run = train(tiny_config(tmp_path), progress=False).run_dir
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("iterations: 2", "iterations: 9"))
    with pytest.raises(BlindSRError, match="dual_init: .* not finished .*step 2 of 9"):
        make(dual_init=str(run))
    make(dual_init=str(run / "checkpoints" / "step_0000002"))  # a named checkpoint is fine


def test_lam_0_refuses_lr_only_data(tmp_path):
    cfg = tiny_config(tmp_path, 'strategy.params={"dual_feat": 4, "lam": 0}')
    with pytest.raises(BlindSRError, match="LR-only images, which strategy dual cannot learn "
                                           "from with lam 0"):
        train(cfg, progress=False)


def test_drn_configs_parse(shared, generated_data, monkeypatch):
    monkeypatch.setenv("BLINDSR_DATA", str(shared / "datasets"))
    configs = {}
    for name in ("dual_srresnet", "nodual_srresnet", "fixed_srresnet", "adapt_realsr",
                 "adapt_nearest", "adapt_control"):
        cfg = load_config(ROOT / "configs" / "drn" / f"{name}.yaml", ["model.init=null"])
        params = Dual.parse_params(cfg.strategy.params)
        assert cfg.strategy.name == "dual" and cfg.model.scale == 4, name
        configs[name] = cfg
        if name.startswith("adapt_") and name != "adapt_control":
            lr_share = sum(s.weight for s in cfg.data.train if s.path.startswith("lr:"))
            total = sum(s.weight for s in cfg.data.train)
            assert lr_share / total == pytest.approx(params.unpaired_ratio)
    # the control differs from DRN-Adapt only in its data (no unpaired LR) and its name
    adapt, control = configs["adapt_realsr"], configs["adapt_control"]
    assert not any(s.path.startswith("lr:") for s in control.data.train)
    assert (adapt.train, adapt.optim, adapt.schedule, adapt.model) == (
        control.train, control.optim, control.schedule, control.model)
    nearest = configs["adapt_nearest"]
    assert (nearest.train, nearest.optim, nearest.model, nearest.strategy) == (
        adapt.train, adapt.optim, adapt.model, adapt.strategy)


def test_sample_grid_shows_an_all_lr_only_batch_with_a_black_hr_column(rand_image):
    from blindsr.train_logs import sample_grid

    model = archs.build("srresnet", num_feat=4, num_block=1, scale=4)
    b = batch(rand_image, (False, False))
    b["hr"] = torch.zeros_like(b["hr"])  # as the loader leaves LR-only samples
    grid = sample_grid(model, b, 4)
    assert grid.shape == (3, 32, 48)
    assert grid[..., 32:].abs().sum() == 0 and grid[..., 16:32].abs().sum() > 0


def test_the_no_dual_ablation_from_a_config_with_dual_settings(tmp_path):
    def paired_only(folder):  # lam 0 learns nothing from LR-only images
        return f"data.train=[{{path: {json.dumps(str(folder / 'hr'))}}}]"

    with pytest.raises(BlindSRError, match=r"optim.dual: no network of that name; networks: "
                                           r"generator \(optim.dual=null drops"):
        train(tiny_config(tmp_path / "a", 'strategy.params={"lam": 0}', paired_only(tmp_path / "a"),
                          "optim.dual={lr: 1.0e-4}"), progress=False)
    result = train(tiny_config(tmp_path / "b", "name=nodual", 'strategy.params={"lam": 0}',
                               paired_only(tmp_path / "b"), "optim.dual={lr: 1.0e-4}",
                               "optim.dual=null"), progress=False)
    assert set(result.networks) == {"generator"}
