"""Does the AMNet-RL actor's gain on training-sized crops reach whole images when inference
shows it states of that size? (issue 8 diagnostic)

The RL actors gain PSNR on held-out crops of the states' size and lose it on whole images at
larger kernel widths (``benchmarks/RESULTS.md``). If the cause is only that whole images are
other states than those it learnt on, matching the states at inference should carry the gain
over. Two ways of doing that are scored here against the usual one, for each ``--predictor``
(the supervised predictor first, then RL actors), with the frozen renderer of ``--model``, on
the whole HR images of each set blurred with each width (the ``iso<sigma>`` LR, PSNR-Y, border 4):

- ``whole``: one code predicted on the whole LR image (what ``blindsr upscale`` does);
- ``tile-mean``: the mean of the codes predicted on LR tiles of ``--state`` pixels (the
  states' size; tiles overlap by half), one code for the image;
- ``per-tile``: each ``--state`` tile rendered with its own code, with ``--context`` LR pixels
  of context on each side (reflected at the borders), the tiles' centres put together.

The true code's PSNR is the upper bound. Writes OUT.json and OUT.md.

    python benchmarks/amrl_state_match.py --model amnet-x4 --predictor amnet-x4 \\
        --predictor runs/amnet_rl_psnr/model.safetensors --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blindsr.checkpoint import load_model
from blindsr.degrade.kernel_code import blur_downsample, coder_of_model
from blindsr.errors import BlindSRError
from blindsr.machine import machine_description
from blindsr.metrics import psnr
from blindsr.paths import result_paths

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts
from amgan_eval import SCALE, load_images, mod_crop  # noqa: E402

MODES = ("whole", "tile-mean", "per-tile")


def tile_origins(size: int, tile: int, stride: int) -> list[int]:
    """Tile starts covering ``size`` pixels (the last one flush with the end)."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, stride))
    return starts if starts[-1] == size - tile else [*starts, size - tile]


def tiles(lr: Tensor, tile: int, stride: int) -> tuple[Tensor, list[tuple[int, int]]]:
    """The ``tile`` x ``tile`` crops of a (1, 3, h, w) image (smaller sides: the whole side)
    and their origins."""
    h, w = lr.shape[-2:]
    origins = [(y, x) for y in tile_origins(h, tile, stride) for x in tile_origins(w, tile, stride)]
    crops = [lr[:, :, y:y + tile, x:x + tile] for y, x in origins]
    return torch.cat(crops), origins


def predicted(predictor: nn.Module, lr: Tensor) -> Tensor:
    """The predictor's code(s) of an LR batch, clamped into its model's code box."""
    return predictor.clamp_code(predictor.predictor(lr))


def render_per_tile(renderer: nn.Module, predictor: nn.Module, lr: Tensor, state: int,
                    context: int) -> Tensor:
    """SR of ``lr`` with every ``state`` tile rendered under its own predicted code."""
    h, w = lr.shape[-2:]
    cores, origins = tiles(lr, state, state)  # a partition, but for the last row / column
    padded = F.pad(lr, (context,) * 4, mode="reflect")
    t = cores.shape[-1], cores.shape[-2]
    windows = torch.cat([padded[:, :, y:y + t[1] + 2 * context, x:x + t[0] + 2 * context]
                         for y, x in origins])
    srs = renderer.render(windows, predicted(predictor, cores))
    out = torch.zeros(1, 3, h * SCALE, w * SCALE, dtype=srs.dtype)
    c = context * SCALE
    for (y, x), sr in zip(origins, srs, strict=True):
        out[0, :, y * SCALE:(y + t[1]) * SCALE, x * SCALE:(x + t[0]) * SCALE] = \
            sr[:, c:c + t[1] * SCALE, c:c + t[0] * SCALE]
    return out


