"""Pure tensor functions (no state): batched, on NCHW float tensors in [0, 1], CPU or CUDA."""

from blindsr.ops.blurpool import BlurPool, binomial_kernel, blurpool
from blindsr.ops.color import rgb_to_y, rgb_to_ycbcr, ycbcr_to_rgb
from blindsr.ops.jpeg import jpeg
from blindsr.ops.kernels import (
    filter2d,
    gaussian_kernel,
    generalized_gaussian_kernel,
    plateau_kernel,
    pulse_kernel,
    sinc_kernel,
)
from blindsr.ops.noise import gaussian_noise, poisson_noise
from blindsr.ops.resize import imresize

__all__ = [
    "BlurPool", "binomial_kernel", "blurpool", "filter2d", "gaussian_kernel", "gaussian_noise",
    "generalized_gaussian_kernel", "imresize", "jpeg", "plateau_kernel", "poisson_noise",
    "pulse_kernel", "rgb_to_y", "rgb_to_ycbcr", "sinc_kernel", "ycbcr_to_rgb",
]
