"""Scores of images that already exist (``blindsr score``): any method's outputs against their
references, matched by file name, with the metrics and conventions of ``blindsr eval``.

So results published as image folders, or made by another tool, are measured exactly as blindsr's
own tables: PSNR/SSIM on the Y channel (MATLAB BT.601), every metric after shaving
``crop_border`` pixels (eval uses the scale), 8-bit images compared as read, gray references
against the mean of the output's channels. Without references only no-reference metrics (NIQE)
apply. PSNR/SSIM of saved outputs equal eval's; NIQE, LPIPS and DISTS can differ in the fourth
decimal, as eval scores the network's output before it is saved as 8-bit.

    blindsr score results/ --ref ../shared/datasets/Set5/x4/HR --metrics psnr,ssim,lpips \\
        --crop-border 4 --strip-suffix _out
    blindsr score results/ --ref Set5 --scale 4   # a shared set's HR, by name (border: the scale)
    blindsr score real_results/                   # no references: NIQE
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING

from blindsr import __version__
from blindsr.atomic import write_atomic
from blindsr.checks import is_whole
from blindsr.errors import BlindSRError
from blindsr.paths import prepare_output, result_paths

if TYPE_CHECKING:  # torch is imported on use, so that `blindsr --help` stays light
    from torch import Tensor

    from blindsr.metrics import Metric


MODCROP_SLACK = 16  # a reference larger by less than this per side may be the uncropped HR


@dataclass
class ScoreReport:
    """Per-image scores (name -> metric -> value), their means, and the images left out."""

    metrics: list[str]
    images: dict[str, dict[str, float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    crop_border: int = 0

    def means(self) -> dict[str, float]:
        """The mean of each metric over the images that have it."""
        out = {}
        for m in self.metrics:
            values = [scores[m] for scores in self.images.values() if m in scores]
            if values:
                out[m] = sum(values) / len(values)
        return out

    def table(self) -> str:
        """A Markdown table: a row per image, then the mean."""
        lines = ["| image | " + " | ".join(self.metrics) + " |",
                 "|:--|" + "--:|" * len(self.metrics)]
        rows = [*self.images.items(), (f"**mean of {len(self.images)}**", self.means())]
        for name, scores in rows:
            cells = [_fmt(scores.get(m)) for m in self.metrics]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}" if abs(value) >= 10 else f"{value:.4f}"


def match_references(outputs: Sequence[Path], references: Sequence[Path],
                     strip_suffix: str = "") -> tuple[list[tuple[Path, Path]], list[str]]:
    """``(output, reference)`` pairs whose stems agree once ``strip_suffix`` is taken off the
    output's stem, and one line for each output without exactly one reference."""
    by_stem: dict[str, list[Path]] = {}
    for ref in references:
        by_stem.setdefault(ref.stem, []).append(ref)
    pairs, missing = [], []
    for out in outputs:
        stem = out.stem.removesuffix(strip_suffix) if strip_suffix else out.stem
        found = by_stem.get(stem, [])
        if len(found) == 1:
            pairs.append((out, found[0]))
        elif found:
            missing.append(f"{out}: {len(found)} references named {stem}.* "
                           f"({', '.join(p.name for p in found)}): keep one")
        else:
            missing.append(f"{out}: no reference named {stem}.* (--strip-suffix takes a suffix "
                           "such as _out off the output names)")
    return pairs, missing


def _read(path: Path) -> Tensor:
    from blindsr import io

    return io.read_image(path).color.float()


def _aligned(out: Tensor, ref: Tensor, crop_ref: bool) -> tuple[Tensor, Tensor]:
    """The output and reference on the same channels and size, or a one-line error."""
    if ref.shape[1] == 1 and out.shape[1] == 3:  # a gray reference: the output's mean
        out = out.mean(dim=1, keepdim=True)
    elif ref.shape[1] == 3 and out.shape[1] == 1:
        out = out.expand(-1, 3, -1, -1)
    (h, w), (rh, rw) = out.shape[-2:], ref.shape[-2:]
    modcrop = 0 <= rh - h < MODCROP_SLACK and 0 <= rw - w < MODCROP_SLACK
    if crop_ref and modcrop:
        ref = ref[..., :h, :w]
    elif (rh, rw) != (h, w):
        if modcrop:
            hint = " (--crop-ref crops the reference's top left to it)"
        elif rh < h or rw < w:
            hint = " (the reference is the smaller one: not the same scale?)"
        else:
            hint = f" (more than {MODCROP_SLACK - 1} pixels apart: not the same scale?)"
        raise BlindSRError(f"output is {w}x{h}, reference {rw}x{rh}{hint}")
    return out, ref


