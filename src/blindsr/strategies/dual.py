"""``dual``: dual regression learning (DRN: Guo et al., "Closed-loop Matters: Dual Regression
Networks for Single Image Super-Resolution", CVPR 2020), with unpaired adaptation (DRN-Adapt).

The primal model P is the generator; small dual models D map its output back down, closing the
loop. One iteration minimises, jointly over P and D (one update, both optimisers)::

    L = 1/N sum_n [ paired_n * sum_k L1(P_k(x_n), y_n^(k)) + lam * sum_j L1(D_j(.), t_n^(j)) ]

Multi-scale primal (as DRN's ``trainer.py``): a generator with ``forward_all`` (DRN) returns its
outputs from the LR size (1x) up to sx; the 1x output is compared with the LR input itself
(DRN's ``lr[0]``) and output k >= 1 (at 2^k x) with the HR resized by MATLAB bicubic
``imresize`` to that size (DRN's ``LR_bicubic/X2`` files). Other generators (SRResNet, ...)
give one output, compared with the HR.

Dual models (:class:`DualModels`, DRN's ``DownBlock``: a stride-2 3x3 conv, LeakyReLU 0.2, then a
3x3 conv; 3 channels in and out; no biases; PyTorch's default init):

- per stage (generators with ``forward_all``): block j maps the 2^(j+1) x output to 2^j x. As in
  DRN, block 0's target is the LR input x (the closed loop of the paper, D(P(x)) ~ x) and block
  j >= 1's target is ``imresize(HR)`` at 2^j x, i.e. the data, not the network's own lower output.
- one model (other generators): log2(s) stride-2 convs (DRN's ``DownBlock(s)``) map sx -> 1x,
  target x.
- x3 (paper silent): one block whose first conv has kernel 3, stride 3 and no padding, so its taps
  are exactly the 3x3 HR pixels of one LR pixel (a stride-2 conv cannot give 1/3).

Choices where the paper is silent, and unpaired data:

- Sample weighting follows Algorithm 2: every term is divided by the whole batch size N, so the
  primal term (indicator ``paired``, i.e. the batch's ``has_hr``) weighs ``1 - rho`` of the batch
  on average; the dual term runs on ALL samples, paired or not.
- An unpaired sample has no HR, hence no target for dual blocks j >= 1: there the block's target
  is the generator's own 2^j x output, detached (a consistency target; the gradient goes to the
  higher output and the block, never pulls the lower output toward the higher one). Block 0
  always has the real LR input as target, so the loop still closes on the real data.
- ``fixed: true`` (the paper's Table C) replaces every trained dual block by ``imresize`` to the
  target's size (1/2 per stage, 1/s for one model); no dual network exists then.
- ``lam: 0`` is the no-dual ablation (Tables 4 / B): the multi-scale L1 only, no dual network.
- ``dual_feat`` 16 is DRN-S x4's width (DRN gives the duals the network's own ``n_feats``: 8
  for DRN-S x8, 20 for DRN-L x4); set it to match.
- The dual models use Adam with the generator's DRN settings (lr 1e-4, betas 0.9/0.999) and, in
  the loop, the same schedule; configs may set ``optim.dual``.
- ``dual_init`` (Algorithm 2 starts from pretrained P and D): a training checkpoint folder
  (``RUN/checkpoints/step_N``) or a run folder (its newest checkpoint) whose ``dual`` weights
  start the dual models (a run folder must be finished, as for ``model.init``); ``model.init``
  starts P. A resumed run keeps its own checkpoint instead and no longer needs either.
- ``unpaired_ratio`` (rho, the paper uses 30%) is set by the data section's source weights (an
  ``lr:`` source for the unpaired part); when given here, it is checked against the share those
  weights give before training starts (a one-line error if they differ by more than
  ``RATIO_TOLERANCE``). The observed share is logged as ``unpaired`` every step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from blindsr.archs import state_dict_mismatch
from blindsr.errors import BlindSRError
from blindsr.ops.resize import imresize
from blindsr.paths import user_path
from blindsr.schema import bounded, fail
from blindsr.strategies.base import Strategy, Update

RATIO_TOLERANCE = 0.005  # unpaired_ratio against the LR-only share of the data.train weights


def _stages(scale: int) -> int:
    """Number of dual stages: log2(scale) for powers of two, 1 for x3; else an error."""
    if isinstance(scale, bool) or not isinstance(scale, int):
        raise BlindSRError(f"dual models: scale must be an integer, got {scale!r}")
    if scale == 3:
        return 1
    if scale >= 2 and scale & (scale - 1) == 0:
        return scale.bit_length() - 1
    raise BlindSRError(f"dual models: scale must be 3 or a power of two >= 2, got {scale}")


def _down_block(scale: int, num_feat: int, slope: float = 0.2) -> nn.Sequential:
    """DRN's DownBlock: strided 3x3 convs with LeakyReLU down by ``scale``, then a 3x3 conv."""
    layers: list[nn.Module] = []
    channels = 3
    if scale == 3:
        layers += [nn.Conv2d(3, num_feat, 3, 3, 0, bias=False), nn.LeakyReLU(slope, True)]
    else:
        for _ in range(_stages(scale)):
            layers += [nn.Conv2d(channels, num_feat, 3, 2, 1, bias=False),
                       nn.LeakyReLU(slope, True)]
            channels = num_feat
    layers.append(nn.Conv2d(num_feat, 3, 3, 1, 1, bias=False))
    return nn.Sequential(*layers)


