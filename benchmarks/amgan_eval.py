"""AMNet / AMGAN / RL evaluation (issue 8): the "Measured" table of the kernel-modulated models.

For each Gaussian kernel width sigma (default 0.2 / 1.3 / 2.6) on each set (default Set5 and
Set14 x4, their HR images), LR = ``blur_downsample(HR, sigma, 4, quantize=True)`` (21x21
isotropic Gaussian + MATLAB bicubic, 8-bit: the ``iso<sigma>`` preset). Every model runs on the
whole LR image in one pass (no tiles, so the predictor sees the whole image):

- AMNet with the true code (the upper bound), AMNet with its supervised predictor,
  AMNet-RL (its RL-trained predictor), AMGAN with the true code and with its predictor,
  AMGAN-RL; bicubic as a reference. The true code is ``model.render(lr, coder.encode(sigma))``
  with the coder read FROM THE MODEL (its recorded ``sigma_range`` and code length:
  :func:`blindsr.degrade.kernel_code.coder_of_model`); a model without recorded units, or a
  ``--sigmas`` value outside a model's range, is a one-line error. Predictor codes are clamped
  into the model's ``code_box`` by the model itself.
- PSNR / SSIM on Y and LPIPS (AlexNet), ``crop_border`` = 4 (the literature's conventions, as
  ``blindsr eval``); grayscale images are taken as RGB with three equal channels.
- The reward each RL model optimises (``--amnet-rl-reward``, default ``psnr``;
  ``--amgan-rl-reward``, default ``neg_niqe``: :mod:`blindsr.rewards` on whole images), RL
  against its own supervised predictor on the same held-out images, with the RL run's budget
  (iterations, wall time, device) read from the checkpoint's metadata.
- With ``--crops N``, the same comparison on the distribution the RL runs train on: ``N`` random
  ``--crop-patch`` crops of each held-out image, each blurred with its own sigma drawn uniformly
  from the model's range (seeded: ``--seed``), the reward of every predictor-driven model (and
  the true code) averaged over the crops, rows with sigma ``uniform`` (images smaller than the
  patch are skipped; the table says how many were used).
- NIQE (MATLAB conventions, gray) on RealSRSet (LR only, no ground truth) for every model run
  with its predictor.

Writes ``OUT.json`` (every mean, per set / sigma / model) and ``OUT.md`` (the tables), OUT
defaulting to ``benchmarks/results/amgan_eval``. Any model may be left out.

    python benchmarks/amgan_eval.py --amnet amnet-x4 \\
        --amnet-rl runs/amnet_rl_psnr/model.safetensors --amgan amgan-x4 \\
        --amgan-rl runs/amgan_rl_niqe/model.safetensors
    python benchmarks/amgan_eval.py ... --max-images 2 --sigmas 1.3   # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from blindsr import data, io
from blindsr.checkpoint import checkpoint_file, load_model, read_checkpoint
from blindsr.degrade.kernel_code import KernelCoder, blur_downsample, coder_of_model
from blindsr.errors import BlindSRError
from blindsr.machine import machine_description
from blindsr.metrics import lpips, niqe, psnr, ssim
from blindsr.ops.resize import imresize
from blindsr.rewards import get_reward

SCALE = 4
ROOT = Path(__file__).resolve().parents[1]
MODELS = ("amnet", "amnet-rl", "amgan", "amgan-rl")


@dataclass
class Variant:
    """One row of the tables: a model and how its kernel code is chosen."""

    label: str
    model: nn.Module | None  # None: bicubic
    code: str  # "true" | "predictor" | "none"


def _coder(model: nn.Module) -> KernelCoder:
    return coder_of_model(model)


def check_units(models: dict[str, nn.Module], sigmas: list[float]) -> None:
    """A one-line error for a model without recorded code units, or a sigma outside the range
    a model was trained on."""
    for name, m in models.items():
        try:
            lo, hi = _coder(m).sigma_range
        except BlindSRError as e:
            raise BlindSRError(f"--{name}: {e}") from None
        outside = [s for s in sigmas if not lo <= s <= hi]
        if outside and not name.endswith("-rl"):
            raise BlindSRError(f"--sigmas {outside[0]}: outside the sigma range [{lo}, {hi}] the "
                               f"--{name} model was trained on")


def run(variant: Variant, lr: Tensor, sigma: float | Tensor | None) -> Tensor:
    """SR of an LR batch (N, 3, h, w) in [0, 1]; ``sigma``: one width for all, or one each."""
    with torch.inference_mode():
        if variant.model is None:
            return imresize(lr, SCALE).clamp(0, 1)
        if variant.code == "true":
            sigmas = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1)
            code = _coder(variant.model).encode(sigmas).reshape(len(sigmas), -1).to(lr)
            return variant.model.render(lr, code).clamp(0, 1)
        return variant.model(lr).clamp(0, 1)


def mod_crop(img: Tensor) -> Tensor:
    """``img`` cropped at the bottom / right to a multiple of the scale."""
    h, w = img.shape[-2:]
    return img[..., : h - h % SCALE, : w - w % SCALE]


def variants(models: dict[str, nn.Module]) -> list[Variant]:
    """The table rows available for the given models, in a fixed order."""
    out = [Variant("bicubic", None, "none")]
    for name in MODELS:
        m = models.get(name)
        if m is None:
            continue
        if not name.endswith("-rl"):
            out.append(Variant(f"{name} (true code)", m, "true"))
        if getattr(m, "predictor", None) is not None:
            label = name if name.endswith("-rl") else f"{name} (predictor)"
            out.append(Variant(label, m, "predictor"))
    return out


def _rgb(img: Tensor) -> Tensor:
    return img.expand(-1, 3, -1, -1) if img.shape[1] == 1 else img


def load_images(spec: str, max_images: int | None, kind: str) -> list[tuple[str, Tensor]]:
    """(name, 1x3xHxW image) pairs: the HR images of a set (``kind`` "hr") or its LR ones."""
    ds = data.resolve_dataset(spec, SCALE)
    pairs = data.list_pairs(ds)[:max_images]
    out = []
    for hr, lr in pairs:
        path = hr if kind == "hr" else (lr if lr is not None else hr)
        if path is None:
            raise BlindSRError(f"{spec}: has no {kind.upper()} images")
        out.append((path.stem, _rgb(io.read_image(path).color.float())))
    return out


def score_synthetic(rows: list[Variant], sets: list[str], sigmas: list[float],
                    rewards: list[str], device: torch.device,
                    max_images: int | None) -> list[dict]:
    """Mean PSNR/SSIM-Y, LPIPS and rewards per (set, sigma, variant)."""
    reward_fns = {name: get_reward(name) for name in rewards}
    results = []
    for spec in sets:
        images = load_images(spec, max_images, "hr")
        for sigma in sigmas:
            sums: dict[str, dict[str, list[float]]] = {v.label: {} for v in rows}
            for _, hr in images:
                hr = mod_crop(hr).to(device)
                lr = blur_downsample(hr, sigma, SCALE, quantize=True)
                for v in rows:
                    sr = run(v, lr, sigma)
                    vals = {"psnr": psnr(sr, hr, SCALE, True), "ssim": ssim(sr, hr, SCALE, True),
                            "lpips": lpips(sr, hr, crop_border=SCALE)}
                    vals.update({f"reward/{n}": f(sr, hr, lr) for n, f in reward_fns.items()})
                    for k, val in vals.items():
                        sums[v.label].setdefault(k, []).append(float(val.double().mean()))
            for label, metrics in sums.items():
                results.append({"set": Path(spec).name, "sigma": sigma, "model": label,
                                "images": len(images),
                                **{k: sum(x) / len(x) for k, x in metrics.items()}})
    return results


def random_crops(images: list[Tensor], per_image: int, size: int, seed: int) -> Tensor:
    """``per_image`` random ``size`` crops of each image (smaller images are skipped)."""
    g = torch.Generator().manual_seed(seed)
    crops = []
    for x in images:
        h, w = x.shape[-2:]
        if h < size or w < size:
            continue
        for _ in range(per_image):
            top = int(torch.randint(h - size + 1, (1,), generator=g))
            left = int(torch.randint(w - size + 1, (1,), generator=g))
            crops.append(x[..., top:top + size, left:left + size])
    if not crops:
        raise BlindSRError(f"no image is at least {size} pixels a side")
    return torch.cat(crops)


def score_crops(rows: list[Variant], sets: list[str], rewards: list[str], per_image: int,
                patch: int, seed: int, device: torch.device, max_images: int | None,
                chunk: int = 16) -> list[dict]:
    """Mean rewards per (set, variant) on random crops (``seed``), each with its own sigma drawn
    uniformly from the models' common range (a stream seeded with ``seed + 1``): the training
    distribution of the RL runs. Non-finite rewards (NIQE of a flat crop) are left out and
    counted."""
    reward_fns = {name: get_reward(name) for name in rewards}
    rows = [v for v in rows if v.model is not None]
    ranges = {tuple(_coder(v.model).sigma_range) for v in rows}
    if len(ranges) != 1:
        raise BlindSRError(f"--crops: the models were trained on different sigma ranges "
                           f"{sorted(ranges)}; score them in separate runs")
    lo, hi = ranges.pop()
    results = []
    for spec in sets:
        images = [hr for _, hr in load_images(spec, max_images, "hr")]
        crops = random_crops(images, per_image, patch, seed).to(device)
        g = torch.Generator().manual_seed(seed + 1)
        sigma = lo + (hi - lo) * torch.rand(len(crops), generator=g, dtype=torch.float64)
        sums: dict[str, dict[str, list[Tensor]]] = {v.label: {} for v in rows}
        for i in range(0, len(crops), chunk):
            hr, s = crops[i:i + chunk], sigma[i:i + chunk].float()
            lr = blur_downsample(hr, s.to(device), SCALE, quantize=True)
            for v in rows:
                sr = run(v, lr, s)
                with torch.inference_mode():
                    for n, f in reward_fns.items():
                        sums[v.label].setdefault(f"reward/{n}", []).append(f(sr, hr, lr).double())
        used = sum(min(x.shape[-2:]) >= patch for x in images)
        for label, metrics in sums.items():
            row = {"set": Path(spec).name, "sigma": "uniform", "model": label,
                   "images": len(crops), "source_images": used}
            for k, x in metrics.items():
                x = torch.cat(x)
                finite = x[torch.isfinite(x)]
                row[k] = float(finite.mean()) if len(finite) else math.nan
                if len(finite) < len(x):
                    row[f"dropped/{k[7:]}"] = len(x) - len(finite)
            results.append(row)
    return results


def score_real(rows: list[Variant], real: str, device: torch.device,
               max_images: int | None) -> list[dict]:
    """Mean NIQE of every predictor-driven variant (and bicubic) on LR-only images."""
    images = load_images(real, max_images, "lr")
    out = []
    for v in rows:
        if v.code == "true":
            continue  # no true kernel for real images
        scores = [float(niqe(run(v, lr.to(device), None))[0]) for _, lr in images]
        finite = [s for s in scores if math.isfinite(s)]
        out.append({"set": Path(real).name, "model": v.label, "images": len(finite),
                    "niqe": sum(finite) / len(finite) if finite else math.nan})
    return out


def rl_comparison(synthetic: list[dict], rl: dict[str, str]) -> list[dict]:
    """For each RL model: its reward next to its supervised predictor's, per set and sigma."""
    out = []
    by_key = {(r["set"], r["sigma"], r["model"]): r for r in synthetic}
    for rl_name, reward in rl.items():
        base = f"{rl_name[:-3]} (predictor)"
        for (set_name, sigma, model), row in by_key.items():
            if model != rl_name or (set_name, sigma, base) not in by_key:
                continue
            before = by_key[(set_name, sigma, base)][f"reward/{reward}"]
            after = row[f"reward/{reward}"]
            out.append({"rl_model": rl_name, "baseline": base, "reward": reward, "set": set_name,
                        "sigma": sigma, "predictor": before, "rl": after, "gain": after - before})
    return out


