"""AND's neural degradation (Luo, Wu, Guo, NeurIPS 2023): an identity-initialised network whose
parameters are perturbed, adversarially (PGD) or at random, inside a ball of a scaled L2 norm.

:class:`NeuralDegradation` maps an HR batch to an LR batch: five basic blocks [3x3 conv ->
LeakyReLU with a learnable per-channel negative slope -> noise injection], one BlurPool with the
SR scale as stride, five more basic blocks and a final 3x3 conv (3 channels in and out).

Design choices the paper leaves open:

- **No biases.** A bias would let the attack shift a whole colour channel, and the identity needs
  them zero anyway; the perturbed parameters are exactly the paper's three kinds.
- **Reflect padding** in the convs (as the BlurPool), so perturbed kernels do not darken borders.
- **Registration.** The BlurPool centres LR pixel ``i`` on HR ``scale * i + (scale - 1) / 2``, as
  bicubic LR (4 taps at even scales, 5 at odd ones; see :mod:`blindsr.ops.blurpool`).
- **Noise maps** are one N(0, 1) map per sample and block, shared by the channels and scaled by a
  per-channel strength (StyleGAN's noise injection); drawn by :meth:`NeuralDegradation.sample_noise`
  from a caller's generator and kept fixed during an attack.
- **Xavier uniform** for the random matrices (1x1 fan mode for the identity: fans = channels).

The perturbation set (:class:`Ball`) is ``||delta||_s <= epsilon`` with
``||delta||_s^2 = sum_kind (factor_kind * ||delta_kind||_2)^2`` (conv x1, noise x10, slope x50),
conv deviations being measured in units of each layer's He scale ``1/sqrt(fan_in)`` (see
:class:`Ball`). The paper does not publish its parameter units: here, as with raw units, its
epsilon = 20 lets the attack saturate the LR to a flat colour; the CPU configs in
``configs/and/`` use a radius measured to give visible but not destroyed LR.

**Flat colour is kept** (``Ball.keep_flat_colour``, on by default; not in the paper). Left free,
the attack spends its whole budget on conv taps that move together, which acts on the image as a
random global 3x3 colour matrix per step: at the CPU configs' radii a per-image colour fit
undid all but ~5 % of the change it made to the LR, with no measurable blur and no noise. No
restorer can undo a random colour cast, so ANDNet learnt to hedge (below bicubic even on its
identity LR). With the flag, each conv kernel's deviation sums to zero over its taps for every
(output, input) pair (gradients and random deltas are projected onto that subspace), so a flat
colour passes through the perturbed network unchanged and the budget goes to spatial effects
(blur, ringing, noise-like texture) and the slopes' colour non-linearity.
:func:`pgd` and :func:`random_perturbation` work in the scaled coordinates ``u = factor * delta``,
where the ball is round: a PGD step moves ``u`` by ``alpha`` along the normalised gradient with
respect to ``u`` and projects by rescaling. Parameters are never changed in place: perturbed
parameters are dicts passed through :func:`torch.func.functional_call` (see :func:`run`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from blindsr.errors import BlindSRError
from blindsr.ops.blurpool import BlurPool, centred_taps

KINDS = ("conv", "noise", "slope")
Params = dict[str, Tensor]


class NoiseInjection(nn.Module):
    """``x + strength[c] * noise``: a per-pixel noise map (N, 1, H, W) scaled per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        if noise is None:
            return x
        # addcmul keeps x's memory format: ``x + w * noise`` first makes an NCHW product, and
        # adding it to a channels-last x is several times slower (7-15x measured) than this
        return torch.addcmul(x, noise.to(x.dtype), self.weight.view(1, -1, 1, 1).to(x.dtype))