class DualModels(nn.Module):
    """The dual models of a x``scale`` generator (see the module docstring).

    ``per_stage``: one x2 block per stage (block i maps the 2^(i+1) x output to 2^i x; x3: one
    x3 block); else ONE model mapping the sx output to 1x.
    """

    def __init__(self, scale: int, num_feat: int = 16, per_stage: bool = True) -> None:
        super().__init__()
        stages = _stages(scale)
        if isinstance(num_feat, bool) or not isinstance(num_feat, int) or num_feat < 1:
            raise BlindSRError(f"dual models: num_feat must be a positive integer, "
                               f"got {num_feat!r}")
        self.scale, self.per_stage = scale, bool(per_stage)
        factor = 3 if scale == 3 else 2
        if self.per_stage:
            blocks = [_down_block(factor, num_feat) for _ in range(stages)]
        else:
            blocks = [_down_block(scale, num_feat)]
        self.blocks = nn.ModuleList(blocks)

    def __len__(self) -> int:
        return len(self.blocks)

    def forward(self, outputs: list[Tensor]) -> list[Tensor]:
        """Dual predictions for the generator's ``outputs`` (low to high): per stage, block i
        on ``outputs[i + 1]``; one model, on ``outputs[-1]`` (prediction at 1x)."""
        if not self.per_stage or len(outputs) == len(self.blocks) == 1:
            return [self.blocks[0](outputs[-1])]
        if len(outputs) != len(self.blocks) + 1:
            raise BlindSRError(f"dual models have {len(self.blocks)} stage(s), so they need "
                               f"{len(self.blocks) + 1} generator outputs (1x .. "
                               f"{self.scale}x), got {len(outputs)}")
        return [block(out) for block, out in zip(self.blocks, outputs[1:], strict=True)]


def generator_outputs(generator: nn.Module, lr: Tensor) -> list[Tensor]:
    """The generator's outputs from low to high scale: ``forward_all(lr)`` when it has one
    (DRN: 1x .. sx), else ``[generator(lr)]``."""
    forward_all = getattr(generator, "forward_all", None)
    if callable(forward_all):
        outputs = list(forward_all(lr))
        if not outputs:
            raise BlindSRError(f"{type(generator).__name__}.forward_all returned no outputs")
        return outputs
    return [generator(lr)]


def _per_sample_l1(a: Tensor, b: Tensor) -> Tensor:
    """(N,) mean absolute difference per sample, in float32 at least."""
    if a.shape != b.shape:
        raise BlindSRError(f"dual regression: output {tuple(a.shape)} and target "
                           f"{tuple(b.shape)} differ in shape")
    return (a.float() - b.float()).abs().flatten(1).mean(dim=1)


def _resized(hr: Tensor, like: Tensor) -> Tensor:
    """``hr`` resized (MATLAB bicubic) to ``like``'s height and width (itself when equal)."""
    size = tuple(like.shape[-2:])
    return hr if tuple(hr.shape[-2:]) == size else imresize(hr.float(), size=size)


