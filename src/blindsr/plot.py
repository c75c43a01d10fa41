"""``blindsr plot RUN_DIR [-o out.png]``: training curves from a run's ``metrics.jsonl``.

Panels (those with data): training losses (``train/*``, log scale), learning rates (``lr/*``),
validation PSNR and validation SSIM (``val/*/psnr``, ``val/*/ssim``) against the iteration.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from blindsr.atomic import save_figure
from blindsr.errors import BlindSRError
from blindsr.paths import prepare_output

PANELS = (  # (title, key filter, y label, log scale)
    ("training losses", lambda k: k.startswith("train/"), "loss", True),
    ("learning rate", lambda k: k.startswith("lr/"), "lr", True),
    ("validation PSNR", lambda k: k.startswith("val/") and k.endswith("psnr"), "PSNR (dB)", False),
    ("validation SSIM", lambda k: k.startswith("val/") and k.endswith("ssim"), "SSIM", False),
)


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``metrics.jsonl`` file (unreadable lines, e.g. cut by a kill, are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise BlindSRError(f"no metrics file: {path}")
    rows = []
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise BlindSRError(f"{path}: cannot read it as text ({e})") from None
    for line in lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
            rows.append(row)
    if lines and not rows:
        raise BlindSRError(f"{path}: not a metrics file (none of its {len(lines)} lines is a "
                           "JSON object with a step)")
    return rows


def series(rows: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """``key -> (steps, values)`` for every finite numeric value except step/time."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key in ("step", "time", "it_s") or isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and math.isfinite(value):
                xs, ys = out.setdefault(key, ([], []))
                xs.append(row["step"])
                ys.append(value)
    return out


def plot_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Draw the curves of ``run_dir/metrics.jsonl`` (or of a ``.jsonl`` file given directly)
    into a PNG (default ``curves.png`` beside the metrics file)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backend_bases import FigureCanvasBase

    given = Path(run_dir)
    # a run folder, or a metrics file itself (under any name: a copy, another run's log)
    metrics = given if given.is_file() or given.suffix == ".jsonl" else given / "metrics.jsonl"
    if metrics.suffix != ".jsonl":
        raise BlindSRError(f"{given}: not a run folder or a metrics file (.jsonl)")
    run_dir = metrics.parent
    target = Path(out) if out is not None else run_dir / "curves.png"
    if target.suffix.lower().lstrip(".") not in FigureCanvasBase.get_supported_filetypes():
        raise BlindSRError(f"-o {target}: not an image format matplotlib writes "
                           f"(use .png, .pdf or .svg)")
    data = series(read_metrics(metrics))
    prepare_output(target, "plot file")  # before the drawing
    panels = [(t, sorted(k for k in data if f(k)), y, log) for t, f, y, log in PANELS]
    panels = [p for p in panels if p[1]]
    if not panels:
        raise BlindSRError(f"{metrics} has nothing to plot yet")
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3 * len(panels)), squeeze=False,
                             sharex=True)
    for ax, (title, keys, ylabel, log) in zip(axes[:, 0], panels, strict=True):
        for key in keys:
            xs, ys = data[key]
            ax.plot(xs, ys, label=key.split("/", 1)[1], marker="." if len(xs) < 30 else None)
        if log and all(v > 0 for k in keys for v in data[k][1]):
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    axes[-1, 0].set_xlabel("iteration")
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    save_figure(fig, target)
    plt.close(fig)
    return target


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``blindsr plot``."""
    p = sub.add_parser("plot", help="draw a run's training curves to PNG",
                       description="Plot losses, learning rates and validation metrics from "
                                   "RUN_DIR/metrics.jsonl.")
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="a training run folder (or a metrics .jsonl file)")
    p.add_argument("-o", "--output", default=None,
                   help="image file, .png, .pdf or .svg (default: RUN_DIR/curves.png)")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    path = plot_run(args.run_dir, args.output)
    print(f"wrote {path}", file=sys.stderr)
    return 0
