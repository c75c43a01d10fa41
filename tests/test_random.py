"""Tests for blindsr.degrade.random: Real-ESRGAN's batched second-order degradation."""

import math
import time

import pytest
import torch

import blindsr.degrade.random as rnd
from blindsr.degrade import SecondOrderConfig, first_order, second_order
from blindsr.errors import BlindSRError
from blindsr.ops.kernels import (
    gaussian_kernel,
    generalized_gaussian_kernel,
    plateau_kernel,
    restrict_support,
    sinc_kernel,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cfg(**sections) -> SecondOrderConfig:
    return SecondOrderConfig.from_dict(sections)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_shape_range_and_8bit_grid(rand_image, scale):
    hr = rand_image(4, 3, 48, 60)
    lr = second_order(hr, scale, generator=_gen())
    assert lr.shape == (4, 3, 48 // scale, 60 // scale)
    assert lr.min() >= 0 and lr.max() <= 1
    torch.testing.assert_close(lr, torch.round(lr * 255) / 255, atol=0, rtol=0)


def test_gray_float64_and_odd_sizes(rand_image):
    lr = second_order(rand_image(2, 1, 50, 45).double(), 4, generator=_gen())
    assert lr.shape == (2, 1, 12, 11) and lr.dtype == torch.float64


def test_same_seed_same_output_different_seed_different(rand_image):
    hr = rand_image(4, 3, 48, 48)
    a = second_order(hr, 4, generator=_gen(7))
    torch.testing.assert_close(a, second_order(hr, 4, generator=_gen(7)), atol=0, rtol=0)
    assert not torch.equal(a, second_order(hr, 4, generator=_gen(8)))


def test_batch_of_8_runs_in_reasonable_time(rand_image):
    hr = rand_image(8, 3, 128, 128)
    second_order(hr, 4, generator=_gen(0))  # warm-up
    start = time.perf_counter()
    for seed in range(3):
        assert second_order(hr, 4, generator=_gen(seed)).shape == (8, 3, 32, 32)
    assert (time.perf_counter() - start) / 3 < 3.0  # typically ~0.1-0.3 s on one CPU core


# --- configuration ------------------------------------------------------------------------


def test_defaults_are_the_published_values():
    c = SecondOrderConfig()
    assert c.stage1.blur.kernel_probs == (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    assert c.stage1.blur.sigma == (0.2, 3.0) and c.stage2.blur.sigma == (0.2, 1.5)
    assert c.stage1.blur.prob == 1.0 and c.stage2.blur.prob == 0.8
    assert c.stage1.resize.probs == (0.2, 0.7, 0.1) and c.stage2.resize.probs == (0.3, 0.4, 0.3)
    assert c.stage1.resize.down == (0.15, 1.0) and c.stage2.resize.up == (1.0, 1.2)
    assert c.stage1.noise.gaussian_sigma == (1.0, 30.0) and c.stage2.noise.poisson_scale[1] == 2.5
    assert c.final.sinc_prob == 0.8 and c.final.sinc_cutoff == (math.pi / 3, math.pi)
    assert c.stage2.jpeg_quality == (30.0, 95.0)


def test_from_dict_round_trip_and_partial_override():
    c = SecondOrderConfig.from_dict({"stage2": {"noise": {"gray_prob": 0.0}}})
    assert c.stage2.noise.gray_prob == 0.0
    assert c.stage2.blur.sigma == (0.2, 1.5)  # the rest of stage 2 keeps its own defaults
    d = c.to_dict()
    assert isinstance(d["stage1"]["blur"]["sigma"], list)  # YAML-friendly
    assert SecondOrderConfig.from_dict(d) == c
    assert SecondOrderConfig.from_dict(None) == SecondOrderConfig()


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"stage3": {}}, "unknown second-order config key 'stage3'"),
        ({"stage1": {"blur": {"sgma": [1, 2]}}}, "'stage1.blur.sgma'.*sigma"),
        ({"final": {"sinc_prob": 1.5}}, "final.sinc_prob"),
        ({"stage1": {"blur": {"sigma": [3, 1]}}}, "stage1.blur.sigma"),
        ({"stage1": {"blur": {"sigma": "wide"}}}, "must be a list"),
        ({"stage1": {"blur": {"kernel_sizes": [7, 20]}}}, "odd"),
        ({"stage1": {"blur": {"kernel_types": ["box"], "kernel_probs": [1]}}}, "kernel_types"),
        ({"stage1": {"blur": {"kernel_probs": [1, 2]}}}, "kernel_probs"),
        ({"stage2": {"resize": {"modes": ["lanczos"]}}}, "stage2.resize.modes"),
        ({"stage2": {"jpeg_quality": [0, 95]}}, "jpeg_quality"),
        ({"stage1": "fast"}, "must be a mapping"),
        ({"stage1": {"blur": {"kernel_sizes": [7, 99999]}}}, "max <= 101"),
        ({"stage1": {"resize": {"probs": [float("nan"), 1, 1]}}}, "finite non-negative weights"),
        ({"stage1": {"blur": {"kernel_probs": [float("inf"), 1, 1, 1, 1, 1]}}},
         "stage1.blur.kernel_probs: needs 6 finite"),
    ],
)
def test_from_dict_rejects_bad_input(bad, match):
    with pytest.raises(BlindSRError, match=match):
        SecondOrderConfig.from_dict(bad)