class BasicBlock(nn.Module):
    """3x3 conv (no bias, reflect padding) -> LeakyReLU with per-channel slopes -> noise."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, padding_mode="reflect", bias=False)
        self.act = nn.PReLU(out_ch, init=1.0)  # a LeakyReLU whose negative slope is a parameter
        self.noise = NoiseInjection(out_ch)

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        return self.noise(self.act(self.conv(x)), noise)


def _xavier(rows: int, cols: int, fan_sum: int, generator: torch.Generator | None) -> Tensor:
    """A (rows, cols) Xavier-uniform float32 CPU matrix: bound ``sqrt(6 / (fan_in + fan_out))``."""
    u = torch.rand(rows, cols, generator=generator, dtype=torch.float64)
    return ((u * 2 - 1) * math.sqrt(6.0 / fan_sum)).float()


def _cpu_generator(generator: torch.Generator | None) -> torch.Generator | None:
    if generator is not None and generator.device.type != "cpu":
        raise BlindSRError("NeuralDegradation draws its random weights from a CPU generator")
    return generator


def default_taps(scale: int) -> int:
    """BlurPool taps that keep LR pixels centred at ``scale``: 4 for even scales, 5 for odd
    (at x6 and x8 the 4 taps cover only part of each block: pass 6 for more anti-aliasing)."""
    return 4 if scale % 2 == 0 else 5


class NeuralDegradation(nn.Module):
    """HR (N, 3, H, W) -> LR (N, 3, ceil(H/scale), ceil(W/scale)); equals BlurPool after
    :meth:`identity_` (the constructor calls it with the global RNG)."""

    def __init__(self, scale: int = 4, channels: int = 64, blocks: int = 5,
                 taps: int | None = None) -> None:
        super().__init__()
        for name, v in (("scale", scale), ("channels", channels), ("blocks", blocks)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise BlindSRError(f"NeuralDegradation: {name} must be a positive integer, "
                                   f"got {v!r}")
        taps = default_taps(scale) if taps is None else taps
        if not centred_taps(taps, scale):  # LR would be off by half an HR pixel
            raise BlindSRError(f"NeuralDegradation: {taps} BlurPool taps at x{scale} do not keep "
                               f"LR pixels centred; use {default_taps(scale)} (taps - scale even)")
        self.scale, self.channels = scale, channels
        self.head = nn.ModuleList(BasicBlock(3 if i == 0 else channels, channels)
                                  for i in range(blocks))
        self.pool = BlurPool(scale, taps)
        self.tail = nn.ModuleList(BasicBlock(channels, channels) for _ in range(blocks))
        self.last = nn.Conv2d(channels, 3, 3, padding=1, padding_mode="reflect", bias=False)
        self.identity_()

    def blocks(self) -> list[BasicBlock]:
        """The basic blocks in order (head, then tail)."""
        return [*self.head, *self.tail]

    def convs(self) -> list[nn.Conv2d]:
        """Every conv in order; the last one is the output conv."""
        return [b.conv for b in self.blocks()] + [self.last]

    def sample_noise(self, x: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        """One N(0, 1) map (N, 1, h, w) per block for input ``x``, on ``x``'s device and dtype.

        Drawn on the generator's device (CPU by default), so a seed gives the same maps on any
        device.
        """
        n, (h, w) = x.shape[0], x.shape[-2:]
        lh, lw = -(-h // self.scale), -(-w // self.scale)
        shapes = [(n, 1, h, w)] * len(self.head) + [(n, 1, lh, lw)] * len(self.tail)
        sizes = [math.prod(s) for s in shapes]
        device = generator.device if generator is not None else torch.device("cpu")
        flat = torch.randn(sum(sizes), generator=generator, device=device)
        flat = flat.to(device=x.device, dtype=x.dtype)
        return [m.view(s) for m, s in zip(flat.split(sizes), shapes, strict=True)]

    def forward(self, x: Tensor, noise: Sequence[Tensor] | None = None) -> Tensor:
        """Degrade ``x``; ``noise``: the maps of :meth:`sample_noise` (None: no noise)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise BlindSRError(f"NeuralDegradation expects an N,3,H,W batch, got {tuple(x.shape)}")
        blocks = self.blocks()
        if noise is not None and len(noise) != len(blocks):
            raise BlindSRError(f"NeuralDegradation needs {len(blocks)} noise maps, "
                               f"got {len(noise)}")
        maps = list(noise) if noise is not None else [None] * len(blocks)
        for block, m in zip(self.head, maps[: len(self.head)], strict=True):
            x = block(x, m)
        x = self.pool(x)
        for block, m in zip(self.tail, maps[len(self.head):], strict=True):
            x = block(x, m)
        return self.last(x)

    @torch.no_grad()
    def identity_(self, generator: torch.Generator | None = None) -> NeuralDegradation:
        """Identity initialisation (fresh random matrices each call; ``generator``: a CPU one).

        Slopes 1, noise strengths 0; the centre taps of every conv but the last are Xavier
        matrices (1x1 fan mode), other taps 0; the last conv's centre is the pseudoinverse (SVD)
        of their product, so the network equals BlurPool downsampling.
        """
        generator = _cpu_generator(generator)
        product = None
        for conv in self.convs()[:-1]:
            out_ch, in_ch = conv.weight.shape[:2]
            w = _xavier(out_ch, in_ch, in_ch + out_ch, generator)
            _set_centre(conv, w)
            w64 = w.double()
            product = w64 if product is None else w64 @ product
        u, s, vh = torch.linalg.svd(product, full_matrices=False)
        _set_centre(self.last, (vh.mT / s) @ u.mT)  # Moore-Penrose pseudoinverse
        self._reset_act_noise()
        return self

    @torch.no_grad()
    def xavier_(self, generator: torch.Generator | None = None) -> NeuralDegradation:
        """The ablation without identity initialisation: Xavier-uniform on every tap of every conv
        (3x3 fan mode), slopes 1 and noise strengths 0 as in :meth:`identity_`."""
        generator = _cpu_generator(generator)
        for conv in self.convs():
            out_ch, in_ch, kh, kw = conv.weight.shape
            w = _xavier(out_ch, in_ch * kh * kw, (in_ch + out_ch) * kh * kw, generator)
            conv.weight.copy_(w.view_as(conv.weight))
        self._reset_act_noise()
        return self

    def _reset_act_noise(self) -> None:
        for block in self.blocks():
            block.act.weight.fill_(1.0)
            block.noise.weight.zero_()