def budget(path: str) -> dict:
    """The training summary saved with a model (iterations, wall time, machine, ...)."""
    _, meta = read_checkpoint(checkpoint_file(path))
    try:
        summary = json.loads(meta.get("summary", "{}"))
    except json.JSONDecodeError:
        summary = {}
    keys = ("config", "strategy", "iterations", "wall_time_s", "device", "batch", "patch")
    return {k: summary[k] for k in keys if k in summary}


def _f(x: float, digits: int) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def markdown(result: dict) -> str:
    """The tables of ``result`` as Markdown."""
    lines = ["# AMNet / AMGAN / RL evaluation", "",
             f"`{result['command']}`", "", f"Machine: {result['machine']}.", ""]
    syn = result["synthetic"]
    for set_name in dict.fromkeys(r["set"] for r in syn):
        lines += [f"## {set_name} x{SCALE}: PSNR-Y / SSIM-Y / LPIPS by kernel width", ""]
        sigmas = list(dict.fromkeys(r["sigma"] for r in syn if r["set"] == set_name))
        lines.append("| model | " + " | ".join(f"sigma {s}" for s in sigmas) + " |")
        lines.append("|---|" + "---|" * len(sigmas))
        for model in dict.fromkeys(r["model"] for r in syn):
            cells = []
            for s in sigmas:
                r = next(x for x in syn if (x["set"], x["sigma"], x["model"]) ==
                         (set_name, s, model))
                cells.append(f"{_f(r['psnr'], 2)} / {_f(r['ssim'], 4)} / {_f(r['lpips'], 4)}")
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
        lines.append("")
    crops = result.get("crops", [])
    if crops:
        c = result["crop_protocol"]
        lines += [f"## Held-out crops: {c['per_image']} random {c['patch']}-pixel crops per image, "
                  f"sigma uniform over the range per crop (seed {c['seed']}): mean reward", "",
                  "Images smaller than the patch are skipped (images: those used).", "",
                  "| set | model | images | crops | " + " | ".join(
                      k[7:] for k in crops[0] if k.startswith("reward/")) + " |",
                  "|---|---|---|---|" + "---|" * sum(k.startswith("reward/") for k in crops[0])]
        for r in crops:
            lines.append(f"| {r['set']} | {r['model']} | {r['source_images']} | {r['images']} | "
                         + " | ".join(
                _f(v, 4) for k, v in r.items() if k.startswith("reward/")) + " |")
        lines.append("")
    if result["rl"]:
        lines += ["## RL against its supervised predictor (the reward it optimises)", "",
                  "| RL model | reward | set | sigma | predictor | RL | gain |",
                  "|---|---|---|---|---|---|---|"]
        for r in result["rl"]:
            lines.append(f"| {r['rl_model']} | {r['reward']} | {r['set']} | {r['sigma']} | "
                         f"{_f(r['predictor'], 4)} | {_f(r['rl'], 4)} | {r['gain']:+.4f} |")
        lines.append("")
        for name, b in result["budgets"].items():
            if name.endswith("-rl"):
                lines.append(f"- {name} budget: " + ", ".join(f"{k} {v}" for k, v in b.items()))
        lines.append("")
    if result["real"]:
        lines += [f"## NIQE on {result['real'][0]['set']} (LR only; lower is better)", "",
                  "| model | NIQE | images |", "|---|---|---|"]
        for r in result["real"]:
            lines.append(f"| {r['model']} | {_f(r['niqe'], 4)} | {r['images']} |")
        lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in MODELS:
        p.add_argument(f"--{name}", default=None, metavar="PATH", help=f"{name} model file")
    p.add_argument("--amnet-rl-reward", default="psnr", help="reward AMNet-RL was trained on")
    p.add_argument("--amgan-rl-reward", default="neg_niqe", help="reward AMGAN-RL was trained on")
    p.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    p.add_argument("--sigmas", nargs="+", type=float, default=[0.2, 1.3, 2.6])
    p.add_argument("--crops", type=int, default=0,
                   help="also score N random crops per image with uniform sigmas (0: skip)")
    p.add_argument("--crop-patch", type=int, default=96, help="HR crop size for --crops")
    p.add_argument("--seed", type=int, default=0, help="crops and their sigmas")
    p.add_argument("--real", default="RealSRSet", help="LR-only set for NIQE ('' to skip)")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "amgan_eval"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    paths = {n: getattr(args, n.replace("-", "_")) for n in MODELS}
    paths = {n: p for n, p in paths.items() if p}
    models = {n: load_model(p, device=device) for n, p in paths.items()}
    for name, m in models.items():
        if getattr(m, "arch_name", None) != "amnet" or m.scale != SCALE:
            raise BlindSRError(f"--{name}: expected an x{SCALE} amnet model, got "
                               f"{getattr(m, 'arch_name', '?')} x{getattr(m, 'scale', '?')}")
    check_units(models, args.sigmas)
    rl = {n: getattr(args, f"{n.replace('-', '_')}_reward") for n in models if n.endswith("-rl")}
    if args.crops and not rl:
        raise BlindSRError("--crops scores the rewards of RL models: give --amnet-rl or --amgan-rl")
    if args.crops < 0 or args.crop_patch <= 0 or args.crop_patch % SCALE:
        raise BlindSRError(f"--crops must be >= 0 and --crop-patch a positive multiple of {SCALE}, "
                           f"got {args.crops} and {args.crop_patch}")
    rows = variants(models)
    started = time.perf_counter()
    synthetic = score_synthetic(rows, args.sets, args.sigmas, sorted(set(rl.values())), device,
                                args.max_images)
    crops = score_crops(rows, args.sets, sorted(set(rl.values())), args.crops, args.crop_patch,
                        args.seed, device, args.max_images) if args.crops else []
    real = score_real(rows, args.real, device, args.max_images) if args.real else []
    result = {
        "command": "python benchmarks/amgan_eval.py " + " ".join(argv if argv is not None
                                                                  else sys.argv[1:]),
        "machine": f"{machine_description()}, {args.device}, "
                   f"{torch.get_num_threads()} threads, torch {torch.__version__}",
        "seconds": round(time.perf_counter() - started, 1),
        "models": paths, "budgets": {n: budget(p) for n, p in paths.items()},
        "synthetic": synthetic, "crops": crops,
        "crop_protocol": {"per_image": args.crops, "patch": args.crop_patch, "seed": args.seed},
        "rl": rl_comparison(synthetic + crops, rl), "real": real,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result) + "\n")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BlindSRError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