# --- kernels: each branch ------------------------------------------------------------------


def _blur(**kw) -> rnd.BlurConfig:
    return rnd.BlurConfig(**{"kernel_sizes": (21, 21), "sinc_prob": 0.0, **kw})


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("iso", gaussian_kernel(21, 2.0)),
        ("aniso", gaussian_kernel(21, 2.0)),
        ("generalized_iso", generalized_gaussian_kernel(21, 2.0, beta=2.5)),
        ("generalized_aniso", generalized_gaussian_kernel(21, 2.0, beta=2.5)),
        ("plateau_iso", plateau_kernel(21, 2.0, beta=1.5)),
        ("plateau_aniso", plateau_kernel(21, 2.0, beta=1.5)),
    ],
)
def test_each_kernel_type(kind, expected):
    fixed = _blur(
        kernel_types=(kind,),
        kernel_probs=(1.0,),
        sigma=(2.0, 2.0),
        beta_generalized=(2.5, 2.5),
        beta_plateau=(1.5, 1.5),
    )
    k = rnd.random_kernels(fixed, 4, _gen())
    torch.testing.assert_close(k, expected.expand(4, 21, 21))
    free = rnd.random_kernels(_blur(kernel_types=(kind,), kernel_probs=(1.0,)), 16, _gen())
    torch.testing.assert_close(free, free.flip(-1, -2))  # point-symmetric always
    transposed = (free - free.transpose(-1, -2)).abs().amax(dim=(1, 2)) < 1e-7
    assert transposed.all() if kind.endswith("_iso") or kind == "iso" else not transposed.any()


def test_sinc_branch_and_size_dependent_cutoff():
    cfg = _blur(sinc_prob=1.0, sinc_cutoff_small=(1.0, 1.0), sinc_cutoff_large=(2.0, 2.0))
    torch.testing.assert_close(rnd.random_kernels(cfg, 2, _gen())[0], sinc_kernel(21, 2.0)[0])
    small = rnd.BlurConfig(**{**cfg.__dict__, "kernel_sizes": (7, 7)})
    k = rnd.random_kernels(small, 2, _gen())
    torch.testing.assert_close(k, sinc_kernel(7, 1.0).expand(2, 7, 7))  # small size: small range
    wide = rnd.BlurConfig(**{**cfg.__dict__, "kernel_sizes": (7, 21)})
    k = rnd.random_kernels(wide, 64, _gen())
    sizes = (k != 0).any(dim=1).sum(dim=1)
    for kernel, size in zip(k, sizes.tolist(), strict=True):
        expected = restrict_support(
            sinc_kernel(21, 1.0 if size < 13 else 2.0), torch.tensor([size])
        )
        torch.testing.assert_close(kernel, expected[0])