def names_shared_set(reference: str) -> bool:
    """Whether ``reference`` names a shared dataset (``Set5``, ``Set14[:5]``) rather than a path.
    As in ``blindsr eval --data``, the name wins over a same-named folder in the working folder
    (``./Set5`` names the folder)."""
    from blindsr.data import SHARED_NAMES

    name = reference.split("[", 1)[0].strip().lower()
    return name in {k.lower() for k in SHARED_NAMES}


def shared_references(reference: str, scale: int) -> list[Path] | None:
    """The HR images of the shared dataset ``reference`` names (``Set5``, ``Set14[:5]``) as
    prepared for ``scale`` (their HR is cropped to a multiple of it); None when it names no
    shared dataset (an existing path or a glob is never taken for one)."""
    from blindsr.data import list_pairs, resolve_dataset

    if not names_shared_set(reference):
        return None
    spec = resolve_dataset(reference, scale)
    if spec.hr_dir is None:
        raise BlindSRError(f"--ref {reference}: {spec.name} has LR images only, no references")
    return [hr for hr, _ in list_pairs(spec)]


def score_files(outputs: str | os.PathLike | Sequence[str | os.PathLike],
                reference: str | os.PathLike | None = None,
                metrics: str | Sequence[str] | None = None, crop_border: int | None = None,
                strip_suffix: str = "", crop_ref: bool = False, scale: int = 4) -> ScoreReport:
    """Score the images ``outputs`` (files, folders, globs; one or a list) against ``reference``
    (a folder, file or glob of images matched by name, or a shared dataset's name: its HR images
    for ``scale``) with ``metrics`` (a list or ``"psnr,ssim"``; default psnr and ssim with a
    reference, niqe without); see the module docstring. ``crop_border`` defaults to ``scale``
    for a shared dataset's name (eval's convention) and to 0 otherwise (a folder's scale is
    unknown). Unreadable or unmatched images are listed in ``failures`` and left out of the
    means (so a report may hold no image at all)."""
    from blindsr import io
    from blindsr.evaluate import check_metrics, score_image

    if isinstance(outputs, str | os.PathLike):  # one path, not its letters
        outputs = [outputs]
    if metrics is None:
        metrics = ["psnr", "ssim"] if reference is not None else ["niqe"]
    if crop_border is None:
        shared = reference is not None and names_shared_set(os.fspath(reference))
        crop_border = scale if shared else 0
    io.max_pixel_limit()  # a bad $BLINDSR_MAX_PIXELS is one error, not one per image
    if isinstance(metrics, str):  # "psnr,ssim" as on the command line
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    outputs = [os.fspath(o) for o in outputs]
    reference = os.fspath(reference) if reference is not None else None
    chosen: list[Metric] = check_metrics(metrics)
    if not is_whole(crop_border, 0):
        raise BlindSRError(f"--crop-border must be a whole number >= 0, got {crop_border!r}")
    full_ref = [m.name for m in chosen if m.full_reference]
    if full_ref and reference is None:
        raise BlindSRError(f"{', '.join(full_ref)} compare with references: give --ref "
                           "(or only no-reference metrics, e.g. niqe)")
    report = ScoreReport([m.name for m in chosen], crop_border=crop_border)
    paths, missing = io.expand_inputs(outputs)
    report.failures += missing
    if reference is not None:
        refs = shared_references(reference, scale)
        if refs is None:
            refs, ref_missing = io.expand_inputs([reference])
            if ref_missing:
                raise BlindSRError(ref_missing[0])
        pairs, unmatched = match_references(paths, refs, strip_suffix)
        report.failures += unmatched
    else:
        pairs = [(p, None) for p in paths]
    for out_path, ref_path in pairs:
        try:
            out = _read(out_path)
            ref = None
            if ref_path is not None:
                out, ref = _aligned(out, _read(ref_path), crop_ref)
            report.images[str(out_path)] = {m.name: score_image(m, out, ref, crop_border)
                                            for m in chosen}
        except BlindSRError as err:
            report.failures.append(f"{out_path}: skipped: {err}")
    return report


