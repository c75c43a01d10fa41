"""The `amrl` strategy: the frozen renderer, gradient isolation of the critic and actor updates,
the replay buffer, exploration, a toy problem RL must solve, runs through the training loop with
exact resume, and one-pass inference of an AMNet with its predictor."""

import json
import math
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import check_keeps_the_lr_it_made, make_code_matter, smooth_images
from torch import nn

import blindsr
from blindsr import archs
from blindsr.archs.amnet import KernelPredictor
from blindsr.checkpoint import load_model, read_checkpoint, save_model
from blindsr.config import load_config
from blindsr.degrade.kernel_code import KernelCoder, blur_downsample, coder_for
from blindsr.errors import BlindSRError
from blindsr.rewards import get_reward
from blindsr.strategies import Update, get_strategy
from blindsr.strategies.amgan_rl import (
    AMRL,
    ReplayBuffer,
    code_box,
    make_coder,
    mean_logs,
    noise_level,
)
from blindsr.train import train
from blindsr.train_state import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = {"num_feat": 4, "num_block": 1, "predictor_feat": 4, "am_hidden": 4}
CPU = torch.device("cpu")


def amnet(code_dim=1, seed=0, sigma_range=(0.2, 4.0), **kw):
    """A tiny AMNet with its code units recorded (as an amnet run leaves it); none for None."""
    torch.manual_seed(seed)
    model = archs.build("amnet", scale=4, code_dim=code_dim, **{**TINY, **kw})
    if sigma_range is not None:
        model.record_code_units(coder_for(code_dim, sigma_range))
    return model


def make(params=None, code_dim=1, **kw):
    base = {"reward": "psnr", "minibatch": 4, "warmup": 0}
    return AMRL(amnet(code_dim, **kw), AMRL.parse_params({**base, **(params or {})}), 4, CPU)


