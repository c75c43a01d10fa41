"""AMNet: a kernel-modulated SR network (Hui, Li, Wang, Gao, "Learning the Non-differentiable
Optimization for Blind Super-Resolution", CVPR 2021) with its blur-kernel predictor.

The paper publishes no code and only sketches the layout; the choices below are ours:

- Body: an MSRResNet-like trunk (3x3 conv, LeakyReLU 0.1, ``num_block`` residual blocks without
  batch norm, pixel-shuffle upsampling: one stage for x2/x3, two x2 stages for x4, a 3x3 conv at
  HR and an output conv) plus a bilinear global skip, as :mod:`blindsr.archs.srresnet`.
- AMLayer (:class:`AMLayer`): a two-layer MLP (``code_dim -> am_hidden -> 2 num_feat``, ReLU)
  maps the kernel code to a per-channel scale ``1 + gamma`` and shift ``beta``:
  ``y = x * (1 + gamma) + beta``. Each residual block holds two: after its first conv (before
  the ReLU) and after its second conv (before the residual addition):
  ``x + am2(conv2(relu(am1(conv1(x)))))``. The MLP's last layer starts at 0.1x PyTorch's default
  initialisation, so modulation is mild (but present) at the start.
- Kernel predictor (:class:`KernelPredictor`, the actor ``mu(s)`` of AMNet-RL): LR -> code with
  four 3x3 convs (the 2nd and 4th with stride 2), LeakyReLU 0.1, global average pooling and a
  linear head. Its input is the LR minus its per-channel mean, times 4 (``INPUT_GAIN``): blur
  shows in the image's structure, not its brightness, and without this the predictor sat on
  the constant answer for hundreds of steps in our tests (with it, ~75 steps on a toy set).
  The code's kind follows from its length: ``code_dim == 1`` is the sigma code (in [0, 1]; the
  head is squashed by a sigmoid), ``code_dim >= 2`` a PCA code (linear head; see
  :class:`~blindsr.degrade.kernel_code.KernelCoder`, which refuses 1-D PCA codes).
- Code units, recorded as buffers so that ``load_model`` needs no config: ``sigma_range`` (2,)
  (the sigma range the codes span) and ``code_box`` (2, code_dim) (row 0 / row 1: the min / max
  of the codes of that range, :meth:`KernelCoder.box`). A new model holds NaN there ("not
  recorded"); the ``amnet`` / ``amgan`` strategies set them from their coder before training
  (:meth:`AMNet.record_code_units`; the EMA copy is made after, so it has them too), and the
  ``amrl`` strategy and ``benchmarks/amgan_eval.py`` build their coder from them
  (:func:`~blindsr.degrade.kernel_code.coder_of_model`). Checkpoints from before these buffers
  existed do not load (``missing: sigma_range, code_box``): none had shipped, so no fallback.
- ``forward(lr, code=None)``: without a code the predictor's estimate, clamped into
  ``code_box`` (a linear PCA head can leave the codes the renderer was trained on; NaN bounds
  clamp nothing), is used, or, for a model built with ``predictor_feat=0``, the
  ``default_code`` buffer (the code of the middle of the recorded sigma range; of IKC's range
  for the scale until units are recorded). So a trained AMNet works in ``blindsr upscale`` like
  any model. Tiled inference (:class:`blindsr.inference.Upscaler`) asks
  :meth:`AMNet.image_code` for one code of the whole image first (a centre crop of at most
  ``CODE_CROP`` LR pixels a side) and renders every tile with it, so tiles cannot disagree about
  the blur and leave seams. An explicit code (and :meth:`AMNet.render`) is used as given.

State-dict keys are distinct from MSRResNet's (``conv_in``, ``blocks``, ``up*``, ``conv_out``,
``default_code``) so that the registry's detection never confuses the two.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BlindSRError
from .common import (
    ArchSpec,
    StateDict,
    check_int,
    conv3x3,
    count_blocks,
    has_keys,
    scaled_kaiming_,
    shape_of,
)

NAME = "amnet"
SCALES = (2, 3, 4)
INPUT_GAIN = 4.0  # the predictor's input: (LR - its mean) x this
CODE_CROP = 512  # image_code: the largest LR crop side the whole-image code is predicted on


class AMLayer(nn.Module):
    """Per-channel affine modulation of features by a code: ``x * (1 + gamma) + beta``."""

    def __init__(self, num_feat: int, code_dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(code_dim, hidden)
        self.fc2 = nn.Linear(hidden, 2 * num_feat)
        with torch.no_grad():
            self.fc2.weight.mul_(0.1)
            self.fc2.bias.mul_(0.1)

    def forward(self, x: Tensor, code: Tensor) -> Tensor:
        """``x`` (N, C, H, W), ``code`` (N, code_dim)."""
        gamma, beta = self.fc2(F.relu(self.fc1(code))).to(x.dtype).chunk(2, dim=1)
        return x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


class AMBlock(nn.Module):
    """Residual block with two AMLayers: ``x + am2(conv2(relu(am1(conv1(x)))))``."""

    def __init__(self, num_feat: int, code_dim: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(num_feat, num_feat)
        self.am1 = AMLayer(num_feat, code_dim, hidden)
        self.conv2 = conv3x3(num_feat, num_feat)
        self.am2 = AMLayer(num_feat, code_dim, hidden)
        scaled_kaiming_([self.conv1, self.conv2], 0.1)

    def forward(self, x: Tensor, code: Tensor) -> Tensor:
        h = F.relu(self.am1(self.conv1(x), code))
        return x + self.am2(self.conv2(h), code)


class KernelPredictor(nn.Module):
    """LR (N, 3, H, W) -> kernel code (N, code_dim): a small CNN with global average pooling
    (sigmoid head for ``code_dim == 1``, linear head otherwise)."""

    def __init__(self, code_dim: int = 1, num_feat: int = 32) -> None:
        super().__init__()
        self.code_dim = code_dim
        self.convs = nn.ModuleList([
            nn.Conv2d(3, num_feat, 3, 1, 1), nn.Conv2d(num_feat, num_feat, 3, 2, 1),
            nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.Conv2d(num_feat, num_feat, 3, 2, 1)])
        self.head = nn.Linear(num_feat, code_dim)

    def forward(self, lr: Tensor) -> Tensor:
        x = (lr - lr.mean(dim=(-2, -1), keepdim=True)) * INPUT_GAIN
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
        out = self.head(x.mean(dim=(-2, -1)))
        return torch.sigmoid(out) if self.code_dim == 1 else out


def _middle_code(coder: Any) -> Tensor:
    """The code of the middle of the coder's sigma range (0.5 for the sigma coder)."""
    if coder.code_dim == 1:
        return torch.tensor([0.5])
    lo, hi = coder.sigma_range
    return coder.encode((lo + hi) / 2)[0].float()