def output_paths(out: str | Path) -> list[Path]:
    """``OUT.json``, ``OUT.csv`` and ``OUT.md``, named as ``blindsr eval --out`` names them."""
    return result_paths(out)


def write_report(report: ScoreReport, out: str | Path, meta: dict) -> list[Path]:
    """``<out>.json`` (per-image scores, means, failures, meta), ``<out>.csv`` (a row per
    image) and ``<out>.md`` (the table); returns the paths."""
    from blindsr.evaluate import strict_json

    paths = output_paths(out)
    data = {"images": report.images, "mean": report.means(), "failures": report.failures,
            "meta": meta}
    table = StringIO()
    writer = csv.writer(table)
    writer.writerow(["image", *report.metrics])
    for name, scores in report.images.items():
        writer.writerow([name, *(scores.get(m, "") for m in report.metrics)])
    write_atomic(paths[0], json.dumps(strict_json(data), indent=2, allow_nan=False) + "\n")
    write_atomic(paths[1], table.getvalue())
    write_atomic(paths[2], report.table() + "\n")
    return paths


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``blindsr score``."""
    p = sub.add_parser(
        "score", help="score existing images (any method's outputs) against references",
        description="Score images that already exist against references matched by file name, "
                    "with blindsr eval's metrics and conventions (PSNR/SSIM on Y after "
                    "--crop-border). Without --ref, only no-reference metrics (niqe, the "
                    "default then).")
    p.add_argument("outputs", nargs="+", metavar="IMAGES", help="image files, folders or globs")
    p.add_argument("--ref", default=None,
                   help="reference images (folder, file or glob), matched by name; or a shared "
                        "dataset's name (Set5, Set14[:5]): its HR images for --scale")
    p.add_argument("--scale", type=int, default=4,
                   help="with a shared dataset's name as --ref: the scale its HR images were "
                        "cropped for (default: 4)")
    p.add_argument("--metrics", default=None,
                   help="comma-separated: psnr, ssim, lpips, dists, niqe (default: psnr,ssim "
                        "with --ref, niqe without)")
    p.add_argument("--crop-border", type=int, default=None,
                   help="pixels shaved off each side before every metric (blindsr eval and the "
                        "SR literature use the scale; default: --scale when --ref names a shared "
                        "set, as eval does, else 0)")
    p.add_argument("--strip-suffix", default="",
                   help="taken off output names before matching (e.g. _out, _x4)")
    p.add_argument("--crop-ref", action="store_true",
                   help="crop a reference up to 15 pixels larger to the output's size, from its "
                        "top left (the modcrop of SR pipelines)")
    p.add_argument("-o", "--out", default=None,
                   help="write OUT.json, OUT.csv and OUT.md (default: print only)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """``blindsr score``."""
    if args.out is not None:
        for path in output_paths(args.out):
            prepare_output(path, "--out file")
    report = score_files(args.outputs, args.ref, args.metrics, args.crop_border, args.strip_suffix,
                         args.crop_ref, args.scale)
    for line in report.failures:
        print(f"blindsr: {line}", file=sys.stderr)
    if not report.images:
        raise BlindSRError(f"no image could be scored ({len(report.failures)} failed, above)")
    print(report.table())
    if args.out is not None:
        meta = {"outputs": args.outputs, "ref": args.ref, "scale": args.scale,
                "crop_border": report.crop_border,
                "strip_suffix": args.strip_suffix, "crop_ref": args.crop_ref,
                "y_channel": True, "blindsr": __version__}
        for path in write_report(report, args.out, meta):
            print(f"wrote {path}", file=sys.stderr)
    return 1 if report.failures else 0


__all__ = ["ScoreReport", "add_parser", "match_references", "output_paths", "run",
           "names_shared_set", "score_files", "shared_references", "write_report"]
