"""NIQE: agreement with the MATLAB release on the calibration images, its pieces, properties."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from blindsr.assets import IndexUnreachableError, fetch, load_asset
from blindsr.errors import BlindSRError
from blindsr.metrics import get_metric, niqe
from blindsr.metrics.niqe import aggd_fit, gaussian_window, mscn, to_gray_levels

IDS = ("I03", "I04", "I06", "I08", "I19")
# MATLAB NIQE release (computequality.m, rgb2gray input, its pristine model) on the distorted
# calibration images, as IQA-PyTorch records it (ResultsCalibra/results_original.csv).
MATLAB = (15.7536293917814, 3.65492152353770, 3.23547743716998, 3.18403333858339,
          8.63519663862637)
OURS = (15.745958, 3.654922, 3.234328, 3.202014, 8.665483)  # committed, convert_to="gray"


@pytest.fixture(scope="module")
def params():
    try:
        fetch(["niqe"])
    except IndexUnreachableError as err:
        pytest.skip(f"package index unreachable and no cached NIQE parameters: {err}")


@pytest.fixture
def distorted(params, shared):
    base = shared / "calibration" / "dist"
    arrays = [np.asarray(Image.open(base / f"{i}.png").convert("RGB")) for i in IDS]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def test_matches_matlab_release(distorted):
    scores = niqe(distorted)
    assert scores.dtype == torch.float64 and scores.shape == (5,)
    for got, want in zip(scores.tolist(), MATLAB, strict=True):
        assert abs(got - want) <= 0.15
    np.testing.assert_allclose(scores.numpy(), OURS, atol=1e-5)


def test_y_channel_and_properties(distorted):
    img = distorted[1:2]  # I04, a mildly distorted natural image
    base = niqe(img).item()
    assert abs(niqe(img, convert_to="y").item() - base) > 0.01  # a different luma
    blurred = torch.nn.functional.avg_pool2d(img.double() / 255, 5, 1, 2, count_include_pad=False)
    assert niqe(blurred).item() > base + 1
    noisy = (img.double() / 255 + torch.randn(img.shape, generator=torch.Generator().manual_seed(0),
                                              dtype=torch.float64) * 0.08).clamp(0, 1)
    assert niqe(noisy).item() > base + 1


def _aggd_reference(vec):
    """The MATLAB release's estimateaggdparam, one vector at a time."""
    gam = np.arange(9801) * 0.001 + 0.2
    r_gam = np.array([math.gamma(2 / g) ** 2 / (math.gamma(1 / g) * math.gamma(3 / g))
                      for g in gam])
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.sqrt(np.mean(vec[vec < 0] ** 2)) if (vec < 0).any() else np.nan
        right = np.sqrt(np.mean(vec[vec > 0] ** 2)) if (vec > 0).any() else np.nan
        g = left / right
        rhat = np.mean(np.abs(vec)) ** 2 / np.mean(vec**2)
        rnorm = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
        alpha = gam[np.nanargmin((r_gam - rnorm) ** 2)] if np.isfinite(rnorm) else gam[0]
    c = math.sqrt(math.gamma(1 / alpha) / math.gamma(3 / alpha))
    return alpha, left * c, right * c


def test_aggd_fit_matches_scalar_reference():
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(6, 500, generator=gen, dtype=torch.float64)
    rows[1] = rows[1] ** 3  # heavy tails
    rows[2] = rows[2].abs() * torch.sign(rows[2]) ** 2 * 0.1 - 0.02  # skewed
    rows[3] = rows[3].abs()  # no negatives: NaN left scale, shape 0.2 as in MATLAB
    rows[4] = 0  # flat
    rows[5] = torch.rand(500, generator=gen, dtype=torch.float64) - 0.5  # light tails
    shape, left, right, _ = aggd_fit(rows)
    for k in range(6):
        want = _aggd_reference(rows[k].numpy())
        np.testing.assert_allclose([shape[k], left[k], right[k]], want, rtol=1e-9, equal_nan=True)
    assert shape[3] == pytest.approx(0.2) and torch.isnan(left[3])
    assert 1.5 < shape[0] < 2.5  # a Gaussian's shape is 2


def test_pieces_follow_matlab(params):
    torch.testing.assert_close(gaussian_window(), load_asset("niqe")["gaussian_window"])
    rgb = torch.tensor([[255.0, 0, 0], [0, 255, 0], [0, 0, 255], [10, 200, 30]]).T[None, :, None]
    gray = to_gray_levels(rgb, "gray").flatten().tolist()
    assert gray == [76.0, 150.0, 29.0, 124.0]  # MATLAB rgb2gray(uint8([...]))
    assert to_gray_levels(rgb, "y").flatten().tolist() == [81.0, 145.0, 41.0, 122.0]
    flat = torch.full((1, 1, 20, 20), 77.0, dtype=torch.float64)
    assert (mscn(flat) == 0).all()  # no rounding residue in flat areas


def test_input_forms_and_crop(params, rand_image):
    x = rand_image(2, 3, 200, 210, seed=3)
    batch = niqe(x)
    assert torch.isfinite(batch).all()
    torch.testing.assert_close(batch[1:], niqe(x[1:]))
    u8 = (x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    torch.testing.assert_close(niqe(u8), batch[:1])
    gray = to_gray_levels((x[:1] * 255).round().double(), "gray") / 255
    torch.testing.assert_close(niqe(gray), batch[:1])
    torch.testing.assert_close(niqe(x, crop_border=5), niqe(x[..., 5:-5, 5:-5]))
    x[0] = 0.5  # flat: no finite features -> NaN (as MATLAB), the other image unaffected
    flat_and_not = niqe(x)
    assert torch.isnan(flat_and_not[0]) and flat_and_not[1] == batch[1]
    with pytest.raises(BlindSRError, match="96x96"):
        niqe(x, crop_border=60)
    with pytest.raises(BlindSRError, match="convert_to"):
        niqe(x, convert_to="lab")


def test_registered_as_no_reference():
    m = get_metric("niqe")
    assert m.fn is niqe and m.lower_better and not m.full_reference