def test_kernel_sizes_blur_prob_and_final_sinc():
    k = rnd.random_kernels(rnd.BlurConfig(kernel_sizes=(7, 11), sigma=(3, 3)), 64, _gen())
    support = (k != 0).any(dim=1).sum(dim=1)  # columns used
    assert set(support.tolist()) == {7, 9, 11}
    none = rnd.random_kernels(rnd.BlurConfig(prob=0.0), 3, _gen())
    assert (none[:, 10, 10] == 1).all() and none.sum() == 3
    fin = rnd.final_sinc_kernels(rnd.FinalConfig(sinc_prob=0.5), 64, _gen())
    pulses = (fin[:, 10, 10] == 1).sum().item()
    assert 16 < pulses < 48 and (fin.amin(dim=(1, 2)) < 0).sum() == 64 - pulses


# --- pipeline branches (spying on the steps) ----------------------------------------------


def _spy(monkeypatch, name: str) -> list:
    calls = []
    real = getattr(rnd, name)

    def wrapper(x, *args, **kwargs):
        calls.append(tuple(x.shape))
        return real(x, *args, **kwargs)

    monkeypatch.setattr(rnd, name, wrapper)
    return calls


@pytest.mark.parametrize("gaussian_prob, expect", [(1.0, "gaussian"), (0.0, "poisson")])
def test_noise_kind_branches(monkeypatch, rand_image, gaussian_prob, expect):
    calls = {k: _spy(monkeypatch, f"{k}_noise") for k in ("gaussian", "poisson")}
    noise = {"noise": {"gaussian_prob": gaussian_prob}}
    second_order(rand_image(4, 3, 32, 32), 2, _cfg(stage1=noise, stage2=noise), _gen())
    assert len(calls[expect]) == 2 and all(s[0] == 4 for s in calls[expect])
    assert calls["poisson" if expect == "gaussian" else "gaussian"] == []


def test_mixed_noise_kinds_split_the_batch(monkeypatch, rand_image):
    calls = {k: _spy(monkeypatch, f"{k}_noise") for k in ("gaussian", "poisson")}
    second_order(rand_image(8, 3, 32, 32), 2, generator=_gen(0))
    sizes = [s[0] for s in calls["gaussian"] + calls["poisson"]]
    assert sum(sizes) == 16 and len(sizes) > 2  # per-sample choice: some stage mixes both


@pytest.mark.parametrize("resize_first", [1.0, 0.0])
def test_final_step_orders(monkeypatch, rand_image, resize_first):
    jpeg_calls = _spy(monkeypatch, "jpeg")
    up = {"resize": {"probs": [1, 0, 0], "up": [1.2, 1.2]}}  # stage 2 ends at 1.2 x target
    cfg = _cfg(stage2=up, final={"resize_first_prob": resize_first})
    lr = second_order(rand_image(2, 3, 80, 80), 4, cfg, _gen())
    assert lr.shape == (2, 3, 20, 20)
    assert jpeg_calls[-1] == ((2, 3, 20, 20) if resize_first else (2, 3, 24, 24))


def test_batch_shares_one_resize_per_stage(monkeypatch, rand_image):
    stage = {
        "resize": {"probs": [0, 1, 0], "down": [0.5, 0.5], "modes": ["area"]},
        "noise": {"gaussian_prob": 1.0},
    }
    noise_calls = _spy(monkeypatch, "gaussian_noise")
    jpeg_calls = _spy(monkeypatch, "jpeg")
    cfg = _cfg(stage1=stage, stage2=stage, final={"resize_first_prob": 1.0})
    assert second_order(rand_image(3, 3, 64, 64), 4, cfg, _gen()).shape == (3, 3, 16, 16)
    # Stage 1 halves the HR size; stage 2 halves the *target* size (16), as Real-ESRGAN does.
    assert noise_calls == [(3, 3, 32, 32), (3, 3, 8, 8)]
    assert jpeg_calls == [(3, 3, 32, 32), (3, 3, 16, 16)]


