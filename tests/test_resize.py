"""MATLAB-compatible bicubic imresize: parity with MATLAB-made LR images and basic properties."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from blindsr.errors import BlindSRError
from blindsr.ops.resize import imresize


def _load(path) -> torch.Tensor:
    """A PNG as a float64 1xCxHxW tensor in [0, 1], keeping gray (mode L) images single-channel."""
    img = Image.open(path)
    arr = np.asarray(img if img.mode == "L" else img.convert("RGB"), dtype=np.float64) / 255.0
    t = torch.from_numpy(arr)
    return t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]


def _to8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round()


@pytest.mark.parametrize("name", ["Set5", "Set14"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_parity_with_matlab_lr(shared, name, scale):
    """imresize(HR, 1/s) rounded to 8 bits matches the MATLAB-made LR files.

    The files were made by MATLAB on uint8 images, which rounds to 8 bits after the first (vertical)
    pass too; emulating that rounding through the public API must match almost exactly, which pins
    down the weights, indices, boundary handling and pass order far tighter than the float result.
    """
    hr_paths = sorted((shared / "datasets" / name / f"x{scale}" / "HR").glob("*.png"))
    assert hr_paths, f"no HR images for {name} x{scale}"
    float_mad, uint8_mad = [], []
    for hr_path in hr_paths:
        hr = _load(hr_path)
        lr = _load(hr_path.parents[1] / "LR" / hr_path.name) * 255
        out = imresize(hr, 1 / scale)
        assert out.shape == lr.shape
        float_mad.append((_to8(out) - lr).abs().mean().item())
        h, w = hr.shape[-2:]
        mid = _to8(imresize(hr, size=(math.ceil(h / scale), w)))
        out8 = _to8(imresize(mid / 255, size=lr.shape[-2:]))
        uint8_mad.append((out8 - lr).abs().mean().item())
    print(
        f"{name} x{scale}: MAD float {np.mean(float_mad):.4f}, uint8-emulated "
        f"{np.mean(uint8_mad):.4f}"
    )
    assert np.mean(float_mad) <= 0.2
    assert np.mean(uint8_mad) <= 0.05


def test_output_shapes(rand_image):
    x = rand_image(2, 3, 17, 23)
    assert imresize(x, 2).shape == (2, 3, 34, 46)
    assert imresize(x, 0.5).shape == (2, 3, 9, 12)  # ceil, as MATLAB
    assert imresize(x, 1 / 3).shape == (2, 3, 6, 8)
    assert imresize(x, 1.7).shape == (2, 3, math.ceil(17 * 1.7), math.ceil(23 * 1.7))
    assert imresize(x, size=(5, 40)).shape == (2, 3, 5, 40)
    assert imresize(rand_image(1, 5, 8, 8), 3).shape == (1, 5, 24, 24)  # any channel count


@pytest.mark.parametrize("scale", [0.25, 1 / 3, 0.6, 1.5, 2, 4])
def test_constant_image_stays_constant(scale):
    x = torch.full((1, 3, 13, 11), 0.37)
    out = imresize(x, scale)
    torch.testing.assert_close(out, torch.full_like(out, 0.37), atol=1e-6, rtol=0)


def test_scale_one_is_identity_and_a_copy(rand_image):
    x = rand_image(2, 3, 9, 10)
    out = imresize(x, 1)
    assert torch.equal(out, x)
    assert out.data_ptr() != x.data_ptr()
    assert torch.equal(imresize(x, size=(9, 10)), x)


def test_upscale_interpolates_source_samples():
    """At x3 the centre of every output block falls on a source pixel: exact samples."""
    x = torch.rand(1, 1, 7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = imresize(x, 3)
    torch.testing.assert_close(out[..., 1::3, 1::3], x)


def test_batched_equals_per_image(rand_image):
    x = rand_image(3, 3, 20, 15)
    batched = imresize(x, 0.45)
    single = torch.cat([imresize(x[i : i + 1], 0.45) for i in range(3)])
    torch.testing.assert_close(batched, single)


def test_float64_close_to_float32(rand_image):
    x = rand_image(1, 3, 24, 24)
    for scale in (0.25, 3):
        torch.testing.assert_close(
            imresize(x, scale).double(), imresize(x.double(), scale), atol=1e-5, rtol=0
        )


def test_bfloat16_computed_in_float32():
    x = torch.rand(1, 3, 16, 16)
    out = imresize(x.bfloat16(), 0.5)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), imresize(x.bfloat16().float(), 0.5).bfloat16().float())


def test_antialias_off_differs_when_shrinking(rand_image):
    x = rand_image(1, 1, 32, 32)
    aa, plain = imresize(x, 0.25), imresize(x, 0.25, antialias=False)
    assert aa.shape == plain.shape
    # Antialiasing low-passes: less variance than plain subsampling-like interpolation.
    assert aa.var() < 0.5 * plain.var()
    torch.testing.assert_close(imresize(x, 2, antialias=False), imresize(x, 2))


def test_downscale_matches_direct_formula():
    """A x1/2 output pixel is the MATLAB antialiased cubic (width 8) weighted sum of 8 inputs."""
    x = torch.rand(1, 1, 1, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = imresize(x, size=(1, 8))
    # Output pixel 4 (1-based) centres at input 7.5 (1-based): taps 4..11 at distances 0.5..3.5.
    d = torch.tensor([3.5, 2.5, 1.5, 0.5, 0.5, 1.5, 2.5, 3.5], dtype=torch.float64) / 2
    k = torch.where(d <= 1, 1.5 * d**3 - 2.5 * d**2 + 1, -0.5 * d**3 + 2.5 * d**2 - 4 * d + 2)
    expected = (k / k.sum() * x[0, 0, 0, 3:11]).sum()
    torch.testing.assert_close(out[0, 0, 0, 3], expected)


def test_bad_arguments():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(BlindSRError):
        imresize(x)
    with pytest.raises(BlindSRError):
        imresize(x, 2, size=(4, 4))
    with pytest.raises(BlindSRError):
        imresize(x, -1)
    with pytest.raises(BlindSRError):
        imresize(x.to(torch.uint8), 2)
    with pytest.raises(BlindSRError):
        imresize(x, size=(0, 4))


def test_differentiable():
    x = torch.rand(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: imresize(t, 0.7), (x,))
    assert torch.autograd.gradcheck(lambda t: imresize(t, size=(9, 4)), (x,))


@pytest.mark.parametrize("scale", [4, 0.25, 1 / 3, 2.5])
def test_blockwise_products_equal_one_dense_product(monkeypatch, scale):
    import blindsr.ops.resize as resize

    x = torch.rand(2, 3, 30, 41, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    dense = imresize(x, scale)  # every output fits in one block
    monkeypatch.setattr(resize, "_BLOCK", 5)
    torch.testing.assert_close(imresize(x, scale), dense, rtol=0, atol=1e-12)
