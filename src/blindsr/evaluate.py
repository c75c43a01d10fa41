"""Benchmark tables: models x datasets x degradation presets x metrics (``blindsr eval``).

How each image is evaluated:

- HR-only sets: the HR is cropped to a multiple of the scale and degraded on the fly with
  ``blindsr.degrade.apply(hr, preset, scale, seed + image_index)``, so the same call gives the same
  numbers and every model sees the same LR (``image_index``: the image's place in the whole
  sorted set, so a subset such as ``Set14[1::2]`` scores its images as the whole set does).
- Paired sets (e.g. Set5, Set14): ``clean`` uses the given LR files as they are (for Set5/Set14 the
  MATLAB bicubic LR the papers use); any other preset degrades the HR on the fly as above.
- LR-only sets (e.g. RealSRSet): the given LR only, in a column called ``given``; only no-reference
  metrics apply there (full-reference ones are skipped with a note).
- Super-resolution runs through `blindsr.inference.Upscaler`, exactly as ``blindsr upscale`` does,
  with a fixed default tile (``EVAL_TILE`` LR pixels) so that numbers do not depend on free memory.
- Metrics: a metric function that takes ``y_channel`` / ``crop_border`` gets ``y_channel=True`` and
  ``crop_border`` (default: the scale), the SR-literature convention for PSNR/SSIM; other metrics
  get the RGB images as they are. Scores are averaged over the images of a set.
- Grayscale images stay gray, as in the MATLAB scripts behind the published numbers: the model sees
  three equal channels, its output is averaged back to one (as ``blindsr upscale`` does), and
  PSNR/SSIM compare that channel with the HR directly (no Y conversion). This is what makes bicubic
  Set14 x4 come out at the published 26.00 dB; scoring the gray image's Y would give 26.09 dB.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import logging
import math
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blindsr import __version__
from blindsr.atomic import write_atomic
from blindsr.checks import is_whole
from blindsr.errors import BlindSRError, first_line
from blindsr.paths import prepare_output, result_paths, user_path

if TYPE_CHECKING:  # torch is imported on use, so that `blindsr --help` stays light
    import torch
    from torch import Tensor, nn

    from blindsr.metrics import Metric

EVAL_TILE = 512  # LR pixels; benchmark images run whole, larger ones in fixed tiles
CLEAN = "clean"
GIVEN = "given"  # the column of LR-only sets: their LR images as given
log = logging.getLogger(__name__)


@dataclass
class Result:
    """The mean of one metric over one dataset, for one model and one degradation."""

    model: str
    dataset: str
    degradation: str
    metric: str
    value: float


@dataclass
class EvalLog:
    """What an evaluation left out, one line each: ``notes`` by design, ``failures`` bad images.

    Each line is also passed to ``echo`` as it happens (default: this module's logger).
    """

    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    echo: Callable[[str], None] | None = None

    def note(self, line: str) -> None:
        """Record (and show) something worth knowing that is not a failure."""
        self.notes.append(line)
        (self.echo or log.warning)(line)

    def fail(self, line: str) -> None:
        """Record (and show) a skipped image or metric: the run exits non-zero."""
        self.failures.append(line)
        (self.echo or log.warning)(line)


# ------------------------------------------------------------------------------------ evaluation


def image_seed(seed: int, index: int) -> int:
    """The degradation seed of image ``index`` of a set: ``seed + index``, wrapped to 64 bits
    (``blindsr degrade`` gives input file k the same)."""
    return (seed + index) % (1 << 64)


def evaluate(models: Mapping[str, str | Path | nn.Module] | Sequence[str],
             datasets: Sequence[str], degradations: Sequence[str] | None = None,
             metrics: Sequence[str] = ("psnr", "ssim"), scale: int = 4,
             device: str | torch.device | None = None, crop_border: int | None = None,
             seed: int = 0, max_images: int | None = None, save_images: Path | str | None = None,
             progress: bool = False, tile: int | None = None,
             report: EvalLog | None = None) -> list[Result]:
    """Evaluate ``models`` (name -> shipped name, ``bicubic``, checkpoint path or nn.Module; a list
    of names also works) on ``datasets`` (shared names or folders) under each degradation preset
    (default ``clean``) with each metric: one mean per (model, dataset, degradation, metric).

    Skipped images and metrics are logged (and collected in ``report`` when given).
    ``save_images`` writes SR outputs as ``DIR/<model>/<dataset>/<degradation>/<name>.png``.
    """
    from tqdm import tqdm

    from blindsr import data

    report = report if report is not None else EvalLog()
    if isinstance(models, str):  # one name, not its letters
        models = [models]
    datasets, degradations, metrics = (  # "Set5,Set14" as on the command line
        _split([x], "") if isinstance(x, str) else x for x in (datasets, degradations, metrics))
    if datasets is None:
        raise BlindSRError("datasets: name at least one set (e.g. ['Set5']) or folder")
    if max_images is not None and not is_whole(max_images, 1):
        raise BlindSRError(f"max_images must be a whole number >= 1, got {max_images!r}")
    if not is_whole(seed, 0, 1 << 64):
        raise BlindSRError(f"seed must be a whole number in [0, 2**64), got {seed!r}")
    if not isinstance(models, Mapping):
        models = {str(m): m for m in models}
    if not models:
        raise BlindSRError("no models to evaluate")
    degradations = _check_degradations(degradations or [CLEAN])
    chosen = check_metrics(metrics)
    if not is_whole(scale, 1):
        raise BlindSRError(f"scale (--scale) must be a whole number >= 1, got {scale!r}")
    border = scale if crop_border is None else crop_border
    if not is_whole(border, 0):
        raise BlindSRError(f"crop_border (--crop-border) must be a whole number >= 0, "
                           f"got {border!r}")
    if tile is not None and not is_whole(tile, 16):  # inference.MIN_TILE (torch-free here)
        raise BlindSRError(f"tile (--tile) must be a whole number >= 16, got {tile!r}")
    if save_images is not None:
        save_images = prepare_output(user_path(save_images), "--save-images folder", folder=True)
    datasets = list(dict.fromkeys(str(d) for d in datasets))
    specs = [data.resolve_dataset(d, scale) for d in datasets]
    if not specs:
        raise BlindSRError("no datasets to evaluate on")
    labels = _dataset_labels(specs, datasets)
    # image k of the whole set is degraded with seed + k, in a subset too (Set5[1:] = Set5's)
    sets = [data.indexed_pairs(spec)[:max_images] for spec in specs]
    upscalers = {name: _upscaler(name, m, scale, device, tile) for name, m in models.items()}
    job = _Job(upscalers, _safe_names(list(models)), scale, border, seed,
               None if save_images is None else Path(save_images), report)
    bar = tqdm(total=sum(map(len, sets)), desc="eval", unit="img", disable=not progress)
    for spec, label, pairs in zip(specs, labels, sets, strict=True):
        degs, mets = _plan(spec.kind, label, degradations, chosen, report)
        for index, pair in pairs:
            sample = _read_sample(spec.kind, pair, degs, label, report) if mets else None
            if sample is not None:
                job.run(sample, label, index, (pair[1] or pair[0]).stem, degs, mets)
            bar.update()
    bar.close()
    return _means(job.scores, list(models), labels, [*degradations, GIVEN], chosen)


@dataclass
class _Job:
    """Evaluates samples with every model and accumulates the per-image scores."""

    upscalers: dict[str, Any]
    folders: dict[str, str]
    scale: int
    border: int
    seed: int
    save: Path | None
    report: EvalLog
    scores: dict[tuple[str, str, str, str], list[float]] = field(default_factory=dict)
    saved: dict[Path, tuple[str, int]] = field(default_factory=dict)  # file -> (set, image)

    def run(self, sample: _Sample, label: str, index: int, stem: str, degs: list[str],
            metrics: list[Metric]) -> None:
        """Score one image under each degradation; a failing step skips that image (for every
        model, so that model means stay comparable) and is reported."""
        for deg in degs:
            where = f"{label}/{stem} ({deg})"
            try:
                hr, lr = _pair(sample, deg, self.scale, image_seed(self.seed, index))
                srs = {name: self.super_resolve(name, lr, sample.gray, label, deg, stem, index)
                       for name in self.upscalers}
            except BlindSRError as err:
                self.report.fail(f"{where}: skipped: {err}")
                continue
            for m in metrics:
                try:
                    values = {name: score_image(m, sr, hr, self.border) for name, sr in srs.items()}
                except BlindSRError as err:
                    self.report.fail(f"{where}: {m.name} skipped: {err}")
                    continue
                for name, value in values.items():
                    self.scores.setdefault((name, label, deg, m.name), []).append(value)

    def super_resolve(self, name: str, lr: Tensor, gray: bool, label: str, deg: str,
                      stem: str, index: int) -> Tensor:
        """SR of one LR image as ``blindsr upscale`` makes it (gray images: three equal channels
        in, the mean of the output channels out), saved when asked; on the evaluation device."""
        from blindsr import io

        upscaler = self.upscalers[name]
        sr = super_resolve(upscaler, lr, gray)
        if self.save is not None:
            path = self.save / self.folders[name] / _safe(label) / deg / f"{stem}.png"
            try:
                if self.saved.setdefault(path, (label, index)) != (label, index):
                    raise BlindSRError(f"{path} already holds the output of another image of "
                                       "that name (a.png and a.jpg, say)")
                io.write_image(path, io.ImageData(sr, None, 8))
            except BlindSRError as err:  # the scores still count
                self.report.fail(f"{label}/{stem} ({deg}): not saved: {err}")
        return sr.to(upscaler.device)


def super_resolve(upscaler: Any, lr: Tensor, gray: bool) -> Tensor:
    """The SR of one LR image as the tables make it: a gray image goes in as three equal
    channels and comes out as the mean of the output's channels."""
    x = lr.expand(-1, 3, -1, -1).contiguous() if lr.shape[1] == 1 else lr
    sr = upscaler.upscale_tensor(x)
    return sr.mean(dim=1, keepdim=True) if gray else sr


def _check_degradations(degradations: Sequence[str]) -> list[str]:
    """The preset names, checked (unknown -> one-line error), each in its one spelling
    (:func:`~blindsr.degrade.presets.canonical`: ``bd`` and ``BD`` are one column)."""
    from blindsr.degrade.presets import canonical

    names = []
    for d in degradations:
        name = str(d).strip()
        if name.lower() == CLEAN:
            name = CLEAN
        elif name.lower() == GIVEN:
            raise BlindSRError(f"'{GIVEN}' is not a degradation: it labels LR-only sets' own LR")
        else:
            name = canonical(name)
        if name not in names:
            names.append(name)
    return names


def check_metrics(metrics: Sequence[str]) -> list[Metric]:
    """The registered metrics of these names, without repeats (unknown -> one-line error)."""
    from blindsr.metrics import get_metric

    chosen: list[Metric] = []
    for name in metrics:
        m = get_metric(str(name).strip())
        if m not in chosen:
            chosen.append(m)
    if not chosen:
        raise BlindSRError("no metrics to compute")
    return chosen


def _dataset_labels(specs: list, given: Sequence[str]) -> list[str]:
    """Table names of the sets: their own names, or what the user typed where names collide."""
    names = [spec.name for spec in specs]
    return [n if names.count(n) == 1 else str(g) for n, g in zip(names, given, strict=True)]


def _upscaler(name: str, model: Any, scale: int, device: Any, tile: int | None):
    from blindsr.inference import Settings, Upscaler

    settings = Settings(tile=tile or EVAL_TILE, device=None if device is None else str(device),
                        outscale=scale)  # outscale only sizes `bicubic`; upscale_tensor ignores it
    upscaler = Upscaler(model, settings)
    if upscaler.scale != scale:
        raise BlindSRError(f"model {name}: it upscales x{upscaler.scale}, but the evaluation "
                           f"scale is x{scale} (use --scale {upscaler.scale})")
    return upscaler


def _plan(kind: str, label: str, degradations: list[str], metrics: list[Metric],
          report: EvalLog) -> tuple[list[str], list[Metric]]:
    """The degradations and metrics that apply to a set of this kind."""
    if kind != "lr":
        return degradations, metrics
    full = [m.name for m in metrics if m.full_reference]
    rest = [m for m in metrics if not m.full_reference]
    if full:
        report.note(f"{label}: LR-only set (no ground truth): {', '.join(full)} skipped"
                    + ("" if rest else "; no no-reference metric requested, set skipped"))
    if rest and degradations != [CLEAN]:
        report.note(f"{label}: LR-only set: evaluated on its own LR as '{GIVEN}' "
                    "(degradations do not apply)")
    return [GIVEN], rest


@dataclass
class _Sample:
    kind: str
    hr: Tensor | None
    lr: Tensor | None

    @property
    def gray(self) -> bool:
        """Whether the sample is grayscale (by its HR where there is one)."""
        return (self.hr if self.hr is not None else self.lr).shape[1] == 1


def _read(path: Path | None) -> Tensor | None:
    """An image file as a (1, C, H, W) float tensor, C = 1 or 3 (alpha ignored)."""
    from blindsr import io

    return None if path is None else io.read_image(path).color.float()


def _read_sample(kind: str, pair: tuple[Path | None, Path | None], degs: list[str], label: str,
                 report: EvalLog) -> _Sample | None:
    """The images a sample needs (the LR file only where it is used); None when unreadable."""
    hr_path, lr_path = pair
    need_lr = kind == "lr" or (kind == "paired" and CLEAN in degs)
    try:
        hr = _read(hr_path) if kind != "lr" else None
        lr = _read(lr_path) if need_lr else None
    except BlindSRError as err:
        stem = (lr_path or hr_path).stem
        report.fail(f"{label}/{stem}: image skipped (the set's means leave it out): {err}")
        return None
    return _Sample(kind, hr, lr)


def _pair(sample: _Sample, deg: str, scale: int, seed: int) -> tuple[Tensor | None, Tensor]:
    """(HR or None, LR) for one degradation: the given LR, or the HR degraded on the fly."""
    import torch

    from blindsr.degrade import apply

    if sample.kind == "lr":
        return None, sample.lr
    hr = sample.hr
    if sample.kind == "paired" and deg == CLEAN:
        lr = sample.lr
        h, w = lr.shape[-2:]
        if hr.shape[-2] // scale != h or hr.shape[-1] // scale != w:
            raise BlindSRError(f"HR {hr.shape[-2]}x{hr.shape[-1]} does not match LR {h}x{w} "
                               f"at x{scale}")
    else:
        with torch.no_grad():
            lr = apply(hr, deg, scale, seed)
    h, w = lr.shape[-2:]
    return hr[..., : h * scale, : w * scale], lr


def score_image(metric: Metric, sr: Tensor, hr: Tensor | None, crop_border: int) -> float:
    """One image's score, as the tables count it: the Y channel and ``crop_border`` where the
    metric takes them, else RGB (gray images as three equal channels); ``hr`` None for
    no-reference metrics."""
    import torch

    params = inspect.signature(metric.fn).parameters
    kwargs: dict[str, Any] = {}
    if "crop_border" in params:
        kwargs["crop_border"] = crop_border
    if "y_channel" in params:
        kwargs["y_channel"] = True  # gray images are scored on their one channel, as in MATLAB
    elif sr.shape[1] == 1:  # an RGB metric: gray as three equal channels
        sr = sr.expand(-1, 3, -1, -1)
        hr = None if hr is None else hr.expand(-1, 3, -1, -1)
    hr = None if hr is None else hr.to(sr.device)
    args = (sr, hr) if metric.full_reference else (sr,)
    try:
        value = float(torch.as_tensor(metric.fn(*args, **kwargs)).double().mean())
    except RuntimeError as e:  # e.g. a network metric's input smaller than its pooling
        h, w = sr.shape[-2:]
        raise BlindSRError(f"{metric.name} cannot score this {h}x{w} image (border "
                           f"{crop_border}): {first_line(e)}") from None
    if math.isnan(value):
        raise BlindSRError(f"{metric.name} is undefined on this image (NaN; a flat image?)")
    return value


def _means(scores: dict[tuple[str, str, str, str], list[float]], models: list[str],
           labels: list[str], degs: list[str], metrics: list[Metric]) -> list[Result]:
    """Mean per key, in the order model, dataset, degradation, metric."""
    out = []
    for model in models:
        for dataset in dict.fromkeys(labels):
            for deg in degs:
                for m in metrics:
                    values = scores.get((model, dataset, deg, m.name))
                    if values:
                        out.append(Result(model, dataset, deg, m.name, sum(values) / len(values)))
    return out


def _safe(name: str) -> str:
    """A file-system-safe folder name."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._") or "_"


def _safe_names(names: list[str]) -> dict[str, str]:
    """Distinct safe folder names for the models (a suffix where two names collide)."""
    out: dict[str, str] = {}
    for name in names:
        safe, k = _safe(name), 2
        while safe in out.values():
            safe, k = f"{_safe(name)}-{k}", k + 1
        out[name] = safe
    return out


# ---------------------------------------------------------------------------------------- tables


def format_tables(results: Sequence[Result]) -> str:
    """Markdown tables in the layout of the EATS paper's Table 1, one per metric: a block of rows
    per dataset, a row per model, a column per degradation; with two or more models an
    ``Improvement`` row (last model minus first)."""
    metrics = list(dict.fromkeys(r.metric for r in results))
    return "\n\n".join(_table([r for r in results if r.metric == m]) for m in metrics)


def _table(results: list[Result]) -> str:
    metric = _registered(results[0].metric)
    models = list(dict.fromkeys(r.model for r in results))
    datasets = list(dict.fromkeys(r.dataset for r in results))
    degs = list(dict.fromkeys(r.degradation for r in results))
    cell = {(r.model, r.dataset, r.degradation): r.value for r in results}
    finite = [abs(r.value) for r in results if math.isfinite(r.value)]
    digits = 2 if finite and max(finite) >= 10 else 4
    better = "lower" if metric is not None and metric.lower_better else "higher"
    title = f"**{results[0].metric.upper()}** ({better} is better"
    if len(models) > 1:
        title += f"; Improvement = {_md(models[-1])} − {_md(models[0])}"
    lines = [title + ")", "", "| Dataset | Model | " + " | ".join(degs) + " |",
             "|:--|:--|" + "--:|" * len(degs)]
    for dataset in datasets:
        for k, model in enumerate(models):
            values = [cell.get((model, dataset, d)) for d in degs]
            lines.append(_row(dataset if k == 0 else "", _md(model), values, digits, ""))
        if len(models) > 1:
            diffs = [_diff(cell, models, dataset, d) for d in degs]
            lines.append(_row("", "Improvement", diffs, digits, "+"))
    return "\n".join(lines)


def _registered(name: str) -> Metric | None:
    from blindsr.metrics import get_metric

    try:
        return get_metric(name)
    except BlindSRError:
        return None


def _diff(cell: dict, models: list[str], dataset: str, deg: str) -> float | None:
    first, last = cell.get((models[0], dataset, deg)), cell.get((models[-1], dataset, deg))
    return None if first is None or last is None else last - first


def _row(dataset: str, model: str, values: list[float | None], digits: int, sign: str) -> str:
    text = ["–" if v is None else f"{v:{sign}.{digits}f}" for v in values]
    return f"| {_md(dataset)} | {model} | " + " | ".join(text) + " |"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


# ---------------------------------------------------------------------------------------- files


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float written as a string (``"inf"``, ``"-inf"``,
    ``"nan"``; ``float()`` reads them back), so that the JSON files are standard JSON (a PSNR
    of identical images is infinite; Python's own ``Infinity`` is not JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def write_results(results: Sequence[Result], out: Path | str, meta: dict) -> list[Path]:
    """Write ``<out>.json`` ({"results": [...], "meta": {...}}), ``<out>.csv`` (one row per
    result) and ``<out>.md`` (the tables) beside ``out``; returns the paths written."""
    paths = result_paths(out)
    rows = [asdict(r) for r in results]
    table = StringIO()
    writer = csv.DictWriter(table, fieldnames=["model", "dataset", "degradation", "metric",
                                               "value"])
    writer.writeheader()
    writer.writerows(rows)
    body = json.dumps(strict_json({"results": rows, "meta": meta}), indent=2, allow_nan=False)
    write_atomic(paths[0], body + "\n")
    write_atomic(paths[1], table.getvalue())
    write_atomic(paths[2], format_tables(results) + "\n")
    return paths


# ------------------------------------------------------------------------------------ the command


def _split(values: list[str] | None, default: str) -> list[str]:
    """Comma-separated (and repeatable) option values, in order."""
    items = [v.strip() for text in (values or [default]) for v in text.split(",")]
    return [v for v in items if v]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``blindsr eval``."""
    p = sub.add_parser(
        "eval", help="benchmark models on datasets x degradations x metrics",
        description="Evaluate models on benchmark sets under degradation presets; prints Markdown "
                    "tables (EATS Table 1 layout) and writes JSON/CSV with --out.")
    p.add_argument("--model", action="append", metavar="M",
                   help="shipped model name, 'bicubic' or checkpoint path, with '+' at the end "
                        "for x8 self-ensemble (blindsr-x4+); repeat to compare (default: the "
                        "shipped default model)")
    p.add_argument("--data", action="append", metavar="SETS",
                   help="comma-separated shared set names (Set5, Set14, RealSRSet, ...) or "
                        "folders (HR-only, HR/+LR/ pairs, or lr:FOLDER) (default: Set5,Set14)")
    p.add_argument("--degrade", action="append", metavar="PRESETS",
                   help="comma-separated presets: clean, blur, noise, jpeg, b+n, b+j, n+j, b+n+j, "
                        "bicubic, BD, DN, nearest, iso<sigma> (default: clean)")
    p.add_argument("--metrics", action="append", metavar="NAMES",
                   help="comma-separated metrics (default: psnr,ssim)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--crop-border", type=int, default=None,
                   help="pixels shaved off each side before every metric (default: the scale)")
    p.add_argument("--save-images", type=Path, default=None, metavar="DIR",
                   help="write SR outputs to DIR/<model>/<dataset>/<degradation>/<name>.png")
    p.add_argument("-o", "--out", type=Path, default=None,
                   help="write results to OUT.json, OUT.csv and OUT.md (default: print only)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: best)")
    p.add_argument("--tile", type=int, default=None,
                   help=f"tile size in LR pixels (default: {EVAL_TILE})")
    p.add_argument("--max-images", type=int, default=None, help="first N images of each set")
    p.add_argument("--seed", type=int, default=0,
                   help="degradation seed (image k uses seed + k); same seed, same numbers")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """``blindsr eval``: print the tables, write files with --out; 1 when images were skipped."""
    import torch
    from tqdm import tqdm

    from blindsr import zoo
    from blindsr.inference import pick_device

    if args.scale < 1 or (args.tile is not None and args.tile < 16):
        raise BlindSRError("--scale must be >= 1 and --tile >= 16")
    if args.max_images is not None and args.max_images < 1:
        raise BlindSRError("--max-images must be >= 1")
    models = args.model or [zoo.default_model_name()]
    datasets = _split(args.data, "Set5,Set14")
    degradations = _split(args.degrade, CLEAN)
    metrics = _split(args.metrics, "psnr,ssim")
    border = args.scale if args.crop_border is None else args.crop_border
    if args.out is not None:  # before the work, not after it
        for path in result_paths(args.out):
            prepare_output(path, "--out file")
    report = EvalLog(echo=lambda line: tqdm.write(line, file=sys.stderr))
    start = time.perf_counter()
    results = evaluate(models, datasets, degradations, metrics, scale=args.scale,
                       device=args.device, crop_border=args.crop_border, seed=args.seed,
                       max_images=args.max_images, save_images=args.save_images,
                       progress=not args.quiet, tile=args.tile, report=report)
    seconds = time.perf_counter() - start
    print(f"x{args.scale}; PSNR/SSIM on Y (BT.601); border {border} for every metric; "
          f"seed {args.seed}\n")
    print(format_tables(results) if results else "(no results)")
    if args.out is not None:
        meta = {
            "scale": args.scale, "seed": args.seed, "crop_border": border, "y_channel": True,
            "tile": args.tile or EVAL_TILE, "max_images": args.max_images,
            "models": models, "datasets": datasets, "degradations": degradations,
            "metrics": metrics, "blindsr": __version__, "torch": torch.__version__,
            "device": str(pick_device(args.device)),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(seconds, 2), "notes": report.notes, "failures": report.failures,
        }
        paths = write_results(results, args.out, meta)
        print(f"\nwrote {', '.join(map(str, paths))}", file=sys.stderr)
    return 1 if report.failures or not results else 0  # nothing scored is a failure too


__all__ = ["EVAL_TILE", "EvalLog", "Result", "check_metrics", "evaluate", "format_tables",
           "score_image", "strict_json", "super_resolve", "write_results"]
