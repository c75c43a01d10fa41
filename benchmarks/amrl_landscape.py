"""Where the AMNet-RL actor should go, and where it went (issue 8 diagnostics).

For each kernel width sigma, on random HR crops of a set (the training states' size) and on its
whole images (the evaluation's):

- the reward landscape: the mean reward of the frozen renderer of ``--model`` over the crops
  when the code is the true sigma plus an offset (``--offsets``), so the reward-optimal code
  and the asymmetry around it are visible;
- the mean decoded sigma of each ``--predictor`` model's kernel predictor on the same crops
  and on the whole images (``image_code``, as inference does);
- with ``--shifts``, the mean reward when every code of the FIRST predictor (the RL runs'
  starting point) is moved by the same offset in sigma, on the crops and on the whole images:
  the offset an actor that cannot tell its own errors apart would learn (its hedge), and whether
  the crops' hedge also pays on whole images;
- with ``--real SET`` (and ``--shifts``), the same shifts on an LR-only set's whole images (real
  LR, no HR, no known sigma) under a no-reference reward such as ``neg_niqe``: which way the
  real images want the codes moved.

    python benchmarks/amrl_landscape.py --model amnet-x4 --predictor amnet-x4 \\
        --predictor runs/amnet_rl_psnr/model.safetensors
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from blindsr.checkpoint import load_model
from blindsr.degrade.kernel_code import blur_downsample, coder_of_model
from blindsr.errors import BlindSRError
from blindsr.machine import machine_description
from blindsr.rewards import get_reward

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts
from amgan_eval import SCALE, load_images, mod_crop, random_crops  # noqa: E402


def landscape(model: torch.nn.Module, hr: Tensor, sigma: float, offsets: list[float],
              reward: str) -> dict[float, float]:
    """Mean reward over ``hr`` crops for codes of sigma + offset (clamped to the range)."""
    coder = coder_of_model(model)
    lo, hi = coder.sigma_range
    score = get_reward(reward)
    lr = blur_downsample(hr, torch.full((len(hr),), sigma), SCALE, quantize=True)
    out = {}
    for d in offsets:
        code = coder.encode(torch.full((len(hr),), min(max(sigma + d, lo), hi)))
        sr = model.render(lr, code.reshape(len(hr), -1)).clamp(0, 1)
        out[d] = float(score(sr, hr, lr).mean())
    return out


def predicted_sigmas(model: torch.nn.Module, crops: Tensor, images: list[Tensor],
                     sigma: float) -> dict[str, float]:
    """Mean decoded sigma of the model's predictor on the crops and on the whole images."""
    coder = coder_of_model(model)
    lr = blur_downsample(crops, torch.full((len(crops),), sigma), SCALE, quantize=True)
    on_crops = coder.decode(model.clamp_code(model.predictor(lr))).float().mean()
    whole = [coder.decode(model.image_code(blur_downsample(x, torch.tensor([sigma]), SCALE,
                                                         quantize=True))).float().mean()
             for x in images]
    return {"crops": float(on_crops), "whole": float(torch.stack(whole).mean())}


def shift_scorer(renderer: torch.nn.Module, predictor: torch.nn.Module, shifts: list[float],
                 reward: str) -> Callable[[Tensor, Tensor, Tensor | None], list[Tensor]]:
    """``(lr, code, hr) ->`` per shift, the rewards of the batch ``lr`` when the predictor's
    ``code`` of each sample, decoded to sigma, is moved by the shift (clamped to the range) and
    rendered (the coders and the reward are built once)."""
    coder, guesses = coder_of_model(renderer), coder_of_model(predictor)
    lo, hi = coder.sigma_range
    score = get_reward(reward)

    def rewards(lr: Tensor, code: Tensor, hr: Tensor | None) -> list[Tensor]:
        mu = guesses.decode(code).float().reshape(-1)
        return [score(renderer.render(lr, coder.encode((mu + d).clamp(lo, hi))
                                      .reshape(len(lr), -1)).clamp(0, 1), hr, lr) for d in shifts]

    return rewards


