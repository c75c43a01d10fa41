"""The `blindsr` command: a thin front door over the library.

Each sub-command parses its arguments and calls one library function. User errors (`BlindSRError`)
are printed as one line and give a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from pathlib import Path

from blindsr import __version__
from blindsr.allocator import keep_freed_memory
from blindsr.errors import BlindSRError
from blindsr.paths import user_path


def _add_upscale(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upscale", help="upscale images with a model (tiled, batched)",
                       description="Upscale image files, folders or globs.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    p.add_argument("-o", "--output", default="results",
                   help="output folder, or a file name for a single input (default: results)")
    p.add_argument("--model", default=None,
                   help="shipped model name, 'bicubic', or a checkpoint path; end it with '+' for "
                        "x8 self-ensemble, e.g. blindsr-x4+ (default: the shipped default model)")
    p.add_argument("--outscale", type=float, default=None,
                   help="final scale factor (default: the model's own)")
    p.add_argument("--tile", type=int, default=None,
                   help="tile size in input pixels (default: from free device memory)")
    p.add_argument("--tile-pad", type=int, default=16,
                   help="tile overlap in input pixels (default 16; a few pixels or none leaves "
                        "visible seams)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: best)")
    p.add_argument("--batch", type=int, default=4, help="tiles per forward pass")
    p.add_argument("--suffix", default="", help="appended to output file stems")
    p.add_argument("--ext", default="auto", choices=["auto", "png", "jpg", "webp", "tif"],
                   help="output format (auto: same as the input; PNG for GIF/PPM inputs)")
    p.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="refuse larger inputs (decompression-bomb guard; 0: no limit)")
    p.add_argument("--no-channels-last", action="store_true", help="keep NCHW memory layout")
    p.add_argument("--blur", type=float, default=None, metavar="SIGMA",
                   help="blur-conditioned models (amnet): render for a Gaussian blur of this "
                        "width in HR pixels instead of the model's own estimate (higher: "
                        "sharper output; lower: softer)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=_run_upscale)


def _run_upscale(args: argparse.Namespace) -> int:
    from blindsr.files import check_ext
    from blindsr.inference import Settings, upscale_files

    if not 1 <= args.quality <= 100:
        raise BlindSRError(f"--quality must be in 1..100, got {args.quality}")
    if args.max_pixels is not None:
        from blindsr.io import max_pixel_limit

        max_pixel_limit(args.max_pixels)  # checked once, before any file
    check_ext(Path(args.output), args.ext)
    settings = Settings(tile=args.tile, tile_pad=args.tile_pad, batch=args.batch,
                        dtype=args.dtype, device=args.device, outscale=args.outscale,
                        channels_last=not args.no_channels_last, blur=args.blur)
    report = upscale_files(args.inputs, args.output, args.model, settings, suffix=args.suffix,
                           ext=args.ext, max_pixels=args.max_pixels, progress=not args.quiet,
                           quality=args.quality)
    print(report.summary(), file=sys.stderr)
    return 1 if report.failures else 0


def _add_degrade(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("degrade", help="make LR images from HR images",
                       description="Degrade HR images with a named preset or the random "
                                   "second-order pipeline.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--preset", default="bicubic",
                   help="bicubic, BD, DN, nearest, clean, blur, noise, jpeg, b+n, b+j, n+j, b+n+j, "
                        "iso<sigma>; 'and': a PNG grid per input of an HR crop with adversarial "
                        "(top) and random (bottom) AND samples")
    p.add_argument("--random", action="store_true",
                   help="use the random second-order pipeline instead of a preset")
    p.add_argument("--config", default=None,
                   help="YAML file overriding the random pipeline's parameters; with --preset and: "
                        "a training config (its strategy.params) or a mapping of 'and' params")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--seed", type=int, default=0,
                   help="input image k uses seed + k, as eval; the same seed gives the same LR")
    p.add_argument("--max-pixels", type=int, default=None)
    p.add_argument("--model", default=None,
                   help="--preset and: the restorer the adversarial samples attack (shipped name, "
                        "'bicubic' or a checkpoint path; default: bicubic)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_degrade)


def _run_degrade(args: argparse.Namespace) -> int:
    from blindsr.degrade_files import degrade_files

    report = degrade_files(args.inputs, args.output, preset=args.preset, scale=args.scale,
                           seed=args.seed, random=args.random, config=args.config,
                           max_pixels=args.max_pixels, model=args.model,
                           progress=not args.quiet)
    print(report.summary(), file=sys.stderr)
    return 1 if report.failures else 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list shipped models, show one model card, or describe a "
                                      "model file")
    p.add_argument("name", nargs="?",
                   help="a shipped model (its card) or a model file: .safetensors, .pth or "
                        ".onnx (architecture, scale, parameters and how it was made)")
    p.set_defaults(run=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from blindsr import zoo

    shipped = zoo.shipped_models()
    if args.name:
        if args.name == "bicubic":
            print("bicubic: MATLAB-style bicubic interpolation (any scale); always available.")
            return 0
        if args.name not in shipped:
            if user_path(args.name).exists():
                from blindsr.describe import describe

                print(describe(user_path(args.name)))
                return 0
            raise BlindSRError(f"{args.name}: no such shipped model or model file "
                               f"(shipped: {', '.join(['bicubic', *shipped])})")
        print(shipped[args.name].card_text())
        return 0
    default = zoo.default_model_name()
    mark = "  [default]"
    print(f"{'bicubic':24} MATLAB-style bicubic interpolation{mark * (default == 'bicubic')}")
    for name, model in shipped.items():
        print(f"{name:24} {model.summary()}{mark * (default == name)}")
    return 0


# Commands whose arguments live beside their implementation: each module defines
# `add_parser(subparsers)`, which registers the command and sets `run=` to a function of the args.
COMMAND_MODULES = ("blindsr.evaluate", "blindsr.assets", "blindsr.train", "blindsr.plot",
                   "blindsr.analyze", "blindsr.compress.cli", "blindsr.export",
                   "blindsr.interpolate", "blindsr.score", "blindsr.compare")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `blindsr` command."""
    parser = argparse.ArgumentParser(
        prog="blindsr", description="Blind (real-world) image super-resolution.")
    parser.add_argument("--version", action="version", version=f"blindsr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_upscale(sub)
    _add_degrade(sub)
    _add_models(sub)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


# Exit status when the reader of stdout went away (`blindsr models | head`): 128 + SIGPIPE, what a
# shell reports for Unix tools killed by SIGPIPE (e.g. `yes | head`). Not 0, so that scripts with
# `set -o pipefail` can still tell that the output was cut short; not 1, which means a user error.
SIGPIPE_STATUS = 141


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    try:
        try:
            return _main(argv)
        finally:
            if sys.stdout is not None:  # a short output waits in the buffer: a closed pipe
                sys.stdout.flush()  # shows up only at this flush
    except BrokenPipeError:
        # Stop quietly, without a traceback. Whatever is still buffered would make the
        # interpreter's last flush fail again ("Exception ignored ..."), so stdout goes to devnull.
        _discard_stdout()
        return SIGPIPE_STATUS


def _discard_stdout() -> None:
    """Point stdout's file descriptor at the null device (no-op without a descriptor)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # e.g. a stand-in stream in tests
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _one_line_warning(message: Warning | str, category: type[Warning], *_: object,
                      **__: object) -> str:
    """Warnings as the command's users should see them: one line, without a source line (and
    with the category where it is not a plain UserWarning, e.g. a library's FutureWarning)."""
    kind = "" if category is UserWarning else f" ({category.__name__})"
    return f"blindsr: warning{kind}: {message}\n"


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    keep_freed_memory()  # every command moves large tensors: reuse them (see blindsr.allocator)
    previous, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return args.run(args)
    except BlindSRError as err:
        print(f"blindsr: error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # handled in main: the reader went away
        raise
    except OSError as err:  # the system refused something the checks did not foresee
        if err.errno is None:  # not a system call's refusal (e.g. a library's): a real bug
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"blindsr: error: {where}{err.strerror or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("blindsr: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = previous