def batch(n=4, size=32, seed=1, has_hr=None):
    g = torch.Generator().manual_seed(seed)
    hr = torch.nn.functional.interpolate(torch.rand(n, 3, size // 4, size // 4, generator=g),
                                         size=(size, size), mode="bilinear")
    has = torch.tensor(has_hr) if has_hr is not None else torch.ones(n, dtype=torch.bool)
    return {"hr": hr, "lr": torch.zeros(n, 3, size // 4, size // 4), "has_hr": has,
            "has_lr": torch.zeros(n, dtype=torch.bool)}


def renderer_params(g):
    return {k: v for k, v in g.named_parameters() if not k.startswith("predictor.")}


def test_registered_with_a_critic_and_a_frozen_renderer():
    assert get_strategy("amrl") is AMRL
    s = make()
    assert s.degrades_itself() and set(s.networks()) == {"critic"}
    assert s.default_optim()["critic"]["type"] == "adam"
    assert all(p.requires_grad for p in s.generator.predictor.parameters())
    assert not any(p.requires_grad for p in renderer_params(s.generator).values())
    assert not any(p.requires_grad for p in s.critic.reference.parameters())
    assert make({"critic_reference": False, "baseline": "actor"}).critic.reference is None


def test_generators_without_a_predictor_are_refused():
    with pytest.raises(BlindSRError, match="must be an AMNet with a kernel predictor"):
        AMRL(amnet(predictor_feat=0), AMRL.parse_params({}), 4, CPU)
    with pytest.raises(BlindSRError, match="must be an AMNet"):
        AMRL(archs.build("srresnet", num_feat=4, num_block=1), AMRL.parse_params({}), 4, CPU)


def test_a_model_never_trained_by_amnet_is_refused():
    with pytest.raises(BlindSRError, match="strategy amrl: amnet: the model has no recorded "
                                           "kernel-code units.*set model.init"):
        make(sigma_range=None)


def test_params_are_validated():
    with pytest.raises(BlindSRError, match="strategy.params.reward: unknown reward 'ssim'"):
        AMRL.parse_params({"reward": "ssim"})
    with pytest.raises(BlindSRError, match="strategy.params.gamma: must be < 1"):
        AMRL.parse_params({"gamma": 1})
    with pytest.raises(BlindSRError, match="minibatch: 64 is larger than buffer_size 32"):
        AMRL.parse_params({"minibatch": 64, "buffer_size": 32})


def test_critic_gets_grads_only_from_its_update_and_the_actor_only_from_its_own():
    s = make()
    updates = s.training_step(batch(), 0)
    critic_update = next(updates)
    assert isinstance(critic_update, Update) and critic_update.optimizers == ("critic",)
    assert {"reward", "gain", "q", "l_critic", "code", "sigma_err", "noise"} <= \
        set(critic_update.logs)
    critic_update.loss.backward()
    trained = [p for p in s.critic.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trained)
    assert all(p.grad is None for p in s.critic.reference.parameters())  # frozen mu_0
    assert all(p.grad is None for p in s.generator.parameters())
    for p in s.critic.parameters():
        p.grad = None
    actor_update = next(updates)
    assert actor_update.optimizers == ("generator",) and "l_actor" in actor_update.logs
    actor_update.loss.backward()
    assert all(p.grad is not None for p in s.generator.predictor.parameters())
    assert all(p.grad is None for p in renderer_params(s.generator).values())
    assert all(p.grad is None for p in s.critic.parameters())
    assert next(updates, None) is None


def test_warmup_and_a_short_buffer_hold_updates_back():
    s = make({"warmup": 2, "minibatch": 6})
    assert list(s.training_step(batch(4), 0)) == []  # 4 transitions < minibatch 6
    assert [u.optimizers for u in s.training_step(batch(4), 1)] == [("critic",)]
    assert [u.optimizers for u in s.training_step(batch(4), 2)] == [("critic",), ("generator",)]
    assert len(s.buffer) == 12
    s2 = make({"updates": 3})
    assert len(list(s2.training_step(batch(), 0))) == 6


def test_samples_without_hr_are_left_out():
    s = make({"minibatch": 1})
    list(s.training_step(batch(3, has_hr=[True, False, True]), 0))
    assert len(s.buffer) == 2
    assert list(s.training_step(batch(2, has_hr=[False, False]), 1)) == []


def test_lr_only_samples_are_states_as_given_with_a_no_reference_reward():
    seen = []

    def sharpness(sr, hr, lr):  # no reference: records whether it got an HR
        seen.append(hr is None)
        return sr.diff(dim=-1).abs().mean(dim=(1, 2, 3))

    s = make({"minibatch": 1, "noise_start": 0.0, "noise_end": 0.0})
    s.reward = get_reward(sharpness)
    make_code_matter(s.generator)
    with torch.no_grad():  # the actor leaves the reference, so the gains are not all 0
        s.actor.head.bias.add_(0.5)
    b = batch(4, has_hr=[True, False, True, False])
    real = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(5)).mul(255).round() / 255
    b["lr"], b["has_lr"] = real, torch.tensor([False, True, False, True])
    list(s.training_step(b, 0))
    assert len(s.buffer) == 4 and seen == [False, True, False, True]  # HR part, LR-only part x2
    assert torch.equal(s.buffer.states[2:4], (real[[1, 3]] * 255).round().to(torch.uint8))
    with torch.no_grad():  # their stored gains were scored without HR
        lr = real[[1, 3]]
        gain = (sharpness(s.render(lr, s.project(s.actor(lr))), None, lr)
                - sharpness(s.render(lr, s.project(s.critic.reference(lr))), None, lr))
    assert gain.abs().max() > 1e-4
    torch.testing.assert_close(s.buffer.rewards[2:4], gain, atol=1e-5, rtol=0)
    assert len(s.sample_pair[0]) == 2  # image samples: the synthetic pairs
    only_real = {**b, "has_hr": torch.zeros(4, dtype=torch.bool),
                 "has_lr": torch.ones(4, dtype=torch.bool)}
    list(s.training_step(only_real, 1))
    assert len(s.buffer) == 8 and s.sample_pair is None  # no stale synthetic pair to show
    with pytest.raises(BlindSRError, match="reward 'psnr' needs HR, but the data has LR-only"):
        list(make().training_step(b, 0))


def test_buffer_wraps_around_and_round_trips():
    buf = ReplayBuffer(5)
    states = torch.arange(7, dtype=torch.float32).view(7, 1, 1, 1).expand(7, 3, 2, 2) / 255
    actions, rewards = torch.arange(7.0)[:, None], torch.arange(7.0) * 10
    buf.push(states[:3], actions[:3], rewards[:3])
    assert len(buf) == 3 and buf.pos == 3
    buf.push(states[3:7], actions[3:7], rewards[3:7])  # 6 and 7 overwrite 1 and 2
    assert len(buf) == 5 and buf.pos == 2
    assert buf.actions[:, 0].tolist() == [5, 6, 2, 3, 4]
    assert buf.states.dtype == torch.uint8 and buf.states[:, 0, 0, 0].tolist() == [5, 6, 2, 3, 4]
    buf.push(states, actions, rewards)  # more than the capacity at once: the newest 5 stay
    assert sorted(buf.rewards.tolist()) == [20, 30, 40, 50, 60] and buf.pos == 2
    again = ReplayBuffer(5)
    again.load_state_dict(buf.state_dict())
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for a, b in zip(buf.sample(8, g1, CPU), again.sample(8, g2, CPU), strict=True):
        assert torch.equal(a, b)
    s, _, _ = again.sample(2, g1, CPU)
    assert s.dtype == torch.float32 and s.max() <= 6 / 255 + 1e-7
    with pytest.raises(BlindSRError, match="states of shape"):
        buf.push(torch.zeros(1, 3, 4, 4), actions[:1], rewards[:1])
    with pytest.raises(BlindSRError, match="more than buffer_size"):
        ReplayBuffer(2).load_state_dict(buf.state_dict())


def test_states_are_stored_exactly_as_the_actor_saw_them():
    s = make()
    lr, _ = s.degrade(batch()["hr"])
    assert torch.equal(lr, (lr * 255).round() / 255)  # 8-bit levels
    s.buffer.push(lr, torch.zeros(4, 1), torch.zeros(4))
    assert torch.allclose(s.buffer.states[:4].float() / 255, lr, atol=1e-6)


@pytest.mark.parametrize("code_dim", [1, 10])
def test_exploration_stays_on_the_kernel_family_inside_the_code_box(code_dim):
    s = make({"noise_start": 5.0, "noise_end": 5.0}, code_dim)
    lo, hi = code_box(s.generator)
    torch.testing.assert_close(torch.stack([lo, hi]), s.coder.box())
    if code_dim == 1:
        assert lo.tolist() == [0.0] and hi.tolist() == [1.0]
    mu = (lo + hi).expand(64, -1) / 2  # off the family for PCA codes
    a = s.explore(mu, 0)
    assert torch.all(a >= lo) and torch.all(a <= hi) and not torch.equal(a, mu)
    sigma = s.coder.decode(a)
    assert bool(((sigma == 0.2) | (sigma == 4.0)).any())  # noise clamped to the sigma range
    # every action is the code of a Gaussian of the range (up to the box clip at the ends)
    torch.testing.assert_close(a, s.clip(s.coder.encode(sigma)), atol=2e-3 * float(
        (hi - lo).max()), rtol=0)
    small = make({"noise_start": 0.05, "noise_end": 0.05}, code_dim)
    mu = small.coder.encode(torch.full((256,), 2.0))
    spread = small.coder.decode(small.explore(mu, 0)) - 2.0
    assert float(spread.std()) == pytest.approx(0.05 * 3.8, rel=0.15)  # std in sigma
    updates = list(small.training_step(batch(), 0))  # a whole step with these codes
    assert len(updates) == 2 and all(torch.isfinite(u.loss) for u in updates)


def test_noise_decays_linearly():
    p = AMRL.parse_params({"noise_start": 0.3, "noise_end": 0.1, "noise_steps": 100})
    assert [round(noise_level(p, t), 6) for t in (0, 50, 100, 1000)] == [0.3, 0.2, 0.1, 0.1]


def test_coder_comes_from_the_model_and_params_only_check_it():
    assert make_coder(amnet(1)).kind == "sigma"
    coder = make_coder(amnet(10, sigma_range=(0.5, 3.0)))
    assert (coder.kind, coder.code_dim, coder.sigma_range) == ("pca", 10, (0.5, 3.0))
    assert make_coder(amnet(10), "pca", [0.2, 4.0]).kind == "pca"
    with pytest.raises(BlindSRError, match="code sigma asked for, but the model takes pca codes"):
        make_coder(amnet(10), "sigma")
    with pytest.raises(BlindSRError, match=r"sigma_range \[0.2, 4.0\] asked for, but the model "
                                           r"was trained on \[0.5, 3.0\]"):
        make_coder(amnet(1, sigma_range=(0.5, 3.0)), "auto", [0.2, 4.0])
    s = make(sigma_range=(0.5, 3.0))  # sigmas are drawn from the model's range
    _, sigma = s.degrade(batch(64, 16)["hr"])
    assert sigma.min() >= 0.5 and sigma.max() <= 3.0 and sigma.max() > 2.5


@pytest.mark.parametrize("baseline", ["reference", "actor"])
def test_baseline_stores_the_gain_over_the_baseline_action(baseline):
    quiet = {"noise_start": 0.0, "noise_end": 0.0}  # explored action = the actor's
    s = make({"baseline": baseline, **quiet})
    make_code_matter(s.generator)
    list(s.training_step(batch(), 0))  # at the start the actor is the reference
    assert torch.all(s.buffer.rewards[:4].abs() < 1e-5)
    with torch.no_grad():  # the actor moves away from the frozen initial predictor
        s.actor.head.bias.add_(1.0)
    list(s.training_step(batch(seed=2), 1))
    stored = s.buffer.rewards[4:8]
    if baseline == "actor":
        assert torch.all(stored.abs() < 1e-5)
    else:  # the gain of the actor's code over the supervised one, per state
        lr, hr = s.sample_pair  # the states and HR of that step
        with torch.no_grad():
            r_actor = s.score(s.render(lr, s.project(s.actor(lr))), hr, lr)
            r_ref = s.score(s.render(lr, s.project(s.critic.reference(lr))), hr, lr)
        assert stored.abs().max() > 1e-3
        torch.testing.assert_close(stored, r_actor - r_ref, atol=1e-4, rtol=0)


def test_raw_rewards_without_a_baseline_and_the_reference_needs_the_critics_copy():
    raw = make({"baseline": "none", "noise_start": 0.0, "noise_end": 0.0})
    list(raw.training_step(batch(), 0))
    assert torch.all(raw.buffer.rewards[:4] > 5)  # PSNR in dB
    with pytest.raises(BlindSRError, match="reference needs critic_reference: true"):
        AMRL.parse_params({"reward": "psnr", "critic_reference": False})
    AMRL.parse_params({"reward": "psnr", "critic_reference": False, "baseline": "actor"})


@pytest.mark.parametrize("code_dim", [1, 3])
def test_actor_sees_its_projection_straight_through_and_a_per_dimension_penalty(code_dim):
    s = make({"box_weight": 2.0}, code_dim=code_dim)
    lo, hi = code_box(s.generator)
    with torch.no_grad():  # push the predictor out of the box in every dimension
        if code_dim == 1:
            s.actor.head.bias.fill_(-30.0)  # sigmoid: inside, at the edge
        else:
            s.actor.head.bias.copy_(hi + 0.05 + torch.tensor([0.0, 0.1, 0.2]))
    s_lr, _ = s.degrade(batch()["hr"])
    seen = []
    s.critic.register_forward_pre_hook(lambda m, args: seen.append(args[1].detach().clone()))
    u = s.actor_update(s_lr)
    with torch.no_grad():
        mu = s.actor(s_lr).float()
    proj = torch.minimum(torch.maximum(s.coder.encode(s.coder.decode(mu)), lo), hi)
    torch.testing.assert_close(s.project(mu), proj, atol=1e-6, rtol=0)
    torch.testing.assert_close(seen[-1], proj, atol=1e-6, rtol=0)  # on the family, in the box
    width = torch.maximum(hi - lo, 1e-3 * (hi - lo).max())
    with torch.no_grad():
        q = s.critic(s_lr, proj)
    off = ((mu - proj) / width).square().sum(dim=1).mean()
    assert float(u.loss.detach()) == pytest.approx(float(-q.mean() + 2.0 * off), rel=1e-5)
    assert float(u.logs["off_family"]) == pytest.approx(float(off), rel=1e-5)
    if code_dim == 3:
        assert (mu - proj).abs().min() > 0.04 and float(off) > 1
    u.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in s.actor.parameters())


