"""Upscaling speed: blindsr's Upscaler against a plain reference forward of the same weights.

The reference is what a straightforward script does (and what Real-ESRGAN's inference does): fp32,
NCHW, ``torch.no_grad()``, tiles sent one at a time. blindsr runs with ``inference_mode``,
``channels_last`` and batched tiles. Both run in this process on the same input, side by side;
the script prints ms per input megapixel, the speed-up ratio, and the largest output difference.

    python benchmarks/upscale_speed.py            # full-size SRResNet and RRDBNet
    python benchmarks/upscale_speed.py --quick    # tiny widths, a smoke run
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from blindsr import archs
from blindsr.inference import Settings, Upscaler
from blindsr.tiling import run_tiled


def reference_forward(model: torch.nn.Module):
    """The plain forward: NCHW fp32, no_grad, one tile at a time."""

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([model(batch[i:i + 1]) for i in range(batch.shape[0])]).clamp(0, 1)

    return forward


def timed(fn) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def side_by_side(ref, ours, repeats: int) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """Best-of-``repeats`` times of two functions run alternately (after one warm-up each), so
    that load from elsewhere on the machine hits both alike; returns times and outputs."""
    ref(), ours()
    ref_times, our_times = [], []
    for _ in range(repeats):
        t, ref_out = timed(ref)
        ref_times.append(t)
        t, our_out = timed(ours)
        our_times.append(t)
    return min(ref_times), min(our_times), ref_out, our_out


def bench(name: str, kwargs: dict, size: int, tile: int, pad: int, batch: int,
          repeats: int) -> list[dict]:
    torch.manual_seed(0)
    model = archs.build(name, **kwargs).eval()
    scale = model.scale
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    megapixels = size * size / 1e6
    rows = []
    for tiled in (False, True):
        t, p = (tile, pad) if tiled else (size, 0)
        for dtype in ("fp32", "bf16"):
            upscaler = Upscaler(model, Settings(tile=t, tile_pad=p, batch=batch, dtype=dtype,
                                                device="cpu"))
            ref_time, our_time, ref_out, our_out = side_by_side(
                lambda t=t, p=p: run_tiled(reference_forward(model), x, scale, t, p, 1),
                lambda u=upscaler: u.upscale_tensor(x), repeats)
            rows.append({
                "model": name, "tiled": f"{t}+{p}" if tiled else "no", "dtype": dtype,
                "ref_ms_per_mp": ref_time * 1e3 / megapixels,
                "ms_per_mp": our_time * 1e3 / megapixels,
                "speedup": ref_time / our_time,
                "max_diff_255": (our_out - ref_out).abs().max().item() * 255,
            })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny widths (smoke test)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--sizes", type=int, nargs=2, default=(128, 64),
                        metavar=("SRRESNET", "RRDB"),
                        help="input image side for the full-size SRResNet and RRDBNet")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        cases = [("srresnet", {"num_feat": 16, "num_block": 2}, 48, 32, 8, 4),
                 ("rrdbnet", {"num_feat": 16, "num_block": 1, "num_grow_ch": 8}, 48, 32, 8, 4)]
    else:
        sr_side, rrdb_side = args.sizes
        cases = [("srresnet", {}, sr_side, sr_side // 2, 16, 4),
                 ("rrdbnet", {}, rrdb_side, rrdb_side // 2, 8, 4)]
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| model | tiles (tile+pad) | dtype | reference ms/MP | blindsr ms/MP | speed-up "
          "| max diff (/255) |")
    print("|---|---|---|---|---|---|---|")
    for name, kwargs, size, tile, pad, batch in cases:
        for r in bench(name, kwargs, size, tile, pad, batch, args.repeats):
            print(f"| {r['model']} | {r['tiled']} | {r['dtype']} | {r['ref_ms_per_mp']:.0f} "
                  f"| {r['ms_per_mp']:.0f} | {r['speedup']:.2f}x | {r['max_diff_255']:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