def shifted(renderer: torch.nn.Module, predictor: torch.nn.Module, hr: list[Tensor],
            sigma: float, shifts: list[float], reward: str, whole: bool) -> dict[float, float]:
    """Mean reward over ``hr`` (a batch of crops, or whole images one by one with ``whole``)
    when the predictor's decoded sigma of each is moved by each shift (clamped to the range)."""
    rewards = shift_scorer(renderer, predictor, shifts, reward)
    sums = dict.fromkeys(shifts, 0.0)
    for x in hr:
        lr = blur_downsample(x, torch.full((len(x),), sigma), SCALE, quantize=True)
        code = predictor.image_code(lr) if whole else predictor.clamp_code(predictor.predictor(lr))
        for d, r in zip(shifts, rewards(lr, code, x), strict=True):
            sums[d] += float(r.sum())
    count = sum(len(x) for x in hr)
    return {d: v / count for d, v in sums.items()}


def shifted_real(renderer: torch.nn.Module, predictor: torch.nn.Module, lrs: list[Tensor],
                 shifts: list[float], reward: str) -> dict[float, dict[str, float]]:
    """Mean no-reference reward over whole LR-only images when the predictor's decoded sigma of
    each is moved by each shift (clamped to the range); over the images whose reward is finite
    at every shift, so that the means compare (their count is reported)."""
    rewards = shift_scorer(renderer, predictor, shifts, reward)
    table = [[float(r[0]) for r in rewards(lr, predictor.image_code(lr), None)] for lr in lrs]
    kept = [row for row in table if all(math.isfinite(x) for x in row)]
    return {d: {"mean": sum(row[i] for row in kept) / len(kept) if kept else math.nan,
                "images": len(kept)} for i, d in enumerate(shifts)}