def test_the_anchor_pulls_the_actor_toward_the_supervised_code():
    plain, anchored = make(), make({"anchor_weight": 3.0})
    s_lr, _ = anchored.degrade(batch()["hr"])
    with torch.no_grad():  # move the actor off the supervised code (the critic's reference)
        anchored.actor.head.bias.add_(1.0)
        plain.actor.head.bias.add_(1.0)
    anchored.critic.load_state_dict(plain.critic.state_dict())
    u, base = anchored.actor_update(s_lr), plain.actor_update(s_lr)
    with torch.no_grad():
        mu = anchored.actor(s_lr).float()
        ref = anchored.project(anchored.critic.reference(s_lr).float())
    width = anchored.hi - anchored.lo
    anchor = ((mu - ref) / width).square().sum(dim=1).mean()
    assert float(anchor) > 1e-3 and float(u.logs["anchor"]) == pytest.approx(float(anchor))
    assert float(u.loss.detach()) == pytest.approx(float(base.loss.detach()) + 3.0 * float(anchor),
                                                   rel=1e-5)
    assert "anchor" not in base.logs
    u.loss.backward()  # its gradient moves mu back toward ref
    base.loss.backward()
    extra = anchored.actor.head.bias.grad - plain.actor.head.bias.grad
    assert torch.all(extra * torch.sign((mu - ref).mean()) > 0)
    with pytest.raises(BlindSRError, match="anchor_weight: needs critic_reference"):
        AMRL.parse_params({"reward": "psnr", "critic_reference": False, "baseline": "actor",
                           "anchor_weight": 1.0})


