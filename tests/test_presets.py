"""Tests for blindsr.degrade presets: shapes, determinism, definitions and clear errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from blindsr.degrade import PRESETS, apply, preset_names
from blindsr.errors import BlindSRError
from blindsr.ops.kernels import gaussian_kernel
from blindsr.ops.resize import imresize

NOISY = ("DN", "noise", "b+n", "n+j", "b+n+j")


def _q(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.clamp(0, 1) * 255) / 255


def _smooth(n: int = 1, c: int = 3, h: int = 48, w: int = 48) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    img = torch.stack([0.2 + 0.6 * x, 0.5 + 0.3 * torch.sin(8 * y), 0.3 + 0.4 * x * y])[:c]
    return _q(img.expand(n, c, h, w))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_every_preset_shape_range_and_grid(rand_image, scale):
    x = rand_image(2, 3, 48, 48)
    for name in (*PRESETS, "iso0.2", "iso2.6"):
        lr = apply(x, name, scale)
        assert lr.shape == (2, 3, 48 // scale, 48 // scale), name
        assert lr.min() >= 0 and lr.max() <= 1, name
        torch.testing.assert_close(lr, _q(lr), atol=0, rtol=0, msg=name)


def test_gray_images_and_modcrop(rand_image):
    x = rand_image(1, 1, 50, 45)  # not multiples of 4: the HR is cropped to 48 x 44
    for name in PRESETS:
        assert apply(x, name, 4).shape == (1, 1, 12, 11), name


def test_clean_equals_bicubic_rounded(rand_image):
    x = rand_image(2, 3, 40, 36)
    ref = _q(imresize(x, size=(10, 9)))
    torch.testing.assert_close(apply(x, "clean", 4), ref, atol=0, rtol=0)
    torch.testing.assert_close(apply(x, "bicubic", 4), ref, atol=0, rtol=0)


def test_seed_fixes_noise_and_different_seeds_differ(rand_image):
    x = rand_image(1, 3, 32, 32)
    for name in NOISY:
        a = apply(x, name, 2, seed=3)
        torch.testing.assert_close(a, apply(x, name, 2, seed=3), atol=0, rtol=0)
        assert not torch.equal(a, apply(x, name, 2, seed=4)), name
    # Noise-free presets ignore the seed.
    torch.testing.assert_close(apply(x, "b+j", 2, seed=1), apply(x, "b+j", 2, seed=2))


def test_dn_and_eats_noise_levels():
    x = torch.full((1, 3, 128, 128), 0.5)
    clean = apply(x, "clean", 2)
    assert (apply(x, "DN", 2) - clean).std().item() * 255 == pytest.approx(30, rel=0.05)
    assert (apply(x, "noise", 2) - clean).std().item() * 255 == pytest.approx(20, rel=0.05)


def test_bd_is_replicate_blur_then_centre_phase_decimation(rand_image):
    x = rand_image(1, 3, 24, 24)
    k = gaussian_kernel(7, 1.6)[0].expand(3, 1, 7, 7)
    blurred = _q(F.conv2d(F.pad(x, (3, 3, 3, 3), mode="replicate"), k, groups=3))
    for scale, offset in ((2, 0), (3, 1), (4, 1)):
        ref = blurred[..., offset::scale, offset::scale]
        torch.testing.assert_close(apply(x, "BD", scale), ref, atol=0, rtol=0)
        nearest = _q(x[..., offset::scale, offset::scale])
        torch.testing.assert_close(apply(x, "nearest", scale), nearest, atol=0, rtol=0)


def test_blur_and_iso_presets_blur_before_bicubic(rand_image):
    x = rand_image(1, 3, 32, 32)
    k = gaussian_kernel(21, 2.0)[0].expand(3, 1, 21, 21)
    blurred = _q(F.conv2d(F.pad(x, (10, 10, 10, 10), mode="reflect"), k, groups=3))
    ref = _q(imresize(blurred, size=(16, 16)))
    torch.testing.assert_close(apply(x, "blur", 2), ref, atol=0, rtol=0)
    torch.testing.assert_close(apply(x, "iso2", 2), ref, atol=0, rtol=0)
    sharp, soft = apply(x, "iso0.2", 2), apply(x, "iso2.6", 2)
    assert soft.std() < sharp.std()


def _gray_levels(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().mean().item() * 255


def test_jpeg_preset_differs_from_clean_plausibly(shared):
    a = np.array(Image.open(shared / "datasets/Set5/x4/HR/img_003.png").convert("RGB"))
    x = torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255
    clean = apply(x, "clean", 2)
    diff = _gray_levels(apply(x, "jpeg", 2), clean)
    assert 2.0 < diff < 15.0  # q50 on a 128 x 128 natural image: measured 9.4 gray levels
    noisy = apply(x, "b+n+j", 2)
    assert _gray_levels(noisy, clean) > diff


def test_jpeg_preset_on_a_smooth_image():
    x = _smooth(1, 3, 96, 96)
    diff = _gray_levels(apply(x, "jpeg", 2), apply(x, "clean", 2))
    assert 0.3 < diff < 6.0


def test_unknown_preset_lists_the_known_ones(rand_image):
    with pytest.raises(BlindSRError, match="known presets: bicubic, BD, DN"):
        apply(rand_image(), "bicubc", 4)
    assert "iso<sigma> (e.g. iso1.3)" in preset_names()
    assert apply(rand_image(), "bd", 2).shape == (1, 3, 16, 16)  # names are case-insensitive


@pytest.mark.parametrize("name", ["iso", "isoabc", "iso0", "iso-1", "iso1.2.3", "isonan"])
def test_iso_parse_errors_are_clear(rand_image, name):
    with pytest.raises(BlindSRError, match="iso"):
        apply(rand_image(), name, 2)


def test_bad_inputs_raise(rand_image):
    with pytest.raises(BlindSRError):
        apply(rand_image()[0], "clean", 2)
    with pytest.raises(BlindSRError):
        apply(rand_image(), "clean", 0)
    with pytest.raises(BlindSRError):
        apply(rand_image(1, 3, 3, 3), "clean", 4)
    with pytest.raises(BlindSRError):
        apply(rand_image(1, 2, 8, 8), "clean", 2)


def test_a_seed_may_be_any_integer_or_a_generator(rand_image):
    x = rand_image(1, 3, 16, 16)
    by_int = apply(x, "b+n+j", 4, seed=3)
    assert torch.equal(apply(x, "b+n+j", 4, seed=np.int64(3)), by_int)
    assert torch.equal(apply(x, "b+n+j", 4, seed=torch.Generator().manual_seed(3)), by_int)
    for seed, message in [(2**70, r"in \[0, 2\*\*64\)"), ("3", "an integer or a torch.Generator"),
                          (True, "an integer"), (None, "got None")]:
        with pytest.raises(BlindSRError, match=message):
            apply(x, "noise", 4, seed=seed)


def test_hr_on_another_scale_is_refused_not_clamped(rand_image):
    x = rand_image(1, 3, 16, 16)
    with pytest.raises(BlindSRError, match="degrade: values reach"):
        apply(x * 255, "clean", 4)