def real_crop_gains(renderer: torch.nn.Module, predictor: torch.nn.Module, lrs: list[Tensor],
                    shifts: list[float], reward: str, size: int, per_image: int,
                    seed: int) -> dict[float, dict[str, float]]:
    """Per shift, the reward change against the unshifted code on ``per_image`` random
    ``size``-pixel square crops of each LR image at least that large (codes from the
    predictor's crop estimate, as the RL states get them): mean, std, share of crops that gain
    and the crop count (crops whose reward is not finite at every shift are left out)."""
    g = torch.Generator().manual_seed(seed)
    rewards = shift_scorer(renderer, predictor, [*shifts, 0.0], reward)
    gains: list[list[float]] = []
    for lr in lrs:
        h, w = lr.shape[-2:]
        if min(h, w) < size:
            continue
        for _ in range(per_image):
            y = int(torch.randint(h - size + 1, (1,), generator=g))
            x = int(torch.randint(w - size + 1, (1,), generator=g))
            crop = lr[..., y:y + size, x:x + size]
            values = [float(r[0]) for r in rewards(crop, predictor.clamp_code(
                predictor.predictor(crop)), None)]
            if all(math.isfinite(v) for v in values):
                gains.append([v - values[-1] for v in values[:-1]])
    out = {}
    for i, d in enumerate(shifts):
        col = torch.tensor([row[i] for row in gains], dtype=torch.float64)
        out[d] = {"mean_gain": float(col.mean()) if len(col) else math.nan,
                  "std": float(col.std()) if len(col) > 1 else math.nan,
                  "gaining": float((col > 0).double().mean()) if len(col) else math.nan,
                  "crops": len(col)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="the renderer (an amnet checkpoint)")
    p.add_argument("--predictor", action="append", default=[], metavar="PATH",
                   help="models whose predictors to compare (repeat)")
    p.add_argument("--data", default="Set14")
    p.add_argument("--sigmas", nargs="+", type=float, default=[1.3, 2.6, 3.6])
    p.add_argument("--offsets", nargs="+", type=float,
                   default=[-0.8, -0.4, -0.2, -0.1, 0.0, 0.1, 0.2, 0.4, 0.8])
    p.add_argument("--shifts", nargs="*", type=float, default=[],
                   help="offsets in sigma added to the first predictor's codes (none: skip)")
    p.add_argument("--reward", default="psnr")
    p.add_argument("--real", default=None, metavar="SET",
                   help="LR-only set whose whole images get the --shifts too (no-reference "
                        "reward only)")
    p.add_argument("--real-crop-sizes", nargs="*", type=int, default=[], metavar="PX",
                   help="also score the --shifts on random square LR crops of the --real "
                        "images of these sizes (reward change per crop)")
    p.add_argument("--real-crops", type=int, default=2, help="random crops per real image")
    p.add_argument("--crops", type=int, default=8, help="random crops per image")
    p.add_argument("--patch", type=int, default=96, help="HR crop size (the training patch)")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.real and not (args.shifts and args.predictor):
        print("error: --real needs --shifts and a --predictor", file=sys.stderr)
        return 1
    if args.real_crop_sizes and not args.real:
        print("error: --real-crop-sizes needs --real", file=sys.stderr)
        return 1
    if any(px < 1 for px in args.real_crop_sizes) or args.real_crops < 1:
        print("error: --real-crop-sizes and --real-crops must be positive", file=sys.stderr)
        return 1
    try:
        if args.real and get_reward(args.reward).needs_hr:
            raise BlindSRError(f"--real {args.real}: reward {args.reward} needs HR; use a "
                               "no-reference reward (--reward neg_niqe)")
        renderer = load_model(args.model).eval()
        predictors = {path: load_model(path).eval() for path in args.predictor}
        images = [img for _, img in load_images(args.data, args.max_images, "hr")]
        crops = random_crops(images, args.crops, args.patch, args.seed)
        first = next(iter(predictors.values()), None)
        whole = [mod_crop(x) for x in images]
        rows = []
        with torch.inference_mode():
            for sigma in args.sigmas:
                rows.append({
                    "sigma": sigma,
                    "landscape": landscape(renderer, crops, sigma, args.offsets, args.reward),
                    "predicted": {k: predicted_sigmas(m, crops, images, sigma)
                                  for k, m in predictors.items()}})
                if args.shifts and predictors:
                    rows[-1]["shifted"] = {
                        "crops": shifted(renderer, first, [crops], sigma, args.shifts,
                                         args.reward, False),
                        "whole": shifted(renderer, first, whole, sigma, args.shifts,
                                         args.reward, True)}
            real, real_crops = None, {}
            if args.real:
                lrs = [x for _, x in load_images(args.real, args.max_images, "lr")]
                real = shifted_real(renderer, first, lrs, args.shifts, args.reward)
                real_crops = {px: real_crop_gains(renderer, first, lrs, args.shifts, args.reward,
                                                  px, args.real_crops, args.seed)
                              for px in args.real_crop_sizes}
    except BlindSRError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.data}: {len(crops)} crops of {args.patch} px, {len(images)} whole images; "
          f"reward {args.reward}; {machine_description()}")
    print("\n| sigma | " + " | ".join(f"{d:+g}" for d in args.offsets) + " |")
    print("|---" * (len(args.offsets) + 1) + "|")
    for r in rows:
        print(f"| {r['sigma']} | " + " | ".join(f"{v:.3f}" for v in r["landscape"].values())
              + " |")
    if predictors:
        print("\n| sigma | predictor | on crops | on whole images |\n|---|---|---|---|")
        for r in rows:
            for k, v in r["predicted"].items():
                print(f"| {r['sigma']} | {k} | {v['crops']:.2f} | {v['whole']:.2f} |")
    if any("shifted" in r for r in rows):
        print(f"\n{next(iter(predictors))}'s codes moved by an offset in sigma: mean reward\n")
        print("| sigma | on | " + " | ".join(f"{d:+g}" for d in args.shifts) + " |")
        print("|---|---" + "|---" * len(args.shifts) + "|")
        for r in rows:
            for on, v in r["shifted"].items():
                print(f"| {r['sigma']} | {on} | " + " | ".join(f"{x:.3f}" for x in v.values())
                      + " |")
    if real is not None:
        print(f"\n{args.real} (LR only, whole images): mean reward with the codes moved\n")
        print("| set | images | " + " | ".join(f"{d:+g}" for d in args.shifts) + " |")
        print("|---|---" + "|---" * len(args.shifts) + "|")
        print(f"| {args.real} | {next(iter(real.values()))['images']} | "
              + " | ".join(f"{v['mean']:.3f}" for v in real.values()) + " |")
    if real_crops:
        print(f"\n{args.real}, random LR crops: reward change per crop against the unshifted "
              "code, mean +- std (share of crops that gain)\n")
        print("| LR crop | crops | " + " | ".join(f"{d:+g}" for d in args.shifts) + " |")
        print("|---|---" + "|---" * len(args.shifts) + "|")
        for px, cols in real_crops.items():
            print(f"| {px} px | {next(iter(cols.values()))['crops']} | " + " | ".join(
                f"{v['mean_gain']:+.3f} +- {v['std']:.3f} ({v['gaining']:.0%})"
                for v in cols.values()) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows, "real": real,
                                              "real_crops": real_crops}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