def test_rendering_and_rewards_ignore_the_loops_autocast():
    s = make()
    b = batch()
    state = s.state_dict()
    lr, _ = s.degrade(b["hr"])
    code = torch.full((4, 1), 0.3)
    sr = s.render(lr, code)
    r = s.score(sr, b["hr"][..., :32, :32], lr)
    s.load_state_dict(state)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lr2, _ = s.degrade(b["hr"])
        sr2 = s.render(lr2, code)
        r2 = s.score(sr2, b["hr"][..., :32, :32], lr2)
        assert s.generator.conv_in(lr2).dtype == torch.bfloat16  # autocast is really on
    assert torch.equal(lr, lr2) and sr2.dtype == torch.float32
    assert torch.equal(sr, sr2) and torch.equal(r, r2)


def test_targets_do_not_move_when_the_loop_skips_the_update():
    s = make({"gamma": 0.5, "tau": 0.5})
    before = {k: v.clone() for k, v in s.target_critic.state_dict().items()}
    before_actor = {k: v.clone() for k, v in s.target_actor.state_dict().items()}
    with torch.no_grad():
        s.critic.head[-1].bias.fill_(float("nan"))  # every critic (and actor) loss is NaN
    updates = list(s.training_step(batch(), 0))  # the loop would skip both
    assert len(updates) == 2 and not any(torch.isfinite(u.loss) for u in updates)
    after = s.target_critic.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(v, s.target_actor.state_dict()[k]) for k, v in before_actor.items())


