"""How far each model is from HR and from bicubic on training crops through the random pipeline.

Backs the EATS weight choice (`configs/eats/eats_w0.1.yaml`): EATS adds
``w * ||f'(LR) - Bicubic(LR)||_1``, and since f' differs from f by one filter, a network pays about
``w * ||f(LR) - Bicubic(LR)||_1`` for it. Bicubic itself pays nothing there, so once ``w`` exceeds
``(L1(Bicubic, HR) - L1(f, HR)) / L1(f, Bicubic)`` bicubic is the cheaper answer (printed as
``bicubic cheaper above w``).

    python benchmarks/bicubic_gap.py --model runs/eats_srresnet_original/model.safetensors \
        --model runs/eats_srresnet_eats/model.safetensors

Crops: the first ``--crops`` training images (T91 then BSD200, sorted) at least ``--patch`` wide,
their top-left ``--patch`` square, degraded by the random second-order pipeline (seed
``--seed``), x4.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from blindsr import zoo
from blindsr.data import corner_crops
from blindsr.degrade.random import second_order
from blindsr.errors import BlindSRError
from blindsr.ops import imresize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="repeat to compare")
    parser.add_argument("--crops", type=int, default=40)
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        hr = corner_crops(("T91", "BSD200"), args.crops, args.patch)
    except BlindSRError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    lr = second_order(hr, 4, generator=torch.Generator().manual_seed(args.seed))
    bicubic = imresize(lr, 4).clamp(0, 1)
    base = (bicubic - hr).abs().mean().item()
    rows = {"bicubic": {"l1_hr": round(base, 5)}}
    print(f"bicubic: L1 to HR {base:.4f}")
    for name in args.model:
        model = zoo.load(name, 4, "cpu").eval()
        with torch.inference_mode():
            sr = model(lr).clamp(0, 1)
        to_hr = (sr - hr).abs().mean().item()
        to_bicubic = (sr - bicubic).abs().mean().item()
        threshold = (base - to_hr) / to_bicubic if to_bicubic > 0 else None  # None: it is bicubic
        rows[name] = {"l1_hr": round(to_hr, 5), "l1_bicubic": round(to_bicubic, 5),
                      "bicubic_cheaper_above_w": None if threshold is None else round(threshold, 3)}
        shown = "never (it is bicubic)" if threshold is None else f"w = {threshold:.2f}"
        print(f"{name}: L1 to HR {to_hr:.4f}, to bicubic {to_bicubic:.4f}, "
              f"bicubic cheaper above {shown}")
    print(json.dumps({"crops": args.crops, "patch": args.patch, "seed": args.seed,
                      "models": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
