"""Side-by-side crops of several models' outputs (``blindsr compare``), the zoomed comparison
figures of SR papers.

Given an LR image, every model upscales it; given an HR image and ``degrade`` (a preset of
:mod:`blindsr.degrade.presets`, e.g. ``b+n+j``), the LR is made from it first, the HR becomes
the last panel, and each caption carries the model's PSNR-Y on the whole image (border = scale,
as ``blindsr eval``, which degrades image k of a set with ``seed + k``). The same region of
every output (``crop``, in output pixels) is enlarged by nearest-neighbour ``zoom`` so that
pixels stay visible, and captioned with the model's name.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING

from blindsr.atomic import write_atomic
from blindsr.errors import BlindSRError
from blindsr.paths import prepare_output, require_file

if TYPE_CHECKING:  # torch is imported on use, so that `blindsr --help` stays light
    from PIL import Image
    from torch import Tensor

CAPTION = 14  # pixels of caption under each panel
GAP = 4  # pixels between panels
PANEL = 256  # default displayed size of a crop's longer side
MAX_FIGURE_PIXELS = 64_000_000  # a figure larger than this is refused (a typo in --zoom)


@dataclass
class Panel:
    """One crop of the figure: its label, its pixels (1 x 3 x h x w in [0, 1]) and a score."""

    label: str
    crop: Tensor
    psnr: float | None = None

    @property
    def caption(self) -> str:
        return self.label if self.psnr is None else f"{self.label}  {self.psnr:.2f} dB"


def parse_crop(text: str | None) -> tuple[int, int, int, int] | None:
    """``"X,Y,W,H"`` -> ints (None stays None), or a one-line error."""
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or values[0] < 0 or values[1] < 0 or values[2] < 1 or values[3] < 1:
        raise BlindSRError(f"--crop must be X,Y,W,H with X, Y >= 0 and W, H >= 1, got {text!r}")
    return values  # type: ignore[return-value]


def _region(crop: tuple[int, int, int, int] | None, height: int,
            width: int) -> tuple[int, int, int, int]:
    """The crop, checked against the output size; by default the centre half of each side."""
    if crop is None:
        h, w = max(1, height // 2), max(1, width // 2)
        return (width - w) // 2, (height - h) // 2, w, h
    x, y, w, h = crop
    if x + w > width or y + h > height:
        raise BlindSRError(f"--crop {x},{y},{w},{h} leaves the {width}x{height} output")
    return crop


def make_panels(image: str | Path, models: Sequence[str], degrade: str | None = None,
                crop: tuple[int, int, int, int] | None = None, scale: int = 4,
                seed: int = 0) -> list[Panel]:
    """Upscale ``image`` (an LR, or with ``degrade`` the HR to make it from) with every model
    and cut the same region out of each output; the HR is the last panel when there is one."""
    import torch

    from blindsr import degrade as degradations
    from blindsr import io
    from blindsr.evaluate import check_metrics, score_image, super_resolve
    from blindsr.inference import Settings, Upscaler

    if not models:
        raise BlindSRError("no models to compare")
    if scale < 1:
        raise BlindSRError(f"--scale must be a positive integer, got {scale}")
    picture = io.read_image(require_file(image, "image")).color.float()
    gray = picture.shape[1] == 1  # kept gray through the degradation and scoring, as in eval
    hr = None
    if degrade is not None:
        h, w = picture.shape[-2:]
        if min(h, w) < scale:
            raise BlindSRError(f"{image}: an image of {w}x{h} is smaller than the scale {scale}, "
                               "so --degrade has nothing to make an LR from")
        hr = picture[..., : h // scale * scale, : w // scale * scale]
        lr = degradations.apply(hr, degrade, scale, seed=seed)
    else:
        lr = picture
    psnr = check_metrics(["psnr"])[0]
    outputs = []
    for name in models:
        upscaler = Upscaler(name, Settings(outscale=scale))  # the scale bicubic runs at
        if hr is not None and upscaler.scale != scale:
            raise BlindSRError(f"{name} upscales x{upscaler.scale}, not x{scale} (--scale)")
        with torch.inference_mode():
            sr = super_resolve(upscaler, lr, gray).cpu().float()
        score = None if hr is None else score_image(psnr, sr, hr, crop_border=scale)
        outputs.append((name, sr, score))
    height, width = outputs[0][1].shape[-2:]
    if any(sr.shape[-2:] != (height, width) for _, sr, _ in outputs):
        sizes = ", ".join(f"{n} {sr.shape[-1]}x{sr.shape[-2]}" for n, sr, _ in outputs)
        raise BlindSRError(f"the outputs differ in size ({sizes}): compare models of one scale "
                           "(--scale sets bicubic's)")
    x, y, w, h = _region(crop, height, width)
    panels = [Panel(name, sr[..., y:y + h, x:x + w], score) for name, sr, score in outputs]
    if hr is not None:
        panels.append(Panel("HR", hr[..., y:y + h, x:x + w]))
    return panels


def render(panels: Sequence[Panel], zoom: int | None = None) -> Image.Image:
    """The panels in a row, each enlarged ``zoom`` times (nearest) above its caption."""
    from PIL import Image, ImageDraw

    from blindsr import io

    h, w = panels[0].crop.shape[-2:]
    zoom = max(1, PANEL // max(h, w)) if zoom is None else zoom
    if zoom < 1:
        raise BlindSRError(f"--zoom must be >= 1, got {zoom}")
    pw, ph = w * zoom, h * zoom
    if len(panels) * pw * (ph + CAPTION) > MAX_FIGURE_PIXELS:
        raise BlindSRError(f"the figure would be {len(panels) * pw}x{ph + CAPTION} pixels: "
                           "lower --zoom or crop a smaller region")
    figure = Image.new("RGB", (len(panels) * (pw + GAP) - GAP, ph + CAPTION), "white")
    draw = ImageDraw.Draw(figure)
    for i, panel in enumerate(panels):
        crop = io.ImageData(panel.crop.clamp(0, 1), None, 8)
        tile = io.to_pil(crop).convert("RGB").resize((pw, ph), Image.NEAREST)
        figure.paste(tile, (i * (pw + GAP), 0))
        draw.text((i * (pw + GAP) + 2, ph + 1), panel.caption, fill="black")
    return figure


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``blindsr compare``."""
    p = sub.add_parser(
        "compare", help="side-by-side zoomed crops of several models' outputs",
        description="Upscale one image with several models and write the same crop of each "
                    "output side by side (nearest zoom, captions). With --degrade the image "
                    "is an HR: the LR is made from it, the HR is shown last, and the captions "
                    "give each model's PSNR-Y on the whole image.")
    p.add_argument("image", help="an LR image (or, with --degrade, an HR image)")
    p.add_argument("--model", action="append", default=None,
                   help="model to show (repeat; default: bicubic and the shipped default model)")
    p.add_argument("--degrade", default=None, metavar="PRESET",
                   help="make the LR from IMAGE with this preset (e.g. b+n+j) and show the HR")
    p.add_argument("--scale", type=int, default=4,
                   help="the scale of --degrade and of bicubic (default 4)")
    p.add_argument("--seed", type=int, default=0,
                   help="with --degrade: its seed (eval degrades image k of a set with seed + k: "
                        "give that to get its numbers)")
    p.add_argument("--crop", default=None, metavar="X,Y,W,H",
                   help="region in output pixels (default: the centre half of each side)")
    p.add_argument("--zoom", type=int, default=None,
                   help=f"enlargement of each crop (default: to about {PANEL} pixels)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the PNG to write")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """``blindsr compare``."""
    from blindsr import zoo

    if args.output.suffix.lower() != ".png":
        raise BlindSRError(f"-o {args.output}: the figure is written as .png")
    prepare_output(args.output, "-o file")
    models = args.model or ["bicubic", zoo.default_model_name()]
    panels = make_panels(args.image, list(dict.fromkeys(models)), args.degrade,
                         parse_crop(args.crop), args.scale, args.seed)
    figure = render(panels, args.zoom)
    buf = BytesIO()
    figure.save(buf, format="PNG")
    write_atomic(args.output, buf.getvalue())  # checked above, made now
    for panel in panels:
        print(panel.caption, file=sys.stderr)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


__all__ = ["Panel", "add_parser", "make_panels", "parse_crop", "render", "run"]