def test_logs_of_iterations_without_updates_go_out_with_the_first_update():
    s = make({"minibatch": 10})
    assert list(s.training_step(batch(4), 0)) == [] == list(s.training_step(batch(4), 1))
    assert len(s.held) == 2
    logs = next(s.training_step(batch(4), 2)).logs
    assert logs["buffer"] == pytest.approx((4 + 8 + 12) / 3) and "reward" in logs
    assert s.held == []
    assert mean_logs([{"a": 1.0, "b": torch.tensor(2.0)}, {"a": 3.0}]) == {"a": 2.0, "b": 2.0}


def test_non_finite_rewards_are_dropped(monkeypatch):
    mod = types.ModuleType("amrl_nan_reward")
    mod.reward = lambda sr, hr, lr: torch.tensor([float("nan"), 1.0, 2.0, 3.0])
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    s = make({"reward": "amrl_nan_reward:reward", "baseline": "none", "minibatch": 1})
    logs = next(s.training_step(batch(), 0)).logs
    assert len(s.buffer) == 3 and logs["dropped"] == 1.0
    assert float(logs["reward"]) == pytest.approx(2.0)
    assert s.idle_reason() is None  # the buffer fills a minibatch


def test_an_idle_strategy_says_why():
    s = make({"minibatch": 10})
    assert list(s.training_step(batch(4), 0)) == []
    assert s.idle_reason() == ("the replay buffer holds 4 transition(s), fewer than "
                               "strategy.params.minibatch=10")
    s.dropped = 3
    assert s.idle_reason().endswith("; 3 non-finite reward(s) were dropped (reward psnr)")


def test_target_networks_with_gamma_are_state_and_soft_updated():
    s = make({"gamma": 0.5, "tau": 0.5})
    before = {k: v.clone() for k, v in s.target_critic.state_dict().items()}
    for u in s.training_step(batch(), 0):
        u.loss.backward()
        with torch.no_grad():
            for p in [*s.critic.parameters(), *s.actor.parameters()]:
                if p.grad is not None:
                    p -= 0.1 * p.grad.sign()
                    p.grad = None
    after = s.target_critic.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in s.target_critic.parameters())
    state = s.state_dict()
    assert set(state) == {"rng", "buffer", "target_critic", "target_actor"}
    other = make({"gamma": 0.5})
    other.load_state_dict(state)
    assert all(torch.equal(v, other.target_critic.state_dict()[k]) for k, v in after.items())
    with pytest.raises(BlindSRError, match="was gamma changed"):
        make().load_state_dict(state)


class CodeStub(nn.Module):
    """A renderer whose output is the code itself: the reward is a known function of the code."""

    code_dim = 1

    def __init__(self):
        super().__init__()
        self.predictor = KernelPredictor(1, 4)
        self.register_buffer("sigma_range", torch.tensor([0.2, 4.0]))
        self.register_buffer("code_box", torch.tensor([[0.0], [1.0]]))

    def render(self, lr, code):
        return code[:, :, None, None].expand(-1, 3, lr.shape[-2] * 4, lr.shape[-1] * 4)


def test_rl_moves_the_actor_to_the_optimum_of_a_toy_reward(monkeypatch):
    mod = types.ModuleType("amrl_toy_reward")
    mod.reward = lambda sr, hr, lr: -(sr.mean(dim=(1, 2, 3)) - 0.7) ** 2
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    torch.manual_seed(0)
    s = AMRL(CodeStub(), AMRL.parse_params({
        "reward": "amrl_toy_reward:reward", "minibatch": 32, "warmup": 5, "reward_scale": 10,
        "noise_start": 0.3, "noise_end": 0.3, "critic_feat": 4, "critic_hidden": 32}), 4, CPU)
    # the critic learns faster than the actor moves (two time scales), as DDPG needs
    opt = {"generator": torch.optim.Adam(s.actor.parameters(), 1e-3),
           "critic": torch.optim.Adam(s.critic.parameters(), 1e-2)}
    b = batch(8, 16)
    lr, _ = s.degrade(b["hr"])

    def code():
        with torch.no_grad():
            return float(s.actor(lr).mean())

    start = code()
    for step in range(150):
        for u in s.training_step(b, step):
            for n in u.optimizers:
                opt[n].zero_grad(set_to_none=True)
            u.loss.backward()
            for n in u.optimizers:
                opt[n].step()
    assert abs(start - 0.7) > 0.25
    assert abs(code() - 0.7) < 0.08