def _primal(outputs: list[Tensor], lr: Tensor, hr: Tensor, paired: Tensor) -> Tensor:
    """Sum over scales of the L1 on paired samples, divided by the whole batch size; an output
    at the LR's size is compared with the LR input itself (DRN's ``lr[0]``)."""
    n = outputs[-1].shape[0]
    if not bool(paired.any()):
        return outputs[-1].new_zeros((), dtype=torch.float32)
    idx = paired.nonzero().flatten()
    x, y = lr[idx], hr[idx]

    def target(o: Tensor) -> Tensor:
        return x if o.shape[-2:] == x.shape[-2:] and o.shape[-2:] != y.shape[-2:] \
            else _resized(y, o)

    return sum(_per_sample_l1(o[idx], target(o)).sum() for o in outputs) / n


def _dual_pairs(outputs: list[Tensor], lr: Tensor, hr: Tensor | None, paired: Tensor,
                duals: DualModels | None, fixed: bool) -> list[tuple[Tensor, Tensor]]:
    """(dual prediction, target) per dual stage (see the module docstring)."""
    per_stage = len(outputs) > 1 and (fixed or (duals is not None and duals.per_stage))
    if not per_stage:
        top = outputs[-1]
        pred = imresize(top.float(), size=tuple(lr.shape[-2:])) if fixed else duals(outputs)[0]
        return [(pred, lr)]
    if fixed:
        preds = [imresize(o.float(), size=tuple(low.shape[-2:]))
                 for o, low in zip(outputs[1:], outputs[:-1], strict=True)]
    else:
        preds = duals(outputs)
    pairs = [(preds[0], lr)]
    for j in range(1, len(preds)):
        target = outputs[j].detach()
        if hr is not None and bool(paired.any()):
            mask = paired.view(-1, 1, 1, 1)
            target = torch.where(mask, _resized(hr, target).to(target.dtype), target)
        pairs.append((preds[j], target))
    return pairs