def test_blur_branch_changes_the_result(rand_image):
    hr = rand_image(2, 3, 64, 64)
    no_blur = {"blur": {"prob": 0.0}}
    sharp = second_order(hr, 2, _cfg(stage1=no_blur, stage2=no_blur), _gen(1))
    blurred = second_order(hr, 2, _cfg(stage1={"blur": {"sigma": [3, 3]}}), _gen(1))
    assert blurred.std() < sharp.std()


def test_rejects_bad_arguments(rand_image):
    with pytest.raises(BlindSRError):
        second_order(rand_image(1, 3, 16, 16)[0], 2)
    with pytest.raises(BlindSRError):
        second_order(rand_image(1, 3, 16, 16), 0)
    with pytest.raises(BlindSRError):
        second_order(rand_image(1, 4, 16, 16), 2)


def _white_noise_config(first_order_prob: float) -> SecondOrderConfig:
    """Gray Gaussian noise of sigma 10 only (JPEG subsamples colour), near-lossless JPEG, no blur
    to speak of."""
    noise = {"gaussian_prob": 1.0, "gaussian_sigma": [10.0, 10.0], "gray_prob": 1.0}
    blur = {"sigma": [0.2, 0.2], "kernel_sizes": [7, 7]}
    return SecondOrderConfig.from_dict({
        "first_order_prob": first_order_prob,
        "stage1": {"noise": noise, "blur": blur, "jpeg_quality": [95.0, 95.0]},
        "stage2": {"noise": noise, "blur": {**blur, "prob": 0.0}, "jpeg_quality": [95.0, 95.0],
                   "resize": {"probs": [0.0, 1.0, 0.0]}},
        "final": {"sinc_prob": 1.0}})


def _lag1_correlation(lr: torch.Tensor) -> torch.Tensor:
    """Per sample: correlation of horizontally adjacent pixels of the zero-mean LR."""
    x = lr - lr.mean(dim=(-2, -1), keepdim=True)
    return (x[..., 1:] * x[..., :-1]).mean(dim=(1, 2, 3)) / x.square().mean(dim=(1, 2, 3))


def test_first_order_samples_keep_white_noise_at_lr_scale():
    hr = torch.full((16, 3, 128, 128), 0.5)
    first = first_order(hr, 4, _white_noise_config(0.0), torch.Generator().manual_seed(0))
    second = second_order(hr, 4, _white_noise_config(0.0), torch.Generator().manual_seed(0))
    assert first.shape == second.shape == (16, 3, 32, 32)
    r_first, r_second = _lag1_correlation(first), _lag1_correlation(second)
    assert r_first.abs().max() < 0.15  # noise added at LR size: white
    assert r_second.min() > 0.3  # resized and sinc-filtered on the way: correlated
    mixed = second_order(hr, 4, _white_noise_config(0.5), torch.Generator().manual_seed(0))
    white = int((_lag1_correlation(mixed).abs() < 0.15).sum())
    assert 3 <= white <= 13  # about half of the 16 samples took the first-order path
    assert torch.equal(mixed, second_order(hr, 4, _white_noise_config(0.5),
                                           torch.Generator().manual_seed(0)))  # seeded


def test_first_order_prob_is_validated():
    with pytest.raises(BlindSRError, match="first_order_prob"):
        SecondOrderConfig.from_dict({"first_order_prob": 1.5})


def test_a_seed_and_a_mapping_stand_for_a_generator_and_a_config():
    hr = torch.rand(2, 3, 32, 32, generator=_gen(1))
    seeded = second_order(hr, 4, None, 5)
    assert torch.equal(seeded, second_order(hr, 4, None, _gen(5)))
    mapping = {"first_order_prob": 1.0}
    assert torch.equal(second_order(hr, 4, mapping, 2),
                       second_order(hr, 4, SecondOrderConfig.from_dict(mapping), _gen(2)))
    with pytest.raises(BlindSRError, match="config must be a SecondOrderConfig or a mapping"):
        second_order(hr, 4, 3, 0)
    with pytest.raises(BlindSRError, match="unknown"):
        first_order(hr, 4, {"stage9": {}}, 0)
