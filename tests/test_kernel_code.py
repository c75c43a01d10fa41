"""The kernel-code degradation: batched per-sample blur + bicubic, sigma sampling, kernel codes."""

import pytest
import torch

from blindsr import degrade
from blindsr.degrade.kernel_code import (
    SIGMA_RANGE,
    SIGMA_RANGES,
    KernelCoder,
    blur_downsample,
    coder_for,
    coder_of_model,
    sample_sigma,
    sigma_range_for,
)
from blindsr.errors import BlindSRError


def smooth(rand_image, n=3, h=50, w=46, seed=0):
    return torch.nn.functional.avg_pool2d(rand_image(n, 3, h, w, seed=seed), 3, 1, 1)


def test_ranges_are_ikcs():
    assert SIGMA_RANGE == (0.2, 4.0) == sigma_range_for(4)
    assert SIGMA_RANGES[2] == (0.2, 2.0) and SIGMA_RANGES[3] == (0.2, 3.0)
    with pytest.raises(BlindSRError, match="no kernel sigma range for x8"):
        sigma_range_for(8)


def test_blur_downsample_matches_the_iso_preset(rand_image):
    hr = smooth(rand_image)  # 50 x 46: cropped to 48 x 44 like the preset
    want = degrade.apply(hr, "iso1.3", 4)
    exact = blur_downsample(hr, torch.full((3,), 1.3), 4, quantize=True)
    assert exact.shape == want.shape == (3, 3, 12, 11)
    assert torch.equal(exact, want)
    # unrounded: within the preset's two 8-bit roundings (0.5 level each, through bicubic)
    loose = blur_downsample(hr, 1.3, 4)
    assert (loose - want).abs().max() <= 1.2 / 255
    assert (loose - want).abs().max() > 0  # the float path really is unrounded


def test_each_sample_gets_its_own_sigma(rand_image):
    hr = smooth(rand_image, h=32, w=32)
    sigma = torch.tensor([0.3, 1.5, 3.7])
    batched = blur_downsample(hr, sigma, 4)
    for i in range(3):
        one = blur_downsample(hr[i:i + 1], float(sigma[i]), 4)
        torch.testing.assert_close(batched[i:i + 1], one, atol=1e-6, rtol=0)
    # more blur, less detail: the LR's high-frequency energy falls with sigma
    sharp = blur_downsample(rand_image(1, 3, 48, 48, seed=3).expand(3, -1, -1, -1), sigma, 4)
    energy = (sharp[..., 1:, :] - sharp[..., :-1, :]).square().mean(dim=(1, 2, 3))
    assert energy[0] > energy[1] > energy[2]


def test_blur_downsample_errors(rand_image):
    with pytest.raises(BlindSRError, match="sigma must have 1 or N = 2 values, got 3"):
        blur_downsample(rand_image(2), torch.ones(3), 4)
    with pytest.raises(BlindSRError, match="float N,C,H,W"):
        blur_downsample(torch.rand(3, 8, 8), 1.0, 2)


def test_sample_sigma_is_uniform_in_range_and_seeded():
    a = sample_sigma(2000, torch.Generator().manual_seed(1))
    b = sample_sigma(2000, torch.Generator().manual_seed(1), "cpu")
    assert torch.equal(a, b) and a.dtype == torch.float32 and a.shape == (2000,)
    assert a.min() >= 0.2 and a.max() <= 4.0
    assert abs(float(a.mean()) - 2.1) < 0.1 and float(a.std()) == pytest.approx(3.8 / 12**0.5,
                                                                                 rel=0.05)
    c = sample_sigma(100, torch.Generator().manual_seed(1), sigma_range=(0.2, 2.0))
    assert c.max() <= 2.0
    with pytest.raises(BlindSRError, match="0 < lo < hi"):
        sample_sigma(2, None, sigma_range=(2.0, 1.0))


