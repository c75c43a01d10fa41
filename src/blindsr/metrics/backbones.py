"""Frozen ImageNet feature extractors (AlexNet, VGG16, VGG19) as plain modules.

Layer indices follow torchvision's ``features`` so that torchvision-format state dicts
(``features.N.weight``) load directly. AlexNet and VGG16 come from the verified assets; VGG19 from
a weight file the user supplies. Built networks are cached per (weights, device), frozen and in
eval mode: they carry no gradient of their own but are differentiable with respect to the input.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from blindsr.assets import load_asset, load_weights_file
from blindsr.checks import check_crop_border
from blindsr.errors import BlindSRError
from blindsr.metrics.psnr_ssim import _levels

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_VGG_CFG = {
    "vgg16": (2, 2, 3, 3, 3),  # convs per block
    "vgg19": (2, 2, 4, 4, 4),
}


def vgg_layer_names(arch: str = "vgg16") -> list[str]:
    """Names of the ``features`` modules in order: ``conv1_1, relu1_1, ..., pool5``."""
    if arch not in _VGG_CFG:
        raise BlindSRError(f"unknown VGG {arch!r}; choose one of {', '.join(_VGG_CFG)}")
    names = []
    for b, n in enumerate(_VGG_CFG[arch], start=1):
        for i in range(1, n + 1):
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
        names.append(f"pool{b}")
    return names


class VGGFeatures(nn.Module):
    """VGG ``features`` (torchvision layout) returning named activations.

    ``pool`` builds the module used at each pooling position from its channel count (default:
    2x2 max pooling); DISTS swaps in L2 pooling this way.
    """

    def __init__(self, arch: str = "vgg16", pool: Callable[[int], nn.Module] | None = None):
        super().__init__()
        self.arch = arch
        self.names = vgg_layer_names(arch)
        layers: list[nn.Module] = []
        channels, width = 3, 64
        for name in self.names:
            if name.startswith("conv"):
                width = min(64 * 2 ** (int(name[4]) - 1), 512)
                layers.append(nn.Conv2d(channels, width, 3, padding=1))
                channels = width
            elif name.startswith("relu"):
                layers.append(nn.ReLU())
            else:
                layers.append(pool(channels) if pool else nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)

    def forward(self, x: Tensor, layers: Sequence[str]) -> dict[str, Tensor]:
        """Activations at ``layers`` (names from :func:`vgg_layer_names`); stops at the deepest."""
        wanted = set(layers)
        unknown = wanted.difference(self.names)
        if unknown:
            raise BlindSRError(f"{self.arch} has no layer(s) {', '.join(sorted(unknown))}")
        last = max(self.names.index(n) for n in wanted)
        out = {}
        for name, module in zip(self.names[: last + 1], self.features, strict=False):
            x = module(x)
            if name in wanted:
                out[name] = x
        return out


class AlexNetFeatures(nn.Module):
    """torchvision AlexNet ``features`` up to relu5, returning the five ReLU outputs."""

    TAPS = (1, 4, 7, 9, 11)

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        out = []
        for i, module in enumerate(self.features):
            x = module(x)
            if i in self.TAPS:
                out.append(x)
        return out


def load_features(module: nn.Module, state: dict[str, Tensor], source: str) -> nn.Module:
    """Load the ``features.*`` entries of a torchvision-format ``state`` into ``module``.

    Other entries (classifier, LPIPS heads) are ignored; bare ``N.weight`` keys are accepted.
    """
    own = module.state_dict()
    feats = {}
    for key, value in state.items():
        k = key if key.startswith("features.") else f"features.{key}"
        if k in own:
            feats[k] = value
    missing = sorted(set(own) - set(feats))
    if missing:
        raise BlindSRError(f"{source}: missing {len(missing)} weight(s), e.g. {missing[0]}")
    bad = [k for k in feats if feats[k].shape != own[k].shape]
    if bad:
        raise BlindSRError(
            f"{source}: {bad[0]} has shape {tuple(feats[bad[0]].shape)}, expected "
            f"{tuple(own[bad[0]].shape)} (wrong architecture?)"
        )
    module.load_state_dict(feats, strict=False)
    return module


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode, no parameter gradients."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


_CACHE: dict[tuple, nn.Module] = {}
_LOCK = threading.Lock()


def cached(key: tuple, device: torch.device | str, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` once per (key, device): frozen, float32, on ``device``; shared afterwards."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    with _LOCK:
        if (key, dev) not in _CACHE:
            _CACHE[(key, dev)] = freeze(build()).to(dev, torch.float32)
        return _CACHE[(key, dev)]


def weights_key(weights: str | os.PathLike[str] | None) -> str | None:
    """A cache key for an optional user weight file (its resolved path)."""
    return None if weights is None else str(os.path.realpath(os.path.expanduser(weights)))


def weights_state(asset: str, weights: str | os.PathLike[str] | None) -> dict[str, Tensor]:
    """The tensors of ``weights`` (a user file) if given, else of the verified ``asset``."""
    return load_weights_file(weights) if weights is not None else load_asset(asset)


def vgg(
    arch: str = "vgg16",
    device: torch.device | str = "cpu",
    weights: str | os.PathLike[str] | None = None,
) -> VGGFeatures:
    """A frozen, cached VGG feature extractor.

    VGG16 uses the asset weights unless ``weights`` (a torchvision-format state dict file) is
    given; VGG19 always needs ``weights`` (e.g. torchvision's ``vgg19-dcbb9e9d.pth``).
    """
    if arch == "vgg19" and weights is None:
        raise BlindSRError(
            "VGG19 weights are not among the assets: pass the path of a torchvision-format "
            "VGG19 state dict (e.g. vgg19-dcbb9e9d.pth), or use vgg16"
        )
    vgg_layer_names(arch)  # validates arch

    def build() -> nn.Module:
        source = str(weights) if weights is not None else f"asset {arch}"
        with torch.random.fork_rng(devices=[]):  # every weight is loaded below
            features = VGGFeatures(arch)
        return load_features(features, weights_state("vgg16", weights), source)

    return cached(("vgg", arch, weights_key(weights)), device, build)


def as_image_pair(x, y, crop_border: int, name: str, min_side: int = 1
                  ) -> tuple[Tensor, Tensor]:
    """Inputs of the feature-based metrics: two float32 3-channel NCHW batches in [0, 1].

    ``x``/``y``: uint8 HxW(xC) numpy arrays or NCHW/CHW tensors (float in [0, 1] or uint8),
    brought to 8-bit levels as :func:`blindsr.metrics.psnr` does (scores then equal those of the
    saved images); gray is repeated to RGB; ``crop_border`` pixels are removed on every side,
    after which both sides must be at least ``min_side`` (the network's smallest input).
    """
    a, b = _levels(x, name), _levels(y, name)
    if a.shape != b.shape:
        raise BlindSRError(f"{name}: image shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.shape[1] not in (1, 3):
        raise BlindSRError(f"{name}: images must have 1 or 3 channels, got {a.shape[1]}")
    c = check_crop_border(crop_border, name)
    if c:
        if 2 * c >= min(a.shape[-2:]):
            raise BlindSRError(f"{name}: crop_border {c} leaves nothing of {tuple(a.shape[-2:])}")
        a, b = a[..., c:-c, c:-c], b[..., c:-c, c:-c]
    if min(a.shape[-2:]) < min_side:
        h, w = a.shape[-2:]
        raise BlindSRError(f"{name}: needs images of at least {min_side}x{min_side} pixels"
                           f"{' after crop_border' if c else ''}, got {h}x{w}")
    a, b = (t.to(torch.float32).div_(255).expand(-1, 3, -1, -1) for t in (a, b.to(a.device)))
    return a, b


@contextlib.contextmanager
def exact_fp32(device: torch.device) -> Iterator[None]:
    """Disable TF32 convolutions/matmuls on CUDA for the duration (metric values stay exact)."""
    if device.type != "cuda":
        yield
        return
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm


__all__ = [
    "AlexNetFeatures", "IMAGENET_MEAN", "IMAGENET_STD", "VGGFeatures", "as_image_pair", "cached",
    "exact_fp32", "freeze", "load_features", "vgg", "vgg_layer_names", "weights_key",
    "weights_state",
]
