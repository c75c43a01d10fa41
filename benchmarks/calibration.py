"""Metric calibration: blindsr's PSNR, LPIPS, DISTS and NIQE on the shared TID2013 pairs, beside
the reference implementations' published values.

    python benchmarks/calibration.py [--shared ../shared]

References: REFERENCE.md of ../shared/calibration (LPIPS-alex, PSNR); the DISTS authors' PyTorch
release and MATLAB NIQE (gray input), as collected in IQA-PyTorch's ResultsCalibra table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from blindsr import metrics
from blindsr.io import read_image

PAIRS = ("I03", "I04", "I06", "I08", "I19")
REFERENCE = {
    "lpips (alex)": (0.7237, 0.2572, 0.0508, 0.0521, 0.4253),
    "psnr (RGB)": (21.11, 20.99, 27.01, 23.30, 21.62),
    "dists": (0.4742, 0.1424, 0.06825, 0.02867, 0.3123),
    "niqe (gray)": (15.7536, 3.6549, 3.2355, 3.1840, 8.6352),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared")
    args = parser.parse_args()
    root = args.shared / "calibration"
    ours: dict[str, list[float]] = {name: [] for name in REFERENCE}
    ours["lpips (vgg)"] = []
    for pair in PAIRS:
        dist = read_image(root / "dist" / f"{pair}.png").color
        ref = read_image(root / "ref" / f"{pair}.png").color
        ours["lpips (alex)"].append(metrics.lpips(dist, ref, net="alex").item())
        ours["lpips (vgg)"].append(metrics.lpips(dist, ref, net="vgg").item())
        ours["psnr (RGB)"].append(metrics.psnr(dist, ref).item())
        ours["dists"].append(metrics.dists(dist, ref).item())
        ours["niqe (gray)"].append(metrics.niqe(dist).item())
    print("| metric | source | " + " | ".join(PAIRS) + " | max abs diff |")
    print("|---|---|" + "---|" * (len(PAIRS) + 1))
    for name, values in ours.items():
        print(f"| {name} | blindsr | " + " | ".join(f"{v:.4f}" for v in values) + " | |")
        if name in REFERENCE:
            diff = max(abs(a - b) for a, b in zip(values, REFERENCE[name], strict=True))
            print(f"| {name} | reference | " + " | ".join(f"{v}" for v in REFERENCE[name])
                  + f" | {diff:.4f} |")


if __name__ == "__main__":
    main()
