"""GAN losses: vanilla (non-saturating BCE) and relativistic average, against their formulas."""

import math

import pytest
import torch

from blindsr.errors import BlindSRError
from blindsr.losses.gan import GAN_LOSSES, GANLoss, RelativisticAverageGAN, VanillaGAN, get_gan_loss


def bce(logits, target):
    p = torch.sigmoid(logits)
    return -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g) - 0.5


def test_registry_and_errors():
    assert set(GAN_LOSSES) == {"vanilla", "ragan"}
    assert isinstance(get_gan_loss("ragan"), RelativisticAverageGAN)
    assert all(issubclass(c, GANLoss) for c in GAN_LOSSES.values())
    with pytest.raises(BlindSRError, match="unknown GAN loss 'wgan'; known: vanilla, ragan"):
        get_gan_loss("wgan")
    with pytest.raises(BlindSRError, match="needs D\\(real\\)"):
        RelativisticAverageGAN().generator(torch.zeros(2, 1))


def test_vanilla_is_binary_cross_entropy(logits):
    real, fake = logits
    loss = VanillaGAN()
    assert not loss.needs_real
    torch.testing.assert_close(loss.generator(fake), bce(fake, 1.0))
    torch.testing.assert_close(loss.discriminator(real, fake), bce(real, 1.0) + bce(fake, 0.0))
    # at D = 0 both terms are log 2
    z = torch.zeros(4, 1)
    assert loss.discriminator(z, z).item() == pytest.approx(2 * math.log(2))


def test_relativistic_average(logits):
    real, fake = logits
    loss = RelativisticAverageGAN()
    assert loss.needs_real
    want_g = 0.5 * (bce(real - fake.mean(), 0.0) + bce(fake - real.mean(), 1.0))
    want_d = 0.5 * (bce(real - fake.mean(), 1.0) + bce(fake - real.mean(), 0.0))
    torch.testing.assert_close(loss.generator(fake, real), want_g)
    torch.testing.assert_close(loss.discriminator(real, fake), want_d)


@pytest.mark.parametrize("name", ["vanilla", "ragan"])
def test_gradients_push_the_right_way(logits, name):
    real, fake = (t.clone().requires_grad_(True) for t in logits)
    loss = get_gan_loss(name)
    loss.discriminator(real, fake).backward()
    assert real.grad.sum() < 0 < fake.grad.sum()  # D raises real logits, lowers fake ones
    fake2 = logits[1].clone().requires_grad_(True)
    loss.generator(fake2, logits[0]).backward()
    assert fake2.grad.sum() < 0  # G raises its logits