def dual_regression_loss(outputs: list[Tensor], lr: Tensor, hr: Tensor | None,
                         duals: DualModels | None, lam: float = 0.1, fixed: bool = False,
                         paired: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """DRN's loss: multi-scale primal L1 on ``paired`` samples (bool (N,), None: all) plus
    ``lam`` x the dual L1 on all samples (trained ``duals``, or ``imresize`` when ``fixed``).

    Returns ``(total, {"l_primal", "l_dual"})`` (logs detached; both terms already divided by
    the batch size, the dual one before ``lam``).
    """
    if not outputs:
        raise BlindSRError("dual regression: no generator outputs")
    n = outputs[-1].shape[0]
    if paired is None:
        paired = torch.full((n,), hr is not None, dtype=torch.bool, device=lr.device)
    paired = paired.to(device=lr.device, dtype=torch.bool)
    if bool(paired.any()) and hr is None:
        raise BlindSRError("dual regression: samples are marked paired but no HR was given")
    primal = outputs[-1].new_zeros((), dtype=torch.float32)
    if hr is not None:
        primal = _primal(outputs, lr, hr, paired)
    dual = outputs[-1].new_zeros((), dtype=torch.float32)
    if lam > 0:
        if duals is None and not fixed:
            raise BlindSRError("dual regression: lam > 0 needs dual models or fixed=True")
        pairs = _dual_pairs(outputs, lr, hr, paired, duals, fixed)
        dual = sum(_per_sample_l1(p, t).mean() for p, t in pairs)
    total = primal + lam * dual
    return total, {"l_primal": primal.detach(), "l_dual": dual.detach()}


@dataclass
class DualParams:
    lam: float = bounded(0.1, ge=0)  # dual loss weight lambda (0: the no-dual ablation)
    fixed: bool = False  # bicubic downsampling instead of trained dual models (Table C)
    dual_feat: int = bounded(16, ge=1)  # width of the dual models (DRN-S x4: 16)
    dual_init: str | None = None  # checkpoint folder or run folder with "dual" weights
    unpaired_ratio: float | None = bounded(None, ge=0, lt=1)  # rho: expected LR-only share

    def check(self, path: str) -> None:
        # weights to load must not be ignored; a width without models to shape is harmless
        if self.dual_init is not None and (self.fixed or self.lam == 0):
            raise fail(f"{path}.dual_init", "given, but there are no dual models "
                                            "(fixed is true or lam is 0)")


def load_dual_weights(path: str) -> dict[str, Tensor]:
    """The ``dual`` weights of a training checkpoint folder or of a finished run's newest
    checkpoint."""
    from blindsr.train_state import latest_checkpoint, load_checkpoint, unfinished_run

    folder = user_path(path)
    if not folder.is_dir():
        raise fail("strategy.params.dual_init", f"{folder} is not a checkpoint or run folder")
    if not (folder / "weights.safetensors").is_file():
        why = unfinished_run(folder)
        if why is not None and why.startswith("unfinished"):
            raise fail("strategy.params.dual_init", f"{folder} is a run that is not finished "
                       f"({why}); finish it first, or name one of its checkpoints "
                       "(RUN/checkpoints/step_N)")
        newest = latest_checkpoint(folder)
        if newest is None:
            raise fail("strategy.params.dual_init", f"{folder} holds no training checkpoint")
        folder = newest
    weights, _ = load_checkpoint(folder)
    if "dual" not in weights:
        raise fail("strategy.params.dual_init", f"{folder} has no dual weights (networks: "
                                                f"{', '.join(sorted(weights))})")
    return weights["dual"]


class Dual(Strategy):
    """Dual regression training: primal multi-scale L1 + lam x dual L1 (module docstring)."""

    name = "dual"
    learns_from_lr_only = True
    startup_params = ("dual_init",)
    Params = DualParams

    def __init__(self, generator: nn.Module, params: DualParams, scale: int,
                 device: torch.device) -> None:
        super().__init__(generator, params, scale, device)
        self.duals: DualModels | None = None
        if params.lam > 0 and not params.fixed:
            per_stage = callable(getattr(generator, "forward_all", None))
            self.duals = DualModels(scale, params.dual_feat, per_stage).to(self.device)
            if params.dual_init:
                self._load_duals(params.dual_init)

    def _load_duals(self, path: str) -> None:
        weights = load_dual_weights(path)
        problem = state_dict_mismatch(self.duals, weights)
        if problem:
            raise fail("strategy.params.dual_init", f"dual weights do not fit ({problem})")
        self.duals.load_state_dict(weights, strict=True)

    def networks(self) -> dict[str, nn.Module]:
        return {"dual": self.duals} if self.duals is not None else {}

    def default_optim(self) -> dict[str, dict]:
        if self.duals is None:
            return {}
        return {"dual": {"type": "adam", "lr": 1e-4, "betas": [0.9, 0.999]}}

    def training_step(self, batch: dict[str, Tensor], step: int) -> Iterator[Update]:
        lr, hr, paired = batch["lr"], batch["hr"], batch["has_hr"].bool()
        p = self.params
        if p.lam == 0 and not bool(paired.any()):
            return  # nothing to learn from LR-only samples without the dual loss
        outputs = generator_outputs(self.generator, lr)
        loss, logs = dual_regression_loss(outputs, lr, hr, self.duals, p.lam, p.fixed, paired)
        names = ("generator", "dual") if self.duals is not None else ("generator",)
        unpaired = (~paired).float().mean()
        yield Update(loss, names, {**logs, "l_total": loss.detach(), "unpaired": unpaired})

    def check_data(self, shares: Mapping[str, float]) -> None:
        super().check_data(shares)
        if "lr" in shares and self.params.lam == 0:
            raise fail("data.train", "has LR-only images, which strategy dual cannot learn from "
                                     "with lam 0 (only the dual loss uses them); set lam > 0 or "
                                     "leave the lr: sources out")
        rho, share = self.params.unpaired_ratio, shares.get("lr", 0.0)
        if rho is not None and abs(share - rho) > RATIO_TOLERANCE:
            raise fail("strategy.params.unpaired_ratio",
                       f"is {rho:g}, but the data.train weights give LR-only sources "
                       f"{share:.3f} of the samples: set the weights so that the lr: sources "
                       f"carry {rho:g} of the total, or leave unpaired_ratio out")

    def load_state_dict(self, state: dict) -> None:
        # checkpoints before the check moved to the config kept counters for it; nothing now
        super().load_state_dict({k: v for k, v in state.items()
                                 if k not in ("seen", "unpaired", "checked")})


__all__ = ["Dual", "DualModels", "DualParams", "dual_regression_loss", "generator_outputs"]