def _set_centre(conv: nn.Conv2d, matrix: Tensor) -> None:
    kh, kw = conv.weight.shape[-2:]
    conv.weight.zero_()
    conv.weight[:, :, kh // 2, kw // 2] = matrix.to(conv.weight)


def param_kind(name: str) -> str:
    """``conv``, ``noise`` or ``slope`` for a parameter name of :class:`NeuralDegradation`."""
    if name.endswith("noise.weight"):
        return "noise"
    if name.endswith("act.weight"):
        return "slope"
    if name.endswith("conv.weight") or name == "last.weight":
        return "conv"
    raise BlindSRError(f"NeuralDegradation has no parameter kind for {name!r}")


@dataclass(frozen=True)
class Ball:
    """``{delta : ||delta||_s <= epsilon}`` with per-kind factors (larger: that kind costs more).

    ``conv_units``: ``"fan_in"`` (default) measures a conv weight's deviation in units of its
    layer's He scale ``1 / sqrt(fan_in)`` (``fan_in = in_channels * kh * kw``), the equalised
    learning-rate convention of StyleGAN, whose noise injection AND borrows: a unit deviation
    changes a layer's output by about its input's size whatever the width; ``"raw"`` counts raw
    weight deviations (then a 64 -> 64 layer is 24 times cheaper to change).
    """

    epsilon: float = 20.0
    conv: float = 1.0
    noise: float = 10.0
    slope: float = 50.0
    conv_units: Literal["fan_in", "raw"] = "fan_in"
    keep_flat_colour: bool = True

    def restrict(self, name: str, t: Tensor) -> Tensor:
        """``t`` (a deviation or gradient of parameter ``name``) within the perturbation set's
        directions: with ``keep_flat_colour``, a conv kernel's deviation has zero sum over its
        taps for every (output, input) pair, so flat colour passes unchanged (see the module
        docstring); other parameters and ``keep_flat_colour=False`` are left free."""
        if not self.keep_flat_colour or param_kind(name) != "conv":
            return t
        return t - t.mean(dim=(-2, -1), keepdim=True)

    def factors(self, net: nn.Module) -> dict[str, float]:
        """Each parameter name of ``net`` with its factor."""
        if self.conv_units not in ("fan_in", "raw"):
            raise BlindSRError(f"conv_units must be fan_in or raw, got {self.conv_units!r}")
        out = {}
        for n, p in net.named_parameters():
            kind = param_kind(n)
            if kind == "conv":
                fan = math.prod(p.shape[1:]) if self.conv_units == "fan_in" else 1
                out[n] = self.conv * math.sqrt(fan)
            else:
                out[n] = self.noise if kind == "noise" else self.slope
        return out


def scaled_norm(delta: Mapping[str, Tensor], factors: Mapping[str, float]) -> Tensor:
    """``||delta||_s``: the L2 norm of ``factor * delta`` over every parameter."""
    return torch.sqrt(sum((factors[n] * d.float()).square().sum() for n, d in delta.items()))


def kind_shares(delta: Mapping[str, Tensor], factors: Mapping[str, float]) -> dict[str, Tensor]:
    """Share of ``||delta||_s^2`` spent on each kind (sums to 1 for a non-zero delta)."""
    sq = {k: 0.0 for k in KINDS}
    for n, d in delta.items():
        sq[param_kind(n)] = sq[param_kind(n)] + (factors[n] * d.detach().float()).square().sum()
    total = max(float(sum(sq.values())), 1e-30)
    return {k: torch.as_tensor(v) / total for k, v in sq.items()}


def base_params(net: nn.Module) -> Params:
    """``net``'s current parameters, detached (the centre ``theta`` of the ball)."""
    return {n: p.detach() for n, p in net.named_parameters()}


def run(net: nn.Module, params: Mapping[str, Tensor], x: Tensor,
        noise: Sequence[Tensor] | None = None) -> Tensor:
    """``net(x, noise)`` with ``params`` in place of its own (nothing is changed in place)."""
    return functional_call(net, dict(params), (x,), {"noise": noise})


def _norm(tensors: Sequence[Tensor]) -> Tensor:
    return torch.sqrt(sum(t.float().square().sum() for t in tensors))


def _centre(conv: nn.Conv2d) -> Tensor:
    kh, kw = conv.weight.shape[-2:]
    return conv.weight.detach()[:, :, kh // 2, kw // 2].float()


def _rows(t: Tensor) -> Tensor:
    """(N, C, H, W) as (N H W, C) float rows, one per pixel (a view when channels-last)."""
    return t.float().permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def _tap_correlations(z: Tensor, v: Tensor, taps: tuple[int, int]) -> Tensor:
    """``M[o, k, dy, dx] = sum_{n,p} z[n, o, p] * pad(v)[n, k, p + d]``: the weight gradient of a
    3 -> 3 reflect-padded conv with output gradient ``z`` on input ``v``."""
    kh, kw = taps
    vp = F.pad(v.float(), (kw // 2, kw // 2, kh // 2, kh // 2), mode="reflect")
    return torch.nn.grad.conv2d_weight(vp, (z.shape[1], v.shape[1], kh, kw), z.float())


def identity_gradients(net: NeuralDegradation, x: Tensor, grad_lr: Tensor,
                       noise: Sequence[Tensor] | None = None) -> Params:
    """The gradient of a loss with respect to every parameter of ``net`` at its identity point,
    from the gradient ``grad_lr`` of that loss with respect to the LR ``net(x, noise)``.

    Valid only right after :meth:`NeuralDegradation.identity_` (centre taps only, slopes 1, noise
    strengths 0). There every block is a per-pixel linear map, so each activation is ``A x`` and
    each backpropagated gradient ``B^T z`` for a C x 3 matrix ``A``, a 3 x C matrix ``B`` and
    three-channel images ``x`` and ``z``: a conv's weight gradient is ``B^T M_d A^T`` with ``M_d``
    the 3 x 3 correlation of ``z`` and the padded ``x`` at tap offset ``d``, and the network at
    full width never runs. Equals autograd through :func:`run` up to rounding
    (``tests/test_neural.py``); :func:`pgd` uses it for its first step. Computed in float32 with
    autocast off, whatever the caller's precision.
    """
    blocks = net.blocks()
    if not at_identity(net):
        raise BlindSRError("identity_gradients needs the network at its identity point "
                           "(call identity_() first)")
    if noise is not None and len(noise) != len(blocks):
        raise BlindSRError(f"NeuralDegradation needs {len(blocks)} noise maps, got {len(noise)}")
    with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
        return _identity_gradients(net, x, grad_lr, noise)


def _identity_gradients(net: NeuralDegradation, x: Tensor, grad_lr: Tensor,
                        noise: Sequence[Tensor] | None) -> Params:
    blocks, convs = net.blocks(), net.convs()
    nh = len(net.head)
    maps = list(noise) if noise is not None else [None] * len(blocks)
    # forward products A_l (activation after conv l = A_l applied to x or to y = pool(x))
    a, prod = [], None
    for conv in convs[:-1]:
        c = _centre(conv)
        prod = c if prod is None else c @ prod
        a.append(prod)
    # backward products B_l (gradient at conv l's output = B_l^T applied to g or to h)
    b, prod = [None] * len(blocks), _centre(convs[-1])
    for i in range(len(blocks) - 1, -1, -1):
        b[i] = prod
        prod = prod @ _centre(convs[i])
    xf = x.float().detach().requires_grad_(True)
    y = net.pool(xf)
    (h,) = torch.autograd.grad(y, xf, grad_lr.float())  # pool^T(g) at HR
    y, g = y.detach(), grad_lr.float()
    taps = tuple(convs[0].weight.shape[-2:])
    # HR blocks see (x, h), LR blocks and the last conv (y, g): pixels as rows (P, 3), and
    # M (3, 3, kh, kw)
    sides = {"head": (_rows(x.float()), _rows(h), _tap_correlations(h, x, taps)),
             "tail": (_rows(y), _rows(g), _tap_correlations(g, y, taps))}
    out: Params = {}
    for i in range(len(blocks)):
        name = f"head.{i}" if i < nh else f"tail.{i - nh}"
        v, z, m = sides["head" if i < nh else "tail"]
        a_in = a[i - 1] if i > 0 else torch.eye(3, device=x.device)
        out[f"{name}.conv.weight"] = torch.einsum("ko,kjyx,ij->oiyx", b[i], m, a_in)
        # slope gradient: sum over pixels of (B^T z) * min(A v, 0), as (B * (z^T min(v A^T, 0)))
        negative = (v @ a[i].T).clamp_(max=0)  # (P, C): the negative part of the pre-activation
        out[f"{name}.act.weight"] = (b[i] * (z.T @ negative)).sum(0)
        q = z.T @ _rows(maps[i]).squeeze(1) if maps[i] is not None else z.new_zeros(3)
        out[f"{name}.noise.weight"] = b[i].T @ q
    out["last.weight"] = torch.einsum("okyx,ik->oiyx", sides["tail"][2], a[-1])
    return {n: out[n].to(p) for n, p in net.named_parameters()}


def at_identity(net: NeuralDegradation) -> bool:
    """Whether ``net`` is at an identity point: every slope 1, every noise strength 0, and every
    conv weight zero off its centre tap (what :meth:`NeuralDegradation.identity_` leaves)."""
    with torch.no_grad():
        for block in net.blocks():
            if bool((block.act.weight != 1).any()) or bool(block.noise.weight.any()):
                return False
        for conv in net.convs():
            w = conv.weight.clone()
            kh, kw = w.shape[-2:]
            w[:, :, kh // 2, kw // 2] = 0
            if bool(w.any()):
                return False
    return True


def pgd(net: NeuralDegradation, x: Tensor, loss_fn: Callable[[Tensor], Tensor], ball: Ball,
        steps: int = 5, alpha: float = 6.0, noise: Sequence[Tensor] | None = None,
        from_identity: bool = False) -> tuple[Params, list[Tensor]]:
    """Projected gradient ascent on ``loss_fn(clamp(F_{theta+delta}(x), 0, 1))`` over the ball.

    ``theta`` is ``net``'s current parameters; ``delta`` starts at 0. Each of the ``steps``
    steps: gradient with respect to ``u = factor * delta`` only (``torch.autograd.grad``, so no
    ``.grad`` anywhere is touched), ``u += alpha * g / ||g||``, then ``u *= min(1, eps / ||u||)``.
    ``loss_fn`` should run any network it uses without parameter gradients. Returns the perturbed
    parameters (detached) and the loss at each evaluated point (detached; ``[0]`` is theta's).

    ``from_identity``: ``theta`` is an identity point (:meth:`NeuralDegradation.identity_`), so the
    first step's LR is ``BlurPool(x)`` and its gradient comes from :func:`identity_gradients`:
    the same step without running the degradation network forward or backward. The one
    difference: where the LR is exactly 0 or 1 (saturated HR), the network's rounding (1 +- 1
    ulp) decided whether the clamp passed the gradient; the closed form always passes it.
    """
    theta = base_params(net)
    factors = ball.factors(net)
    u = {n: torch.zeros_like(t) for n, t in theta.items()}
    losses: list[Tensor] = []
    with torch.enable_grad():
        for k in range(steps):
            if k == 0 and from_identity:
                lr = net.pool(x).detach().requires_grad_(True)
                loss = loss_fn(lr.clamp(0, 1))
                (grad_lr,) = torch.autograd.grad(loss, lr)
                found = identity_gradients(net, x, grad_lr, noise)
                grads = [ball.restrict(n, found[n] / factors[n]) for n in u]
            else:
                for t in u.values():
                    t.requires_grad_(True)
                params = {n: theta[n] + u[n] / factors[n] for n in theta}
                loss = loss_fn(run(net, params, x, noise).clamp(0, 1))
                grads = torch.autograd.grad(loss, list(u.values()), allow_unused=True)
                grads = [torch.zeros_like(t) if g is None else ball.restrict(n, g)
                         for (n, t), g in zip(u.items(), grads, strict=True)]  # None: noise
                # strengths without noise maps
            losses.append(loss.detach())
            with torch.no_grad():
                gnorm = _norm(grads)
                if not bool(torch.isfinite(gnorm)) or float(gnorm) == 0.0:
                    break  # a flat or broken loss: keep the last point
                u = {n: t.detach() + (alpha / gnorm) * g.to(t.dtype)
                     for (n, t), g in zip(u.items(), grads, strict=True)}
                shrink = (ball.epsilon / _norm(list(u.values())).clamp_min(1e-30)).clamp(max=1.0)
                u = {n: t * shrink for n, t in u.items()}
    return {n: theta[n] + u[n].detach() / factors[n] for n in theta}, losses


def random_perturbation(net: NeuralDegradation, ball: Ball,
                        generator: torch.Generator | None = None) -> Params:
    """``theta + delta`` with ``delta`` uniform in the ball (Gaussian direction in the scaled
    coordinates, radius ``epsilon * U^(1/d)``: in these dimensions almost always ~epsilon)."""
    generator = _cpu_generator(generator)
    theta = base_params(net)
    factors = ball.factors(net)
    z = {n: ball.restrict(n, torch.randn(t.shape, generator=generator))
         for n, t in theta.items()}
    d = sum(t.numel() for t in z.values())
    radius = ball.epsilon * float(torch.rand((), generator=generator)) ** (1.0 / d)
    scale = radius / float(_norm(list(z.values())))
    return {n: theta[n] + (z[n] * (scale / factors[n])).to(theta[n]) for n in theta}


def identity_error(net: NeuralDegradation, x: Tensor) -> float:
    """``max |F(x) - BlurPool(x)|`` without noise (0 up to rounding after :meth:`identity_`)."""
    with torch.no_grad():
        return float((net(x) - net.pool(x)).abs().max())


__all__ = ["KINDS", "BasicBlock", "Ball", "NeuralDegradation", "NoiseInjection", "at_identity",
           "base_params", "identity_error", "identity_gradients", "kind_shares", "param_kind",
           "pgd", "random_perturbation", "run", "scaled_norm"]