# -- through the training loop ---------------------------------------------------------------



def loop_config(tmp_path, init: Path, params: dict, iterations: int = 4):
    data = smooth_images(tmp_path / "data")
    kwargs = {**TINY, "code_dim": 1}
    return load_config(ROOT / "configs" / "tiny.yaml", [
        f"output_dir={json.dumps(str(tmp_path / 'runs'))}",
        f"data.train=[{{path: {json.dumps(str(data))}}}]", "degradation.kind=none",
        "model.arch=amnet", f"model.kwargs={json.dumps(kwargs)}",
        f"model.init={json.dumps(str(init))}",
        f"train.iterations={iterations}", "train.checkpoint_every=2",
        "strategy.name=amrl", f"strategy.params={json.dumps(params)}"])


def test_trains_through_the_loop_and_resumes_buffer_and_critic_exactly(tmp_path):
    init = save_model(amnet(1, seed=3), tmp_path / "amnet.safetensors")
    start, _ = read_checkpoint(init)
    params = {"reward": "psnr", "minibatch": 2, "warmup": 1, "gamma": 0.5, "buffer_size": 5}
    cfg = loop_config(tmp_path, init, params)
    result = train(cfg, progress=False)
    assert set(result.networks) == {"generator", "critic"}
    final, ema = result.generator.state_dict(), result.ema.state_dict()
    for k, v in start.items():  # the renderer is bit-identical (EMA too), the actor moved
        if k.startswith("predictor."):
            continue
        assert torch.equal(v, final[k]) and torch.equal(v, ema[k]), k
    assert any(not torch.equal(start[k], final[k]) for k in start if k.startswith("predictor."))
    last = tmp_path / "runs" / "tiny" / "checkpoints" / "step_0000004"
    reference, state = load_checkpoint(last)
    assert state["strategy"]["buffer"]["filled"] == 5  # 4 iterations x batch 2, wrapped
    assert "critic" in reference and set(state["strategy"]["target_critic"])
    for k, v in start.items():  # the baseline's reference, saved with the critic, is the initial
        if k.startswith("predictor."):  # predictor, while the actor moved
            assert torch.equal(v, reference["critic"]["reference." + k[len("predictor."):]]), k
    shutil.rmtree(last)
    init.unlink()  # a resumed run takes the code units from its own checkpoint
    train(cfg, progress=False)  # resumes from step 2
    again, state2 = load_checkpoint(last)
    for net in reference:
        assert all(torch.equal(v, again[net][k]) for k, v in reference[net].items()), net
    buf, buf2 = state["strategy"]["buffer"], state2["strategy"]["buffer"]
    assert buf["pos"] == buf2["pos"]
    for k in ("states", "actions", "rewards"):
        assert torch.equal(buf[k], buf2[k]), k
    rows = [json.loads(x) for x in (last.parents[1] / "metrics.jsonl").read_text().splitlines()]
    assert any("train/l_actor" in r and "train/reward" in r for r in rows)


