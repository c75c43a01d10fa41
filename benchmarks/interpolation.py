"""Network interpolation sweeps: quality along ``(1 - w) * A + w * B`` for the shipped pairs.

    python benchmarks/interpolation.py                          # both pairs, w = 0, 0.2, ..., 1
    python benchmarks/interpolation.py --pair gan --max-images 1 --out /tmp/x   # a smoke run

Pairs (each B was trained on from A's weights, or both from one parent):

- ``gan``: ``andnet-x4`` -> ``andgan-x4``, PSNR-Y and LPIPS on clean and b+n+j: ESRGAN's
  fidelity / texture knob.
- ``denoise``: ``blindsr-x4-classical`` -> ``blindsr-x4``, PSNR-Y on the eight EATS configs:
  Real-ESRGAN's denoise-strength knob.

Every model is built by `blindsr.interpolate.interpolate` (the same weights ``blindsr
interpolate`` writes) and scored by `blindsr.evaluate` (the numbers ``blindsr eval`` prints).
Writes ``<out>_<pair>.{json,csv,md}`` (default ``benchmarks/results/interpolation``): a block per
set, a row per weight.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from blindsr.evaluate import evaluate, format_tables, write_results
from blindsr.interpolate import interpolate
from blindsr.machine import machine_description

HERE = Path(__file__).resolve().parent
EATS = ["clean", "blur", "noise", "jpeg", "b+n", "b+j", "n+j", "b+n+j"]
# pair -> (A, B, degradations, metrics)
PAIRS = {
    "gan": ("andnet-x4", "andgan-x4", ["clean", "b+n+j"], ["psnr", "lpips"]),
    "denoise": ("blindsr-x4-classical", "blindsr-x4", EATS, ["psnr"]),
}


def label(a: str, b: str, weight: float) -> str:
    """Row name of one weight: the endpoints carry their model's name."""
    name = a if weight == 0 else b if weight == 1 else ""
    return f"w={weight:.1f}" + (f" ({name})" if name else "")


def sweep(pair: str, weights: list[float], data: list[str], max_images: int | None) -> tuple:
    """Evaluate every interpolated model of ``pair``; returns (results, seconds)."""
    a, b, degradations, metrics = PAIRS[pair]
    models = {label(a, b, w): interpolate(a, b, w) for w in weights}
    start = time.perf_counter()
    results = evaluate(models, data, degradations, metrics, max_images=max_images)
    return results, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", choices=[*PAIRS, "all"], default="all")
    parser.add_argument("--weights", type=float, nargs="+",
                        default=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    parser.add_argument("--data", default="Set5,Set14")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "interpolation")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for pair in PAIRS if args.pair == "all" else [args.pair]:
        results, seconds = sweep(pair, args.weights, args.data.split(","), args.max_images)
        a, b, _, _ = PAIRS[pair]
        meta = {"pair": pair, "a": a, "b": b, "weights": args.weights, "data": args.data,
                "max_images": args.max_images, "seconds": round(seconds, 1),
                "threads": torch.get_num_threads(), "machine": machine_description()}
        out = args.out.with_name(f"{args.out.name}_{pair}")
        write_results(results, out, meta)
        print(f"## {pair}: (1 - w) x {a} + w x {b} ({seconds:.0f} s)\n")
        print(format_tables(results) + "\n")


if __name__ == "__main__":
    main()
