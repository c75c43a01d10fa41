"""RGB <-> YCbCr in MATLAB's rgb2ycbcr convention."""

import pytest
import torch

from blindsr.errors import BlindSRError
from blindsr.ops.color import rgb_to_y, rgb_to_ycbcr, ycbcr_to_rgb


def _pixels(*rgb: tuple[float, float, float]) -> torch.Tensor:
    """A 1x3x1xK float64 image from K RGB triples."""
    return torch.tensor(rgb, dtype=torch.float64).T[None, :, None, :]


def test_hand_computed_values():
    x = _pixels((0, 0, 0), (1, 1, 1), (1, 0, 0), (0.2, 0.4, 0.6))
    ycc = rgb_to_ycbcr(x)[0, :, 0, :] * 255  # 3 x K on the 0..255 scale
    expected = torch.tensor(
        [
            [16.0, 235.0, 16 + 65.481, 16 + 0.2 * 65.481 + 0.4 * 128.553 + 0.6 * 24.966],
            [128.0, 128.0, 128 - 37.797, 128 - 0.2 * 37.797 - 0.4 * 74.203 + 0.6 * 112],
            [128.0, 128.0, 128 + 112.0, 128 + 0.2 * 112 - 0.4 * 93.786 - 0.6 * 18.214],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(ycc, expected)


def test_rgb_to_y_shape_and_range(rand_image):
    x = rand_image(2, 3, 5, 7)
    y = rgb_to_y(x)
    assert y.shape == (2, 1, 5, 7)
    torch.testing.assert_close(y, rgb_to_ycbcr(x)[:, :1])
    assert y.min() >= 16 / 255 - 1e-6 and y.max() <= 235 / 255 + 1e-6
    torch.testing.assert_close(
        rgb_to_y(torch.ones(1, 3, 1, 1)), torch.full((1, 1, 1, 1), 235 / 255)
    )


def test_round_trip(rand_image):
    x = rand_image(2, 3, 8, 8).double()
    torch.testing.assert_close(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, atol=1e-12, rtol=0)
    xf = rand_image(1, 3, 8, 8, seed=3)
    back = ycbcr_to_rgb(rgb_to_ycbcr(xf))
    assert back.dtype == torch.float32
    torch.testing.assert_close(back, xf, atol=1e-5, rtol=0)


def test_gray_maps_to_neutral_chroma():
    x = torch.full((1, 3, 2, 2), 0.5)
    ycc = rgb_to_ycbcr(x)
    torch.testing.assert_close(ycc[:, 1:], torch.full((1, 2, 2, 2), 128 / 255))


def test_half_precision_keeps_dtype():
    x = torch.rand(1, 3, 4, 4).bfloat16()
    assert rgb_to_y(x).dtype == torch.bfloat16


def test_wrong_channel_count():
    with pytest.raises(BlindSRError):
        rgb_to_y(torch.rand(1, 1, 4, 4))
    with pytest.raises(BlindSRError):
        rgb_to_ycbcr(torch.rand(4, 4))
