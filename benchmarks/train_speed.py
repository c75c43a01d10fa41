"""Training speed: iterations/s of the `plain` strategy through the real loop, and the cost of the
random second-order degradation per batch, side by side in one run.

Each case runs `blindsr.train.train` for a few iterations on a folder of generated images (so the
figures are the loop's own: data, degradation on the device, forward, backward, Adam, EMA), and
reads the per-iteration speed from the run's metrics.jsonl, dropping the first iteration.

    python benchmarks/train_speed.py                    # batch 16, HR patch 128
    python benchmarks/train_speed.py --batch 8 --patch 96 --iterations 4
    python benchmarks/train_speed.py --quick            # small models only
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from blindsr.allocator import keep_freed_memory
from blindsr.config import load_config
from blindsr.degrade import second_order
from blindsr.train import train

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    "srresnet-small": ("srresnet", {"num_feat": 32, "num_block": 8}),
    "srresnet-full": ("srresnet", {"num_feat": 64, "num_block": 16}),
    "rrdbnet-small": ("rrdbnet", {"num_feat": 32, "num_block": 4, "num_grow_ch": 16}),
    "rrdbnet-full": ("rrdbnet", {"num_feat": 64, "num_block": 23, "num_grow_ch": 32}),
    "srvgg-48x16": ("srvgg", {"num_feat": 48, "num_conv": 16}),
    "srvgg-full": ("srvgg", {"num_feat": 64, "num_conv": 32}),  # realesr-general-x4v3's size
}


def make_images(folder: Path, n: int = 8, size: int = 256) -> None:
    """Smooth random images, so the degradation has real content to work on."""
    rng = np.random.default_rng(0)
    for i in range(n):
        small = rng.random((size // 16, size // 16, 3)) * 255
        image = Image.fromarray(small.astype(np.uint8)).resize((size, size), Image.BICUBIC)
        image.save(folder / f"img_{i:02d}.png")


def loop_speed(folder: Path, out: Path, arch: str, kwargs: dict, batch: int, patch: int,
               iterations: int, degradation: str) -> float:
    """Median it/s of the training loop (first iteration dropped)."""
    overrides = [
        f"data.train=[{{path: {folder}}}]", f"model.arch={arch}",
        f"model.kwargs={json.dumps(kwargs)}", f"train.batch={batch}", f"train.patch={patch}",
        f"train.iterations={iterations + 1}", "train.checkpoint_every=100000",
        f"degradation.kind={degradation}", "logging.every=1", f"name={arch}-{degradation}",
        f"output_dir={out}",
    ]
    cfg = load_config(ROOT / "configs" / "tiny.yaml", overrides)
    train(cfg, progress=False)
    rows = [json.loads(line) for line in (out / cfg.name / "metrics.jsonl").read_text().split("\n")
            if line.strip()]
    speeds = [r["it_s"] for r in rows if "it_s" in r and r["step"] > 1]
    return statistics.median(speeds)


def degradation_ms(batch: int, patch: int, scale: int, repeats: int) -> float:
    """Median ms of one random second-order degradation of a (batch, 3, patch, patch) batch."""
    hr = torch.rand(batch, 3, patch, patch, generator=torch.Generator().manual_seed(0))
    times = []
    for seed in range(repeats):
        start = time.perf_counter()
        second_order(hr, scale, generator=torch.Generator().manual_seed(seed))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=128, help="HR patch")
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per case")
    parser.add_argument("--quick", action="store_true", help="small models only")
    parser.add_argument("--cases", default=None, help=f"comma list of {', '.join(CASES)}")
    args = parser.parse_args()
    keep_freed_memory()  # as the blindsr command does
    names = args.cases.split(",") if args.cases else [n for n in CASES
                                                      if not args.quick or "small" in n]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; batch {args.batch}, HR patch {args.patch}, x4")
    deg = degradation_ms(args.batch, args.patch, 4, repeats=10)
    print(f"random second-order degradation: {deg:.0f} ms per batch (median of 10 seeds)\n")
    print("| model | it/s, bicubic LR | it/s, random second-order LR | s/it | degradation share |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "hr"
        folder.mkdir()
        make_images(folder, size=max(256, args.patch * 2))
        for name in names:
            arch, kwargs = CASES[name]
            common = (folder, Path(tmp) / "runs", arch, kwargs, args.batch, args.patch,
                      args.iterations)
            preset = loop_speed(*common, degradation="preset")
            random = loop_speed(*common, degradation="random")
            share = deg / (1e3 / random)
            print(f"| {name} | {preset:.3f} | {random:.3f} | {1 / random:.2f} | {share:.0%} |",
                  flush=True)


if __name__ == "__main__":
    main()
