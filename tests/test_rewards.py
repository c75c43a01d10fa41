"""Rewards: built-in metrics match blindsr.metrics with the right sign, HR checks, and user
callables imported by path with clear errors."""

import math
import sys
import types

import pytest
import torch

from blindsr.errors import BlindSRError
from blindsr.metrics import lpips, niqe, psnr
from blindsr.rewards import PSNR_CAP, Reward, get_reward


def _smooth(n, size, seed):
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear")


def test_psnr_reward_equals_metric_psnr_y_cropped_by_the_scale(rand_image):
    hr = rand_image(3, 3, 32, 32, seed=1)
    sr = (hr + 0.05 * rand_image(3, 3, 32, 32, seed=2)).clamp(0, 1)
    lr = torch.zeros(3, 3, 8, 8)
    r = get_reward("psnr")(sr, hr, lr)
    want = psnr(sr, hr, crop_border=4, y_channel=True)
    assert r.shape == (3,) and r.dtype == torch.float32
    assert torch.allclose(r, want.float())
    assert not torch.allclose(r, psnr(sr, hr).float())  # not RGB, not uncropped
    assert get_reward("PSNR")(hr, hr, lr).tolist() == [PSNR_CAP] * 3  # inf capped


def test_psnr_reward_is_higher_for_the_closer_image(rand_image):
    hr = rand_image(1, 3, 32, 32, seed=1)
    noise = rand_image(1, 3, 32, 32, seed=2) - 0.5
    near, far = (hr + 0.02 * noise).clamp(0, 1), (hr + 0.2 * noise).clamp(0, 1)
    reward = get_reward("psnr")
    lr = torch.zeros(1, 3, 8, 8)
    assert reward(near, hr, lr) > reward(far, hr, lr)


def test_neg_niqe_is_minus_niqe():
    images = _smooth(2, 96, 3)
    reward = get_reward()  # the default
    assert reward.name == "neg_niqe" and not reward.needs_hr
    r = reward(images, None, images[..., ::4, ::4])
    assert r.shape == (2,) and torch.allclose(r, -niqe(images).float())
    assert torch.all(r < 0)


def test_neg_niqe_prefers_a_natural_image_to_a_noisy_one(shared):
    from blindsr import io

    hr = io.read_image(shared / "datasets" / "Set5" / "x4" / "HR" / "img_003.png").color.float()
    natural = hr[..., :192, :192]
    g = torch.Generator().manual_seed(4)
    noisy = (natural + 0.2 * (torch.rand(natural.shape, generator=g) - 0.5)).clamp(0, 1)
    reward = get_reward("neg_niqe")
    lr = natural[..., ::4, ::4]
    assert float(reward(natural, None, lr)) > float(reward(noisy, None, lr)) + 1


def test_neg_niqe_needs_96_pixels():
    with pytest.raises(BlindSRError, match="96x96"):
        get_reward("neg_niqe")(torch.rand(1, 3, 64, 64), None, torch.rand(1, 3, 16, 16))


def test_neg_lpips_is_minus_lpips(rand_image):
    hr = rand_image(2, 3, 32, 32, seed=1)
    sr = rand_image(2, 3, 32, 32, seed=2)
    r = get_reward("neg_lpips")(sr, hr, hr[..., ::4, ::4])
    assert torch.allclose(r, -lpips(sr, hr).float())
    assert torch.all(get_reward("neg_lpips")(hr, hr, hr[..., ::4, ::4]).abs() < 1e-6)


@pytest.mark.parametrize("name", ["psnr", "neg_lpips"])
def test_rewards_needing_hr_say_so(name):
    with pytest.raises(BlindSRError, match=f"reward '{name}' needs the HR image"):
        get_reward(name)(torch.rand(1, 3, 32, 32), None, torch.rand(1, 3, 8, 8))


@pytest.fixture
def user_module(monkeypatch):
    mod = types.ModuleType("blindsr_user_rewards")

    def brightness(sr, hr, lr):
        return sr.mean(dim=(1, 2, 3))

    def one_arg(sr):
        return sr.mean()

    def wrong_count(sr, hr, lr):
        return torch.zeros(sr.shape[0] + 1)

    def broken(sr, hr, lr):
        raise ValueError("no luck\nsecond line")

    mod.brightness, mod.one_arg, mod.wrong_count, mod.number = (brightness, one_arg,
                                                                wrong_count, 3)
    mod.broken = broken
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return mod


def test_user_callable_by_module_path(user_module):
    reward = get_reward("blindsr_user_rewards:brightness")
    sr = torch.rand(2, 3, 8, 8)
    assert torch.allclose(reward(sr, None, sr), sr.mean(dim=(1, 2, 3)))
    assert get_reward(user_module.brightness)(sr, None, sr).shape == (2,)
    assert get_reward(reward) is reward


@pytest.mark.parametrize(("spec", "message"), [
    ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
    ("blindsr_user_rewards:missing", "has no attribute 'missing'"),
    ("blindsr_user_rewards:number", "is a int, not a function"),
    ("blindsr_user_rewards:one_arg", r"must accept \(sr, hr, lr\)"),
    ("niqe", "unknown reward 'niqe'"),
    ("", "reward must be a name"),
])
def test_user_callable_errors_are_one_line(user_module, spec, message):
    with pytest.raises(BlindSRError, match=message) as err:
        get_reward(spec)
    assert "\n" not in str(err.value)


def test_wrong_output_shape_is_reported(user_module):
    reward = get_reward("blindsr_user_rewards:wrong_count")
    with pytest.raises(BlindSRError, match=r"expected \(2,\)"):
        reward(torch.rand(2, 3, 8, 8), None, torch.rand(2, 3, 2, 2))
    bad = Reward("words", lambda sr, hr, lr: "abc")
    with pytest.raises(BlindSRError, match="not numbers"):
        bad(torch.rand(1, 3, 8, 8), None, torch.rand(1, 3, 2, 2))


def test_a_failing_user_reward_is_one_line(user_module):
    sr = torch.rand(1, 3, 8, 8)
    for reward in (get_reward("blindsr_user_rewards:broken"), get_reward(user_module.broken)):
        with pytest.raises(BlindSRError, match="raised ValueError: no luck$"):
            reward(sr, None, sr)
    with pytest.raises(ZeroDivisionError):  # the package's own rewards keep their tracebacks
        Reward("own", lambda sr, hr, lr: 1 / 0)(sr, None, sr)


def test_rewards_never_build_graphs():
    sr = torch.rand(1, 3, 8, 8, requires_grad=True)
    r = get_reward(lambda sr, hr, lr: sr.mean(dim=(1, 2, 3)))(sr, None, sr)
    assert not r.requires_grad and math.isfinite(float(r))
