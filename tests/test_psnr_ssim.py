"""PSNR / SSIM in the SR-literature convention, and the metric registry."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from blindsr.errors import BlindSRError
from blindsr.metrics import METRICS, Metric, get_metric, psnr, ssim

CALIBRATION_PSNR = {"I03": 21.11, "I04": 20.99, "I06": 27.01, "I08": 23.30, "I19": 21.62}


def _u8(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _noisy(img: np.ndarray, seed: int, amp: int = 20) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(-amp, amp + 1, img.shape)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


def _smooth_u8(seed: int, h: int, w: int, c: int = 3) -> np.ndarray:
    """A smooth-ish uint8 image (random noise summed over a few pixels) so SSIM is informative."""
    raw = np.random.default_rng(seed).random((h + 4, w + 4, c))
    box = sum(raw[i : i + h, j : j + w] for i in range(5) for j in range(5)) / 25
    return np.round((box - box.min()) / (box.max() - box.min()) * 255).astype(np.uint8)


def _ref_y(img: np.ndarray) -> np.ndarray:
    f = img.astype(np.float64) / 255
    return 16 + 65.481 * f[..., 0] + 128.553 * f[..., 1] + 24.966 * f[..., 2]


def _ref_ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. SSIM of two float64 2-D arrays, written independently with explicit windows."""
    r = np.arange(11) - 5
    g = np.exp(-(r**2) / (2 * 1.5**2))
    win = np.outer(g, g) / np.outer(g, g).sum()
    wa = np.lib.stride_tricks.sliding_window_view(a, (11, 11))
    wb = np.lib.stride_tricks.sliding_window_view(b, (11, 11))

    def mean(v):
        return (v * win).sum(axis=(-2, -1))

    mu_a, mu_b = mean(wa), mean(wb)
    var_a = mean((wa - mu_a[..., None, None]) ** 2)
    var_b = mean((wb - mu_b[..., None, None]) ** 2)
    cov = mean((wa - mu_a[..., None, None]) * (wb - mu_b[..., None, None]))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(s.mean())


