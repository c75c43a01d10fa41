import pytest
import torch

from blindsr.errors import BlindSRError
from blindsr.losses import PIXEL_LOSSES, charbonnier_loss, l1_loss, l2_loss, pixel_loss


def test_losses_match_their_definitions(rand_image):
    a, b = rand_image(2, seed=1), rand_image(2, seed=2)
    d = a - b
    assert torch.allclose(l1_loss(a, b), d.abs().mean())
    assert torch.allclose(l2_loss(a, b), (d * d).mean())
    assert torch.allclose(charbonnier_loss(a, b, eps=0.1), torch.sqrt(d * d + 0.01).mean())
    for name in PIXEL_LOSSES:
        assert pixel_loss(name, a, a).item() == pytest.approx(1e-3 if name == "charbonnier" else 0)


def test_charbonnier_is_smooth_l1():
    a = torch.zeros(1, 3, 4, 4, requires_grad=True)
    far = torch.full((1, 3, 4, 4), 0.5)
    assert charbonnier_loss(a, far, eps=1e-6).item() == pytest.approx(0.5, abs=1e-5)
    charbonnier_loss(a, torch.zeros_like(far)).backward()  # finite gradient at zero error
    assert torch.isfinite(a.grad).all() and a.grad.abs().max() == 0


def test_bad_inputs_are_clear():
    with pytest.raises(BlindSRError, match="differ in shape"):
        l1_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(BlindSRError, match="unknown pixel loss 'l3'; known: l1, l2, charbonnier"):
        pixel_loss("l3", torch.zeros(1), torch.zeros(1))