def _default_code(code_dim: int, scale: int) -> Tensor:
    """The code of the middle of IKC's sigma range of ``scale``."""
    from blindsr.degrade.kernel_code import coder_for, sigma_range_for

    return _middle_code(coder_for(code_dim, sigma_range_for(scale)))


class AMNet(nn.Module):
    """Kernel-modulated SRResNet-like network with an optional kernel predictor (x2/x3/x4)."""

    arch_name = NAME

    def __init__(self, scale: int = 4, num_feat: int = 64, num_block: int = 16,
                 code_dim: int = 1, predictor_feat: int = 32, am_hidden: int = 32) -> None:
        super().__init__()
        check_int(NAME, "scale", scale, choices=SCALES)
        for name, value in (("num_feat", num_feat), ("num_block", num_block),
                            ("code_dim", code_dim), ("am_hidden", am_hidden)):
            check_int(NAME, name, value)
        check_int(NAME, "predictor_feat", predictor_feat, minimum=0)
        self.arch_kwargs: dict[str, Any] = {
            "scale": scale, "num_feat": num_feat, "num_block": num_block, "code_dim": code_dim,
            "predictor_feat": predictor_feat, "am_hidden": am_hidden}
        self.scale, self.code_dim = scale, code_dim
        self.conv_in = conv3x3(3, num_feat)
        self.blocks = nn.ModuleList(AMBlock(num_feat, code_dim, am_hidden)
                                    for _ in range(num_block))
        stage = 2 if scale == 4 else scale
        self.up1 = conv3x3(num_feat, num_feat * stage * stage)
        self.up2 = conv3x3(num_feat, num_feat * 4) if scale == 4 else None
        self.pixel_shuffle = nn.PixelShuffle(stage)
        self.conv_hr = conv3x3(num_feat, num_feat)
        self.conv_out = conv3x3(num_feat, 3)
        heads = [self.conv_in, self.up1, self.up2, self.conv_hr, self.conv_out]
        scaled_kaiming_([m for m in heads if m is not None], 0.1)
        self.predictor = KernelPredictor(code_dim, predictor_feat) if predictor_feat else None
        self.register_buffer("default_code", _default_code(code_dim, scale))
        self.register_buffer("sigma_range", torch.full((2,), math.nan))
        self.register_buffer("code_box", torch.full((2, code_dim), math.nan))

    def record_code_units(self, coder: Any) -> None:
        """Record the units of the codes (a :class:`~blindsr.degrade.kernel_code.KernelCoder`
        of this model's code length): ``sigma_range``, ``code_box`` and ``default_code``."""
        if coder.code_dim != self.code_dim:
            raise BlindSRError(f"amnet: the {coder.kind} coder gives {coder.code_dim}-D codes, "
                               f"the model takes code_dim={self.code_dim}")
        with torch.no_grad():
            self.sigma_range.copy_(torch.tensor(coder.sigma_range, dtype=torch.float64))
            self.code_box.copy_(coder.box())
            self.default_code.copy_(_middle_code(coder))

    def code_units_recorded(self) -> bool:
        """Whether ``sigma_range`` / ``code_box`` were set (by an amnet / amgan training)."""
        return bool(torch.isfinite(self.sigma_range).all())

    def kernel_coder(self) -> Any:
        """The :class:`~blindsr.degrade.kernel_code.KernelCoder` of the recorded units."""
        from blindsr.degrade.kernel_code import coder_of_model

        return coder_of_model(self)

    def clamp_code(self, code: Tensor) -> Tensor:
        """``code`` clamped into ``code_box`` per dimension (unchanged while it is NaN)."""
        low, high = self.code_box.to(code.dtype)  # where, not fmax/fmin: ONNX has these
        code = torch.where(low.isnan(), code, torch.maximum(code, low))
        return torch.where(high.isnan(), code, torch.minimum(code, high))

    def _code(self, lr: Tensor, code: Tensor | None) -> Tensor:
        n = lr.shape[0]
        if code is None:
            if self.predictor is not None:
                return self.clamp_code(self.predictor(lr))
            return self.default_code.to(lr.dtype).expand(n, -1)
        if not isinstance(code, Tensor) or code.ndim != 2 or code.shape[1] != self.code_dim \
                or code.shape[0] not in (1, n):
            shape = tuple(code.shape) if isinstance(code, Tensor) else type(code).__name__
            raise BlindSRError(f"amnet: code must be (N={n}, {self.code_dim}) or "
                               f"(1, {self.code_dim}), got {shape}")
        return code.to(lr.device, lr.dtype).expand(n, -1)

    def forward(self, lr: Tensor, code: Tensor | None = None) -> Tensor:
        """(N, 3, H, W) LR and (N, code_dim) codes (None: predicted / default) -> SR."""
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise BlindSRError(f"amnet expects an N,3,H,W batch, got {tuple(lr.shape)}")
        c = self._code(lr, code)
        out = F.leaky_relu(self.conv_in(lr), 0.1)
        for block in self.blocks:
            out = block(out, c)
        out = F.leaky_relu(self.pixel_shuffle(self.up1(out)), 0.1)
        if self.up2 is not None:
            out = F.leaky_relu(self.pixel_shuffle(self.up2(out)), 0.1)
        out = self.conv_out(F.leaky_relu(self.conv_hr(out), 0.1))
        base = F.interpolate(lr, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return out + base

    def image_code(self, lr: Tensor) -> Tensor:
        """(1, code_dim): the code for a whole (1, 3, H, W) LR image, predicted on its centre
        crop of at most ``CODE_CROP`` pixels a side (the default code without a predictor)."""
        h, w = lr.shape[-2:]
        top, left = max(0, (h - CODE_CROP) // 2), max(0, (w - CODE_CROP) // 2)
        return self._code(lr[:1, :, top:top + CODE_CROP, left:left + CODE_CROP], None)

    def render(self, lr: Tensor, code: Tensor) -> Tensor:
        """SR of ``lr`` under an explicit kernel ``code`` (the renderer of AMNet-RL)."""
        if code is None:
            raise BlindSRError("amnet.render needs a code; call the model itself to predict one")
        return self.forward(lr, code)


def detect(sd: StateDict) -> bool:
    """AMNet weights: conv_in, AMLayers in ``blocks``, up1, conv_out and default_code."""
    return has_keys(sd, "conv_in.weight", "blocks.0.am1.fc1.weight", "up1.weight",
                    "conv_out.weight", "default_code")


def kwargs_from_state_dict(sd: StateDict) -> dict[str, Any]:
    """Read every constructor argument back from tensor shapes."""
    num_feat = shape_of(sd, "conv_in.weight")[0]
    am_hidden, code_dim = shape_of(sd, "blocks.0.am1.fc1.weight")
    if "up2.weight" in sd:
        scale = 4
    else:
        ratio = shape_of(sd, "up1.weight")[0] // num_feat
        scale = {4: 2, 9: 3}.get(ratio, 0)
        if scale == 0:
            raise BlindSRError(f"amnet: up1 has {ratio}x num_feat channels, expected 4 or 9")
    predictor_feat = sd["predictor.head.weight"].shape[1] if "predictor.head.weight" in sd else 0
    return {"scale": scale, "num_feat": num_feat, "num_block": count_blocks(sd, "blocks"),
            "code_dim": code_dim, "predictor_feat": predictor_feat, "am_hidden": am_hidden}


SPEC = ArchSpec(
    name=NAME,
    constructor=AMNet,
    detect=detect,
    kwargs_from_state_dict=kwargs_from_state_dict,
    description="AMNet (CVPR 2021): kernel-code-modulated residual blocks + kernel predictor; "
                "x2/x3/x4",
)