def sr_of(mode: str, renderer: nn.Module, predictor: nn.Module, lr: Tensor, state: int,
          context: int) -> tuple[Tensor, Tensor | None]:
    """SR of one image under a code choice ``mode`` and the one code used (None per tile)."""
    if mode == "per-tile":
        return render_per_tile(renderer, predictor, lr, state, context), None
    if mode == "whole":
        code = predicted(predictor, lr)
    else:
        code = predicted(predictor, tiles(lr, state, max(1, state // 2))[0]).mean(0, keepdim=True)
    return renderer.render(lr, code), code


def score(renderer: nn.Module, predictors: dict[str, nn.Module], sets: list[str],
          sigmas: list[float], state: int, context: int, max_images: int | None) -> list[dict]:
    """Mean PSNR-Y (and mean decoded sigma of one-code modes) per set, width, predictor, mode."""
    coder = coder_of_model(renderer)
    rows = []
    with torch.inference_mode():
        for spec in sets:
            images = [mod_crop(hr) for _, hr in load_images(spec, max_images, "hr")]
            for sigma in sigmas:
                lrs = [blur_downsample(hr, sigma, SCALE, quantize=True) for hr in images]
                true = coder.encode(torch.tensor([sigma])).reshape(1, -1).float()
                bound = [float(psnr(renderer.render(lr, true).clamp(0, 1), hr, SCALE, True))
                         for lr, hr in zip(lrs, images, strict=True)]
                row = {"set": Path(spec).name, "sigma": sigma, "images": len(images),
                       "true": sum(bound) / len(bound), "psnr": {}, "sigma_used": {}}
                for label, predictor in predictors.items():
                    for mode in MODES:
                        vals, used = [], []
                        for lr, hr in zip(lrs, images, strict=True):
                            sr, code = sr_of(mode, renderer, predictor, lr, state, context)
                            vals.append(float(psnr(sr.clamp(0, 1), hr, SCALE, True)))
                            if code is not None:
                                used.append(float(coder.decode(code).reshape(-1)[0]))
                        key = f"{label} / {mode}"
                        row["psnr"][key] = sum(vals) / len(vals)
                        if used:
                            row["sigma_used"][key] = sum(used) / len(used)
                rows.append(row)
                print(f"{row['set']} sigma {sigma}: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in row["psnr"].items()), file=sys.stderr, flush=True)
    return rows


def markdown(result: dict) -> str:
    """The table: one row per set and width, a column per predictor and mode."""
    keys = list(result["rows"][0]["psnr"]) if result["rows"] else []
    lines = [f"PSNR-Y (dB) of `{result['model']}`'s renderer, whole images; in brackets the "
             "mean sigma of the one code used. States: "
             f"{result['state']} LR pixels, context {result['context']}.", "",
             "| set | sigma | true code | " + " | ".join(keys) + " |",
             "|---|---|---|" + "---|" * len(keys)]
    for r in result["rows"]:
        cells = [f"{r['psnr'][k]:.2f}" + (f" ({r['sigma_used'][k]:.2f})"
                                            if k in r["sigma_used"] else "") for k in keys]
        lines.append(f"| {r['set']} | {r['sigma']} | {r['true']:.2f} | " + " | ".join(cells)
                     + " |")
    lines += ["", f"Machine: {result['machine']}; {result['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the AMNet / AMGAN whose renderer is scored")
    p.add_argument("--predictor", action="append", required=True,
                   help="a model whose kernel predictor picks the codes (repeatable; the "
                        "supervised one first)")
    p.add_argument("--data", default="Set5,Set14", help="comma-separated HR sets")
    p.add_argument("--sigmas", type=float, nargs="+", default=[0.2, 1.3, 2.6])
    p.add_argument("--state", type=int, default=24, help="LR tile side (the RL states' size)")
    p.add_argument("--context", type=int, default=8, help="LR context pixels per-tile renders see")
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default="benchmarks/results/amrl_state_match")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.state < 4 or args.context < 0:
            raise BlindSRError("--state must be >= 4 and --context >= 0")
        renderer = load_model(args.model).eval()
        predictors = {}
        for i, path in enumerate(args.predictor):
            model = load_model(path).eval()
            if getattr(model, "predictor", None) is None:
                raise BlindSRError(f"{path}: has no kernel predictor")
            label = Path(path).parent.name if Path(path).suffix and "/" in path else path
            predictors[label if label not in predictors else f"{label} ({i})"] = model
        start = time.perf_counter()
        rows = score(renderer, predictors, [d for d in args.data.split(",") if d],
                     args.sigmas, args.state, args.context, args.max_images)
    except BlindSRError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    result = {"model": args.model, "predictors": args.predictor, "state": args.state,
              "context": args.context, "rows": rows, "machine": machine_description(),
              "seconds": time.perf_counter() - start,
              "command": "python benchmarks/amrl_state_match.py " + " ".join(argv)}
    json_path, _, md_path = result_paths(args.out)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    md_path.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
