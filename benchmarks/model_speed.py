"""Which model is faster: several models upscale the same input, timed alternately, as ratios.

Each model runs as `blindsr upscale` runs it (``blindsr.inference.Upscaler``: ``inference_mode``,
``channels_last``, fp32, batched tiles) on one random LR image; the models take turns, so load
from elsewhere on the machine hits all alike. Prints ms per input megapixel, parameters and
multiply-accumulates per LR pixel for each, and each model's time over the first one's.

    python benchmarks/model_speed.py --model blindsr-x4 \
        --model runs/srvgg_x4_blind/model.safetensors
    python benchmarks/model_speed.py --model arch:srresnet --model arch:srvgg   # random weights
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from blindsr import archs
from blindsr.allocator import keep_freed_memory
from blindsr.compress.measure import count_macs
from blindsr.inference import Settings, Upscaler
from blindsr.machine import machine_description


def load(name: str) -> torch.nn.Module | str:
    """``arch:NAME[:k=v,...]`` -> that architecture (x4) with random weights; else the name."""
    if not name.startswith("arch:"):
        return name
    arch, _, args = name[len("arch:"):].partition(":")
    kwargs = {k: int(v) for k, v in (a.split("=") for a in args.split(",") if a)}
    torch.manual_seed(0)
    return archs.build(arch, scale=4, **kwargs).eval()


def measure(names: list[str], size: int, repeats: int, tile: int | None) -> list[dict]:
    """One row per model: ms per input megapixel (median of ``repeats``), parameters, MACs per
    LR pixel, and the time ratio to the first model."""
    upscalers = {name: Upscaler(load(name), Settings(device="cpu", tile=tile)) for name in names}
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    for up in upscalers.values():
        up.upscale_tensor(x)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        for name, up in upscalers.items():
            start = time.perf_counter()
            up.upscale_tensor(x)
            times[name].append(time.perf_counter() - start)
    megapixels = size * size / 1e6
    rows = []
    for name, up in upscalers.items():
        ms = sorted(times[name])[len(times[name]) // 2] * 1e3 / megapixels
        rows.append({"model": name, "params": sum(p.numel() for p in up.model.parameters()),
                     "macs_per_lr_pixel": round(count_macs(up.model, (32, 32)) / 32 / 32),
                     "ms_per_mp": round(ms, 1)})
    for row in rows:
        row["time_vs_first"] = round(row["ms_per_mp"] / rows[0]["ms_per_mp"], 3)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[],
                        help="model name or path, or arch:NAME[:k=v,...] (random weights); "
                             "repeat, the first is the reference")
    parser.add_argument("--size", type=int, default=256, help="LR input side in pixels")
    parser.add_argument("--tile", type=int, default=None, help="tile size (default: automatic)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    args = parser.parse_args()
    if len(args.model) < 2:
        parser.error("give at least two --model")
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    rows = measure(args.model, args.size, args.repeats, args.tile)
    print(f"{machine_description()}, {torch.get_num_threads()} thread(s), "
          f"{args.size}x{args.size} LR input, median of {args.repeats}")
    print("| model | parameters | MACs per LR pixel | ms per input MP | time vs first |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['params']:,} | {r['macs_per_lr_pixel']:,} | "
              f"{r['ms_per_mp']} | {r['time_vs_first']} |")
    if args.out:
        args.out.write_text(json.dumps({"machine": machine_description(),
                                        "threads": torch.get_num_threads(),
                                        "size": args.size, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