def test_sigma_coder_round_trip():
    coder = KernelCoder("sigma")
    sigma = torch.tensor([0.2, 2.1, 4.0, 1.234])
    code = coder.encode(sigma)
    assert coder.code_dim == 1 and code.shape == (4, 1)
    torch.testing.assert_close(code[:3, 0], torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(coder.decode(code), sigma)
    assert coder.decode(torch.tensor([[1.7], [-0.2]])).tolist() == pytest.approx([4.0, 0.2])


def test_pca_coder_round_trip_and_determinism():
    coder = KernelCoder("pca", dim=10)
    sigma = sample_sigma(50, torch.Generator().manual_seed(2))
    code = coder.encode(sigma)
    assert coder.code_dim == 10 and code.shape == (50, 10)
    assert (coder.decode(code) - sigma).abs().max() < 1e-3
    assert torch.equal(KernelCoder("pca", dim=10).encode(sigma), code)
    # principal axes in order of variance; the first is monotone in sigma
    grid = coder.encode(torch.linspace(0.2, 4.0, 39))
    spread = grid.std(dim=0)
    assert torch.all(spread[:-1] > spread[1:]) and spread[0] > 3 * spread[1]
    assert torch.all(grid[1:, 0] < grid[:-1, 0])
    # a noisy code still decodes to a nearby sigma
    noisy = code + 1e-3 * torch.randn(code.shape, generator=torch.Generator().manual_seed(0))
    assert (coder.decode(noisy) - sigma).abs().mean() < 0.1


def test_pca_encode_is_differentiable():
    sigma = torch.tensor([1.0, 2.0], requires_grad=True)
    KernelCoder("pca", dim=4).encode(sigma).sum().backward()
    assert sigma.grad is not None and torch.isfinite(sigma.grad).all()


def test_coder_errors():
    with pytest.raises(BlindSRError, match="kind must be sigma or pca"):
        KernelCoder("gauss")
    with pytest.raises(BlindSRError, match="dim must be an integer"):
        KernelCoder("pca", dim=0)
    with pytest.raises(BlindSRError, match=r"codes must be \(N, 10\)"):
        KernelCoder("pca").decode(torch.zeros(3, 1))
    with pytest.raises(BlindSRError, match="sigmas must be > 0"):
        KernelCoder("pca").encode(torch.tensor([0.0]))


def test_pca_codes_of_length_one_are_refused():
    with pytest.raises(BlindSRError, match="PCA kernel codes need dim >= 2"):
        KernelCoder("pca", dim=1)
    assert KernelCoder("sigma", dim=1).code_dim == 1  # dim is ignored for sigma codes
    assert coder_for(1).kind == "sigma" and coder_for(2).kind == "pca"
    assert coder_for(7, (0.5, 3.0)).code_dim == 7
    assert coder_for(7, (0.5, 3.0)).sigma_range == (0.5, 3.0)


def test_code_box_spans_the_codes_of_the_range():
    assert KernelCoder("sigma").box().tolist() == [[0.0], [1.0]]
    coder = KernelCoder("pca", dim=4, sigma_range=(0.5, 3.0))
    box = coder.box()
    assert box.shape == (2, 4) and box.dtype == torch.float32
    assert torch.all(box[1] > box[0])
    inside = coder.encode(sample_sigma(200, torch.Generator().manual_seed(0),
                                       sigma_range=(0.5, 3.0)))
    assert torch.all(inside >= box[0] - 1e-5) and torch.all(inside <= box[1] + 1e-5)
    wider = KernelCoder("pca", dim=4, sigma_range=(0.2, 4.0)).box()
    assert not torch.allclose(wider, box)


def test_coder_of_model_reads_the_recorded_units():
    model = torch.nn.Module()
    model.code_dim = 3
    model.register_buffer("sigma_range", torch.full((2,), float("nan")))
    with pytest.raises(BlindSRError, match="no recorded kernel-code units"):
        coder_of_model(model)
    model.sigma_range.copy_(torch.tensor([0.3, 2.7]))  # float32: 0.30000001...
    coder = coder_of_model(model)
    assert coder.kind == "pca" and coder.code_dim == 3 and coder.sigma_range == (0.3, 2.7)
    with pytest.raises(BlindSRError, match="not a kernel-modulated model"):
        coder_of_model(torch.nn.Linear(1, 1))