def test_an_amnet_with_a_predictor_upscales_in_one_pass(tmp_path):
    model = amnet(1, seed=5).eval()
    path = save_model(model, tmp_path / "amnet_rl.safetensors")
    g = np.random.default_rng(0)
    image = (g.random((12, 10, 3)) * 255).astype(np.uint8)
    sr = blindsr.upscale(image, model=str(path), tile=64, device="cpu")
    assert sr.shape == (48, 40, 3) and sr.dtype == np.uint8
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        want = model(x, model.predictor(x)).clamp(0, 1)
    want = (want[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.abs(sr.astype(int) - want.astype(int)).max() <= 1


def eval_script(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("amgan_eval",
                                                  ROOT / "benchmarks" / "amgan_eval.py")
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "amgan_eval", script)
    spec.loader.exec_module(script)
    return script


@pytest.mark.parametrize("code_dim", [1, 3])
def test_the_evaluations_true_code_is_the_models_own_coder(monkeypatch, code_dim):
    script = eval_script(monkeypatch)
    model = make_code_matter(amnet(code_dim, sigma_range=(0.5, 3.0))).eval()
    lr = batch(1, 32)["hr"][..., ::4, ::4]
    rows = {v.code: v for v in script.variants({"amnet": model})}
    got = script.run(rows["true"], lr, 1.3)
    with torch.no_grad():
        want = model.render(lr, KernelCoder(model.kernel_coder().kind, code_dim,
                                            (0.5, 3.0)).encode(1.3)).clamp(0, 1)
        ikc = model.render(lr, coder_for(code_dim).encode(1.3)).clamp(0, 1)  # the old guess
    torch.testing.assert_close(got, want)
    assert (got - ikc).abs().max() > 1e-3
    with pytest.raises(BlindSRError, match=r"--sigmas 3.6: outside the sigma range \[0.5, 3.0\]"):
        script.check_units({"amnet": model}, [1.3, 3.6])
    script.check_units({"amnet-rl": model}, [3.6])  # no true-code row for RL models
    with pytest.raises(BlindSRError, match="--amgan: amnet: the model has no recorded"):
        script.check_units({"amgan": amnet(code_dim, sigma_range=None)}, [1.3])


def test_the_evaluation_script_runs_on_tiny_models(tmp_path, monkeypatch):
    script = eval_script(monkeypatch)
    paths = {}
    for i, name in enumerate(script.MODELS):
        paths[name] = save_model(amnet(1, seed=i), tmp_path / f"{name}.safetensors")
    sets = smooth_images(tmp_path / "set", n=1, size=96)
    real = smooth_images(tmp_path / "real", n=1, size=24)
    out = tmp_path / "out" / "amgan_eval"
    args = [f"--{n}={p}" for n, p in paths.items()]
    assert script.main([*args, "--sets", str(sets), "--sigmas", "0.2", "2.6", "--real",
                        str(real), "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    models = {r["model"] for r in result["synthetic"]}
    assert models == {"bicubic", "amnet (true code)", "amnet (predictor)", "amnet-rl",
                      "amgan (true code)", "amgan (predictor)", "amgan-rl"}
    assert len(result["synthetic"]) == 2 * 7
    row = next(r for r in result["synthetic"] if r["model"] == "amnet-rl" and r["sigma"] == 0.2)
    assert {"psnr", "ssim", "lpips", "reward/psnr", "reward/neg_niqe"} <= set(row)
    assert row["reward/psnr"] == pytest.approx(row["psnr"])  # the reward is the PSNR-Y
    rl = {(r["rl_model"], r["reward"]) for r in result["rl"]}
    assert rl == {("amnet-rl", "psnr"), ("amgan-rl", "neg_niqe")} and len(result["rl"]) == 4
    assert {r["model"] for r in result["real"]} == {"bicubic", "amnet (predictor)", "amnet-rl",
                                                   "amgan (predictor)", "amgan-rl"}
    assert all(math.isfinite(r["niqe"]) for r in result["real"])
    text = out.with_suffix(".md").read_text()
    assert "RL against its supervised predictor" in text and "NIQE on real" in text


def test_the_crop_protocol_scores_uniform_sigmas_on_held_out_crops(tmp_path, monkeypatch):
    script = eval_script(monkeypatch)
    paths = {n: save_model(amnet(1, seed=i, sigma_range=(0.5, 3.0)), tmp_path / f"{n}.safetensors")
             for i, n in enumerate(("amnet", "amnet-rl"))}
    sets = smooth_images(tmp_path / "set", n=2, size=48)
    out = tmp_path / "eval"
    assert script.main([f"--amnet={paths['amnet']}", f"--amnet-rl={paths['amnet-rl']}",
                        "--sets", str(sets), "--sigmas", "1.3", "--real", "", "--crops", "3",
                        "--crop-patch", "32", "--seed", "5", "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    crops = {r["model"]: r for r in result["crops"]}
    assert set(crops) == {"amnet (true code)", "amnet (predictor)", "amnet-rl"}
    assert all(r["images"] == 6 and r["source_images"] == 2 and r["sigma"] == "uniform"
               for r in crops.values())
    # the same crops and sigmas by hand: the RL model's mean PSNR-Y with its own predictor
    hr = script.random_crops([x for _, x in script.load_images(str(sets), None, "hr")], 3, 32, 5)
    g = torch.Generator().manual_seed(6)  # the sigmas' own stream: seed + 1
    sigma = (0.5 + 2.5 * torch.rand(6, generator=g, dtype=torch.float64)).float()
    lr = blur_downsample(hr, sigma, 4, quantize=True)
    rl = load_model(paths["amnet-rl"]).eval()
    with torch.no_grad():
        want = get_reward("psnr")(rl(lr).clamp(0, 1), hr, lr).double().mean()
    assert crops["amnet-rl"]["reward/psnr"] == pytest.approx(float(want), abs=1e-6)
    gains = [r for r in result["rl"] if r["sigma"] == "uniform"]
    assert len(gains) == 1 and gains[0]["gain"] == pytest.approx(
        crops["amnet-rl"]["reward/psnr"] - crops["amnet (predictor)"]["reward/psnr"])
    assert "Held-out crops: 3 random 32-pixel crops" in out.with_suffix(".md").read_text()
    with pytest.raises(BlindSRError, match="--crops scores the rewards of RL models"):
        script.main([f"--amnet={paths['amnet']}", "--sets", str(sets), "--sigmas", "1.3",
                     "--real", "", "--crops", "3", "--out", str(out)])
    with pytest.raises(BlindSRError, match="--crop-patch a positive multiple of 4, got 3 and 30"):
        script.main([f"--amnet-rl={paths['amnet-rl']}", "--sets", str(sets), "--sigmas", "1.3",
                     "--real", "", "--crops", "3", "--crop-patch", "30", "--out", str(out)])
    other = save_model(amnet(1, sigma_range=(0.2, 4.0)), tmp_path / "other.safetensors")
    with pytest.raises(BlindSRError, match="different sigma ranges"):
        script.main([f"--amnet={other}", f"--amnet-rl={paths['amnet-rl']}", "--sets", str(sets),
                     "--sigmas", "1.3", "--real", "", "--crops", "3", "--out", str(out)])


@pytest.mark.parametrize(("config", "reward", "start"), [
    ("amnet_rl_psnr", "psnr", "amnet-x4"), ("amnet_rl_psnr_p256", "psnr", "amnet-x4"),
    ("amgan_rl_niqe", "neg_niqe", "amgan-x4"), ("amgan_rl_niqe_real", "neg_niqe", "amgan-x4")])
def test_shipped_configs_load_and_run_an_iteration(tmp_path, monkeypatch, config, reward, start):
    path = ROOT / "configs" / "amgan" / f"{config}.yaml"
    import yaml

    raw = yaml.safe_load(path.read_text())
    assert raw["model"]["init"] == start  # a shipped renderer: no run folder needed
    kwargs = raw["model"]["kwargs"]
    model = archs.build("amnet", scale=4, **kwargs)
    model.record_code_units(coder_for(kwargs["code_dim"], (0.2, 4.0)))  # as amnet_cpu leaves it
    init = save_model(model, tmp_path / "init.safetensors")
    data = json.dumps(str(smooth_images(tmp_path / "data", n=1, size=96)))
    sources = [f"{{path: {data}}}"]
    if any(str(d["path"]).startswith("lr:") for d in raw["data"]["train"]):  # real LR states
        sources.append(f"{{path: {json.dumps('lr:' + json.loads(data))}, weight: 10}}")
    cfg = load_config(path, [
        f"output_dir={json.dumps(str(tmp_path / 'runs'))}", f"model.init={json.dumps(str(init))}",
        f"data.train=[{', '.join(sources)}]", "train.iterations=1", "train.batch=2",
        "val.every=0", "logging.tensorboard=false", "train.device=cpu"])
    assert cfg.strategy.name == "amrl" and cfg.strategy.params["reward"] == reward
    assert cfg.train.patch >= 96  # NIQE's minimum SR size
    seen = []
    collect = AMRL.collect
    monkeypatch.setattr(AMRL, "collect",
                        lambda self, hr, real, step: seen.append(real is not None)
                        or collect(self, hr, real, step))
    result = train(cfg, progress=False)
    assert len(result.strategy.buffer) == 2
    assert seen == [len(sources) > 1]  # LR-only states were used when the config has them


def test_an_hr_reward_with_lr_only_data_is_refused_before_training(tmp_path):
    model = archs.build("amnet", scale=4, code_dim=1, **TINY)
    model.record_code_units(coder_for(1, (0.2, 4.0)))
    init = save_model(model, tmp_path / "init.safetensors")
    data = json.dumps(str(smooth_images(tmp_path / "data", n=1, size=96)))
    cfg = load_config(ROOT / "configs" / "amgan" / "amnet_rl_psnr.yaml", [
        f"output_dir={json.dumps(str(tmp_path / 'runs'))}", f"model.init={json.dumps(str(init))}",
        f"model.kwargs={json.dumps(TINY | {'code_dim': 1})}",
        f"data.train=[{{path: {data}}}, {{path: {json.dumps('lr:' + json.loads(data))}}}]",
        "train.iterations=1", "val.every=0", "logging.tensorboard=false", "train.device=cpu"])
    with pytest.raises(BlindSRError, match=r"strategy.params.reward.*psnr needs HR.*LR-only"):
        train(cfg, progress=False)
    assert not list((tmp_path / "runs").glob("*/checkpoints/*"))


def test_the_step_keeps_the_lr_it_acted_on_for_image_samples():
    check_keeps_the_lr_it_made(make(), batch())
