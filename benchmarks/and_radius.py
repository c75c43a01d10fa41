"""AND's attack radius in the currency of the test set: a restorer's L1 to HR on LR made by the
attacked degradation network at each epsilon, beside its L1 on the test presets.

The paper's epsilon = 20 is in unpublished units, so the CPU configs pick epsilon where the
attack is as hard as the test degradations: this script prints, for the restorer (default: the
shipped classical baseline, the network AND starts from in spirit), its mean L1 on

- the identity LR (BlurPool, epsilon 0) and the PGD-attacked LR at each ``--epsilon``
  (``alpha`` = 0.3 epsilon, K = 5, ``--channels`` wide; one perturbation for the batch, found
  on its first ``--attack-batch`` samples, 0 = all, as the strategy's ``attack_batch``),
- the 'adversarial noise only' ablation's LR (bicubic + PGD noise) at each ``--noise-rms``, and
- the eight EATS test presets (clean ... b+n+j),

on ``--crops`` fixed training crops (``data.corner_crops``). Everything but the restorer's
weights comes from a seeded generator, so the figures repeat.

A second column repeats the attacked rows after a per-image colour fit (the least-squares 3x4
affine colour map from the LR to the identity LR): what is left is the damage a restorer could
in principle undo; an attack whose L1 falls back to the identity's there made only colour casts.
``--free-colour`` attacks with the conv taps free (``keep_flat_colour: false``, the paper
literal), which does exactly that.

    python benchmarks/and_radius.py                      # epsilon 0.025 ... 0.2
    python benchmarks/and_radius.py --epsilon 0.05,0.1 --noise-rms 0.05 --crops 8
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from blindsr import degrade, zoo
from blindsr.data import corner_crops
from blindsr.errors import BlindSRError
from blindsr.strategies.and_ import AND

PRESETS = ["clean", "blur", "noise", "jpeg", "b+n", "b+j", "n+j", "b+n+j"]


def restorer_l1(model: torch.nn.Module, lr: torch.Tensor, hr: torch.Tensor) -> float:
    """Mean L1 of ``model(lr)`` (clamped) to ``hr``."""
    with torch.inference_mode():
        return (model(lr).clamp(0, 1) - hr).abs().mean().item()


def colour_fit(lr: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``lr`` mapped per image by the least-squares affine colour map (3x3 matrix + offset)
    that brings it closest to ``ref``."""
    n = lr.shape[0]
    x = torch.cat([lr.flatten(2), torch.ones_like(lr[:, :1]).flatten(2)], dim=1)  # (N, 4, P)
    y = ref.flatten(2)  # (N, 3, P)
    a = torch.linalg.lstsq(x.transpose(1, 2).double(), y.transpose(1, 2).double()).solution
    return (a.transpose(1, 2).float() @ x).view(n, 3, *lr.shape[-2:]).clamp(0, 1)


def attacked_lr(model: torch.nn.Module, hr: torch.Tensor, epsilon: float, channels: int,
                seed: int, noise_rms: float | None = None, attack_batch: int = 0,
                free_colour: bool = False) -> torch.Tensor:
    """LR from the and strategy's degradation (PGD against ``model``; epsilon 0: identity), or
    its noise-only ablation with ``noise_rms``."""
    params = {"epsilon": max(epsilon, 1e-9), "alpha": 0.3 * max(epsilon, 1e-9),
              "steps": 5 if epsilon > 0 else 0, "channels": channels, "seed": seed,
              "attack_batch": attack_batch, "keep_flat_colour": not free_colour}
    if noise_rms is not None:
        params.update(perturbation="noise", noise_rms=noise_rms)
    strategy = AND(model, AND.parse_params(params), 4, hr.device)
    return strategy.degrade(hr)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="blindsr-x4-classical", help="the restorer")
    parser.add_argument("--epsilon", default="0.025,0.05,0.1,0.2")
    parser.add_argument("--noise-rms", default="0.025,0.05")
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--attack-batch", type=int, default=0, help="0: the whole batch")
    parser.add_argument("--crops", type=int, default=16)
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--free-colour", action="store_true",
                        help="conv taps free (keep_flat_colour: false, the paper literal)")
    args = parser.parse_args(argv)
    try:
        hr = corner_crops(("T91", "BSD200"), args.crops, args.patch)
        model = zoo.load(args.model, 4, "cpu").eval()
        epsilons = [float(e) for e in args.epsilon.split(",")]
        noise = [float(e) for e in args.noise_rms.split(",")] if args.noise_rms else []
    except (BlindSRError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    rows, fitted = {}, {}
    identity = attacked_lr(model, hr, 0.0, args.channels, args.seed)
    for eps in [0.0, *epsilons]:
        lr = identity if eps == 0 else attacked_lr(
            model, hr, eps, args.channels, args.seed, attack_batch=args.attack_batch,
            free_colour=args.free_colour)
        name = f"epsilon {eps:g}" if eps else "identity (BlurPool)"
        rows[name] = restorer_l1(model, lr, hr)
        fitted[name] = restorer_l1(model, colour_fit(lr, identity), hr)
    for rms in noise:
        lr = attacked_lr(model, hr, 0.1, args.channels, args.seed, noise_rms=rms)
        rows[f"adversarial noise, rms {rms:g}"] = restorer_l1(model, lr, hr)
    for preset in PRESETS:
        lr = degrade.apply(hr, preset, 4, seed=args.seed)
        rows[preset] = restorer_l1(model, lr, hr)
    print(f"restorer {args.model}, {args.crops} crops of {args.patch}, channels {args.channels}, "
          f"attack batch {args.attack_batch or args.crops}, "
          f"{'free colour' if args.free_colour else 'flat colour kept'}")
    print("| LR | restorer L1 to HR | after a colour fit |\n|---|---|---|")
    for name, value in rows.items():
        after = f"{fitted[name]:.4f}" if name in fitted else ""
        print(f"| {name} | {value:.4f} | {after} |")
    print(json.dumps({"model": args.model, "crops": args.crops, "patch": args.patch,
                      "channels": args.channels, "seed": args.seed,
                      "attack_batch": args.attack_batch, "free_colour": args.free_colour,
                      "l1": {k: round(v, 5) for k, v in rows.items()},
                      "l1_after_colour_fit": {k: round(v, 5) for k, v in fitted.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
