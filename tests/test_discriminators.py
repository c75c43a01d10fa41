"""Discriminators: U-Net with spectral norm (per-pixel logits) and VGG-style (one logit)."""

import pytest
import torch

from blindsr import archs
from blindsr.archs.discriminators import (
    DISCRIMINATORS,
    UNetDiscriminatorSN,
    VGGStyleDiscriminator,
    build_discriminator,
)
from blindsr.errors import BlindSRError


def test_unet_gives_per_pixel_logits_with_spectral_norm():
    torch.manual_seed(0)
    d = build_discriminator("unet", num_feat=4)
    assert isinstance(d, UNetDiscriminatorSN)
    x = torch.rand(2, 3, 32, 24)
    out = d(x)
    assert out.shape == (2, 1, 32, 24)
    sn = [n for n, _ in d.named_parameters() if "parametrizations" in n]
    assert len(sn) == 8  # 3 down, 3 up, 2 refining convs
    # spectral norm keeps every normalised weight's largest singular value at ~1
    d.train()
    for _ in range(30):  # power iterations converge
        d(x)
    d.eval()
    w = d.up[0].weight.flatten(1)
    assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=0.05)
    out.mean().backward()
    assert d.down[0].parametrizations.weight.original.grad is not None


def test_unet_without_skips_and_size_check():
    d = UNetDiscriminatorSN(num_feat=4, skip_connection=False)
    assert d(torch.rand(1, 3, 16, 16)).shape == (1, 1, 16, 16)
    with pytest.raises(BlindSRError, match="multiples of 8, got 20x16"):
        d(torch.rand(1, 3, 20, 16))


def test_vgg_style_gives_one_logit_per_image():
    d = build_discriminator("vgg", num_feat=4, input_size=64)
    assert isinstance(d, VGGStyleDiscriminator)
    assert d(torch.rand(2, 3, 64, 64)).shape == (2, 1)
    with pytest.raises(BlindSRError, match="input_size=64\\) got 32x32"):
        d(torch.rand(2, 3, 32, 32))
    with pytest.raises(BlindSRError, match="multiple of 32, got 48"):
        VGGStyleDiscriminator(input_size=48)


def test_builder_errors_and_not_a_generator_arch():
    assert set(DISCRIMINATORS) == {"unet", "vgg", "realness"}
    assert not set(DISCRIMINATORS) & set(archs.ARCHS)
    with pytest.raises(BlindSRError, match="unknown discriminator 'patch'; known: unet, vgg"):
        build_discriminator("patch")
    with pytest.raises(BlindSRError, match="unknown argument\\(s\\) width; allowed: num_in_ch"):
        build_discriminator("unet", width=3)