def _ref_ssim(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    if a.ndim == 2:
        return _ref_ssim_channel(a, b)
    return float(np.mean([_ref_ssim_channel(a[..., c], b[..., c]) for c in range(a.shape[-1])]))


def _to_tensor(*imgs: np.ndarray) -> torch.Tensor:
    return torch.stack(
        [torch.from_numpy(i.astype(np.float32) / 255).permute(2, 0, 1) for i in imgs]
    )


def test_psnr_calibration(shared):
    cal = shared / "calibration"
    for name, expected in CALIBRATION_PSNR.items():
        dist = np.asarray(Image.open(cal / "dist" / f"{name}.png").convert("RGB"))
        ref = np.asarray(Image.open(cal / "ref" / f"{name}.png").convert("RGB"))
        value = psnr(dist, ref)
        assert value.shape == (1,)
        assert abs(value.item() - expected) <= 0.01, (name, value.item(), expected)


def test_psnr_hand_computed():
    a = np.zeros((4, 4, 3), dtype=np.uint8)
    b = a.copy()
    b[0, 0, 0] = 16  # mse = 256 / 48
    assert psnr(a, b).item() == pytest.approx(10 * math.log10(255**2 / (256 / 48)))
    assert torch.isinf(psnr(a, a)).all()


def test_float_inputs_rounded_to_8_bit():
    img = _u8(0, (12, 12, 3))
    x = _to_tensor(img)
    jitter = x + 0.4 / 255  # stays on the same 8-bit level after rounding
    assert torch.isinf(psnr(x, jitter)).all()
    assert ssim(x, jitter).item() == pytest.approx(1.0)
    other = _noisy(img, 1)
    assert psnr(x, _to_tensor(other)).item() == pytest.approx(psnr(img, other).item())
    over = x.clone()
    over[..., 0, 0] = 1.3  # an overshoot: clamped to 255 before comparison
    clamped = x.clone()
    clamped[..., 0, 0] = 1.0
    assert psnr(over, x).item() == pytest.approx(psnr(clamped, x).item())


def test_y_channel_and_crop_match_manual():
    a, b = _u8(2, (20, 18, 3)), _u8(3, (20, 18, 3))
    ya, yb = _ref_y(a)[3:-3, 3:-3], _ref_y(b)[3:-3, 3:-3]
    expected = 10 * math.log10(255**2 / np.mean((ya - yb) ** 2))
    assert psnr(a, b, crop_border=3, y_channel=True).item() == pytest.approx(expected, abs=1e-9)
    cropped = psnr(a[2:-2, 2:-2], b[2:-2, 2:-2]).item()
    assert psnr(a, b, crop_border=2).item() == pytest.approx(cropped, abs=1e-9)


@pytest.mark.parametrize("y_channel", [False, True])
def test_ssim_matches_reference(y_channel):
    a = _smooth_u8(4, 30, 26)
    b = _noisy(a, 5)
    got = ssim(a, b, crop_border=2, y_channel=y_channel).item()
    ca, cb = a[2:-2, 2:-2], b[2:-2, 2:-2]
    ref = _ref_ssim(_ref_y(ca), _ref_y(cb)) if y_channel else _ref_ssim(ca, cb)
    assert got == pytest.approx(ref, abs=1e-10)
    assert 0.2 < got < 0.99  # an informative pair, not a degenerate one


def test_ssim_identical_and_ordering():
    a = _smooth_u8(6, 24, 24)
    assert ssim(a, a).item() == pytest.approx(1.0, abs=1e-12)
    mild, strong = _noisy(a, 7, amp=5), _noisy(a, 7, amp=40)
    assert ssim(a, mild).item() > ssim(a, strong).item()


def test_batched_equals_individual():
    imgs = [_smooth_u8(s, 20, 22) for s in range(3)]
    others = [_noisy(i, 10 + k) for k, i in enumerate(imgs)]
    x, y = _to_tensor(*imgs), _to_tensor(*others)
    for metric in (psnr, ssim):
        batched = metric(x, y, crop_border=1, y_channel=True)
        assert batched.shape == (3,)
        singles = torch.cat(
            [metric(a, b, crop_border=1, y_channel=True) for a, b in zip(imgs, others, strict=True)]
        )
        torch.testing.assert_close(batched, singles)


def test_gray_inputs_ignore_y_channel():
    a = _smooth_u8(11, 16, 16, c=1)[..., 0]
    b = _noisy(a, 12)
    assert psnr(a, b, y_channel=True).item() == psnr(a, b).item()
    assert ssim(a, b, y_channel=True).item() == pytest.approx(_ref_ssim(a, b), abs=1e-10)
    t = torch.from_numpy(a.astype(np.float32) / 255)[None, None]
    u = torch.from_numpy(b.astype(np.float32) / 255)[None, None]
    torch.testing.assert_close(psnr(t, u, y_channel=True), psnr(a, b))


def test_bad_inputs():
    a = _u8(0, (16, 16, 3))
    with pytest.raises(BlindSRError):
        psnr(a, a[:8])
    with pytest.raises(BlindSRError):
        psnr(a.astype(np.float32), a)
    with pytest.raises(BlindSRError):
        ssim(a[:8, :8], a[:8, :8])
    with pytest.raises(BlindSRError):
        psnr(a, a, crop_border=8)


def test_registry():
    assert isinstance(METRICS["psnr"], Metric)
    m = get_metric("SSIM")
    assert m.fn is ssim and not m.lower_better and m.full_reference
    assert get_metric("psnr").fn is psnr
    with pytest.raises(BlindSRError, match="psnr, ssim"):
        get_metric("nope")


@pytest.mark.parametrize("scale_it,message", [
    (lambda t: t * 255, "values reach .*divide 0..255 values by 255"),
    (lambda t: t * 2 - 1, "values go down to .*map -1..1 values"),
    (lambda t: t * float("nan"), "NaN or infinite"),
    (lambda t: t[..., :0, :], "the image is empty"),
])
def test_floats_on_another_scale_are_refused_not_clamped(scale_it, message):
    x = _to_tensor(_u8(0, (12, 12, 3)))
    with pytest.raises(BlindSRError, match=message):
        psnr(scale_it(x), scale_it(x))
