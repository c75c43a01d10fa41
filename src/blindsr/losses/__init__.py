"""Training losses: pixel (L1, L2, Charbonnier) and perceptual (VGG, LPIPS, DISTS)."""

from blindsr.losses.perceptual import DISTSLoss, LPIPSLoss, PerceptualLoss
from blindsr.losses.pixel import PIXEL_LOSSES, charbonnier_loss, l1_loss, l2_loss, pixel_loss

__all__ = ["PIXEL_LOSSES", "DISTSLoss", "LPIPSLoss", "PerceptualLoss", "charbonnier_loss",
           "l1_loss", "l2_loss", "pixel_loss"]
