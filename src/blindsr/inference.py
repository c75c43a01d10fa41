"""Upscaling images with any model: the main job.

`Upscaler` owns the device-side details (dtype, channels_last, tile size chosen from free memory and
halved on out-of-memory); `upscale` is the Python entry point for arrays, PIL images and paths;
`upscale_files` is what ``blindsr upscale`` runs over files, folders and globs.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from blindsr import io, zoo
from blindsr.checks import is_whole
from blindsr.errors import BlindSRError, first_line
from blindsr.files import Report, process_files
from blindsr.machine import available_memory
from blindsr.onnx_model import OnnxModel
from blindsr.ops.resize import imresize
from blindsr.tiling import run_tiled, tiles

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MIN_TILE = 16
MAX_TILE = 1024
MAX_OUTSCALE = 256
# Host memory per output pixel and pass: the float output, its resize, the quantised copy and the
# encoder's buffer (`blindsr upscale` of a photo at x4 peaked at about 46 bytes)
BYTES_PER_OUTPUT_PIXEL = 48


@dataclass
class Settings:
    """How to run a model over images. ``tile=None`` picks a size from free device memory."""

    tile: int | None = None
    tile_pad: int = 16
    batch: int = 4
    dtype: str = "fp32"
    device: str | torch.device | None = None
    outscale: float | None = None
    channels_last: bool = True
    # blur-conditioned models (AMNet): render for a Gaussian blur of this width (sigma, HR
    # pixels) instead of the model's own estimate: a sharpness knob, or the non-blind setting
    blur: float | None = None

    def __post_init__(self) -> None:
        """numpy scalars (``np.int64(64)``, ``np.float32(2.0)``) as the Python numbers they are."""
        for name in ("tile", "tile_pad", "batch"):
            value = getattr(self, name)
            if isinstance(value, numbers.Integral) and not isinstance(value, (bool, int)):
                setattr(self, name, int(value))
        for name in ("outscale", "blur"):
            value = getattr(self, name)
            if isinstance(value, numbers.Real) and not isinstance(value, (bool, int, float)):
                setattr(self, name, float(value))


def check_settings(settings: Settings) -> None:
    """One-line errors for settings no run can use (each names its command-line option)."""
    if settings.tile is not None and not is_whole(settings.tile, MIN_TILE):
        raise BlindSRError(f"tile (--tile) must be a whole number >= {MIN_TILE} (or left out: "
                           f"sized from free memory), got {settings.tile!r}")
    if not is_whole(settings.tile_pad, 0):
        raise BlindSRError(f"tile_pad (--tile-pad) must be a whole number >= 0, "
                           f"got {settings.tile_pad!r}")
    if not is_whole(settings.batch, 1):
        raise BlindSRError(f"batch (--batch) must be a whole number >= 1, got {settings.batch!r}")
    outscale = settings.outscale
    if outscale is not None and not (isinstance(outscale, (int, float))
                                     and math.isfinite(outscale) and 0 < outscale <= MAX_OUTSCALE):
        raise BlindSRError(f"outscale (--outscale) must be a number in (0, {MAX_OUTSCALE}], "
                           f"got {outscale!r}")
    blur = settings.blur
    if blur is not None and not (isinstance(blur, numbers.Real) and not isinstance(blur, bool)
                                 and _finite(blur) and blur > 0):
        raise BlindSRError(f"blur (--blur) must be a positive number, got {blur!r}")


def _finite(value: numbers.Real) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def conditioned_arch(name: str | None) -> bool:
    """Whether the architecture ``name`` takes a code it can also estimate (AMNet)."""
    from blindsr import archs

    spec = archs.ARCHS.get(name or "")
    return spec is not None and callable(getattr(spec.constructor, "image_code", None))


def check_rgb_model(model: nn.Module) -> None:
    """A one-line error for models that do not map RGB to RGB (images are upscaled as RGB;
    gray images are expanded to three channels)."""
    inner = getattr(model, "model", model)  # under self-ensemble
    kwargs = getattr(model, "arch_kwargs", None) or getattr(inner, "arch_kwargs", None) or {}
    channels = (kwargs.get("num_in_ch", 3), kwargs.get("num_out_ch", 3))
    if channels != (3, 3):
        name = getattr(model, "arch_name", type(model).__name__)
        raise BlindSRError(f"{name} maps {channels[0]} to {channels[1]} channels; upscale and "
                           "eval run RGB-to-RGB models (3 and 3)")


def blur_code(model: nn.Module, sigma: float) -> torch.Tensor:
    """(1, code_dim) kernel code of a Gaussian blur of width ``sigma`` for a blur-conditioned
    model (AMNet, also under self-ensemble), in the units it was trained with."""
    from blindsr.degrade.kernel_code import coder_of_model

    inner = model if hasattr(model, "sigma_range") else getattr(model, "model", model)
    if not callable(getattr(model, "image_code", None)) or not hasattr(inner, "sigma_range"):
        if conditioned_arch(getattr(inner, "source_arch", None)):
            raise BlindSRError("blur (--blur): an ONNX export has no code input; use the "
                               ".safetensors model (e.g. amnet-x4) for --blur")
        name = getattr(inner, "arch_name", type(inner).__name__)
        raise BlindSRError(f"blur (--blur) is for blur-conditioned models (amnet-x4); this "
                           f"model ({name}) takes no kernel code")
    coder = coder_of_model(inner)
    lo, hi = coder.sigma_range
    sigma = float(sigma)
    if not lo <= sigma <= hi:
        raise BlindSRError(f"blur (--blur) {sigma:g} is outside the blur widths the model was "
                           f"trained on, sigma in [{lo:g}, {hi:g}]")
    return coder.encode(sigma)


DEVICE_TYPES = ("cpu", "cuda", "mps")  # what blindsr runs on (not meta, xpu, ...)


def pick_device(name: str | torch.device | None) -> torch.device:
    """The requested device (a name or a ``torch.device``), checked; by default CUDA, then MPS,
    then CPU."""
    if isinstance(name, torch.device):
        name = str(name)
    if name is not None and not isinstance(name, str):
        raise BlindSRError(f"device (--device) must be a name such as cpu or cuda:0, "
                           f"got {type(name).__name__}")
    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BlindSRError(f"--device {name}: CUDA is not available in this PyTorch build")
    if name == "mps" and not (getattr(torch.backends, "mps", None)
                              and torch.backends.mps.is_available()):
        raise BlindSRError("--device mps: MPS is not available on this machine")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise BlindSRError(f"--device {name}: unknown device ({err})") from None
    if device.type not in DEVICE_TYPES:
        raise BlindSRError(f"--device {name}: not supported here (cpu, cuda, cuda:N or mps)")
    if device.type == "cuda" and device.index is not None \
            and device.index >= torch.cuda.device_count():
        raise BlindSRError(f"--device {name}: this machine has {torch.cuda.device_count()} "
                           "CUDA device(s)")
    return device


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """The compute dtype; fp16 is refused on CPU, where bf16 is the half-precision choice."""
    if name not in DTYPES:
        raise BlindSRError(f"--dtype {name}: choose one of {', '.join(DTYPES)}")
    if name == "fp16" and device.type == "cpu":
        raise BlindSRError("--dtype fp16 is not supported on CPU; use fp32 (the default; bf16 "
                           "runs, but several times slower without native bf16 instructions)")
    return DTYPES[name]


def free_memory(device: torch.device) -> int:
    """Bytes free on the device (host memory for CPU)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    free = available_memory()
    return 4 << 30 if free is None else free


def bytes_per_pixel(model: nn.Module, dtype: torch.dtype, device: torch.device) -> float:
    """Peak activation bytes per input pixel, estimated from one forward of a 32x32 probe
    (smaller for scales above 8, so that the probe's own output stays small): the largest
    output of any leaf module, times 3 (its input, itself and a temporary). A leaf that hides
    its insides (an ONNX model) counts as ``activation_width`` channels at its output's size."""
    multiple = int(getattr(model, "size_multiple", 1))
    side = max(1, min(32, 256 // int(getattr(model, "scale", 1))))
    side = -(-side // multiple) * multiple
    sizes: list[int] = []
    leaves = [m for m in model.modules() if not any(m.children())]

    def record(module: nn.Module, _: Any, out: Any) -> None:
        if torch.is_tensor(out) and out.ndim == 4:
            width = max(out.shape[1], int(getattr(module, "activation_width", 0)))
            sizes.append(out.numel() // out.shape[1] * width)
        elif torch.is_tensor(out):
            sizes.append(out.numel())

    hooks = [m.register_forward_hook(record) for m in leaves]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, side, side, device=device, dtype=dtype))
    finally:
        for hook in hooks:
            hook.remove()
    return 3 * max(sizes, default=3 * side * side) / (side * side) * torch.finfo(dtype).bits / 8


def model_scale(model: nn.Module, device: torch.device, dtype: torch.dtype,
                multiple: int = 1) -> int:
    """The model's upscaling factor: its ``scale`` attribute, else measured on a small probe
    (a one-line error if the output is no whole multiple of the input)."""
    declared = getattr(model, "scale", None)
    if declared is not None:
        return int(declared)
    side = 8 * multiple
    try:
        with torch.inference_mode():
            y = model(torch.zeros(1, 3, side, side, device=device, dtype=dtype))
    except RuntimeError as err:
        raise BlindSRError(f"the model cannot run on a 1x3x{side}x{side} image: "
                           f"{first_line(err)}") from err
    if not torch.is_tensor(y) or y.ndim != 4 or y.shape[-1] % side or y.shape[-2] != y.shape[-1]:
        shape = tuple(y.shape) if torch.is_tensor(y) else type(y).__name__
        raise BlindSRError(f"the model made {shape} of a 1x3x{side}x{side} image: not an "
                           "upscaled image (give it a `scale` attribute if it has one)")
    return y.shape[-1] // side


def auto_tile(model: nn.Module, device: torch.device, dtype: torch.dtype, batch: int) -> int:
    """The largest tile (multiple of 16) whose batch fits in half of the free memory."""
    budget = free_memory(device) / 2 / max(batch, 1)
    side = int(math.sqrt(budget / bytes_per_pixel(model, dtype, device))) // 16 * 16
    return max(MIN_TILE, min(MAX_TILE, side))


def is_out_of_memory(err: BaseException) -> bool:
    """Whether an exception is an allocation failure (CUDA, MPS or CPU)."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and any(sign in text for sign in (
        "out of memory", "can't allocate memory", "failed to allocate memory", "bad_alloc",
        "bad allocation"))  # the last three: ONNX Runtime


FLAT_ALPHA_RADIUS = 3  # input pixels: output alpha where the input's is flat this far around


def flat_alpha(alpha: torch.Tensor, size: torch.Size | tuple[int, int],
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where ``alpha`` (1, 1, h, w) is constant within :data:`FLAT_ALPHA_RADIUS` input pixels,
    and that constant, both at output ``size`` (nearest): (mask, value)."""
    k = 2 * FLAT_ALPHA_RADIUS + 1
    high = F.max_pool2d(alpha, k, stride=1, padding=FLAT_ALPHA_RADIUS)
    low = -F.max_pool2d(-alpha, k, stride=1, padding=FLAT_ALPHA_RADIUS)
    flat = F.interpolate((high == low).float(), size=tuple(size), mode="nearest") > 0.5
    return flat, F.interpolate(alpha, size=tuple(size), mode="nearest")


def partly_transparent(alpha: torch.Tensor | None) -> bool:
    """Whether an image's alpha is neither absent, wholly opaque nor wholly clear: only then
    does the alpha need its own pass through the model."""
    return alpha is not None and not bool((alpha == 1).all()) and bool(alpha.any())


class Upscaler:
    """A model prepared for inference on a device, applied tile by tile to host images."""

    def __init__(self, model: str | Path | nn.Module | None = None,
                 settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        check_settings(self.settings)
        self.device = pick_device(self.settings.device)
        self.dtype = pick_dtype(self.settings.dtype, self.device)
        bicubic_scale = math.ceil(self.settings.outscale or 4)
        self.model = zoo.load(model, scale=bicubic_scale, device=self.device)
        check_rgb_model(self.model)
        if isinstance(self.model, OnnxModel) and self.dtype != torch.float32:
            raise BlindSRError(f"dtype (--dtype) {self.settings.dtype}: an ONNX model runs in "
                               "float32 in ONNX Runtime; leave it at fp32")
        self.model.to(dtype=self.dtype)
        self.channels_last = self.settings.channels_last and self.device.type != "mps"
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.multiple = int(getattr(self.model, "size_multiple", 1))
        self.scale = model_scale(self.model, self.device, self.dtype, self.multiple)
        self.tile = self.settings.tile or auto_tile(
            self.model, self.device, self.dtype, self.settings.batch)
        # an ONNX export of AMNet estimates its code from each tile it is given
        self.code_per_tile = conditioned_arch(getattr(self.model, "source_arch", None))
        self.fixed_code = (None if self.settings.blur is None
                           else blur_code(self.model, self.settings.blur))

    def forward(self, batch: torch.Tensor, code: torch.Tensor | None = None,
                clamp: bool = True) -> torch.Tensor:
        """Model forward on a host batch: to device, pad to the model's multiple, back to host
        (``code``: the image's code for models conditioned on one, see :meth:`image_code`;
        ``clamp``: to [0, 1])."""
        _, _, h, w = batch.shape
        x = batch.to(self.device, self.dtype)
        pad_h, pad_w = -h % self.multiple, -w % self.multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            y = self.model(x) if code is None else self.model(x, code)
            expected = (x.shape[-2] * self.scale, x.shape[-1] * self.scale)
            if tuple(y.shape[-2:]) != expected:
                raise BlindSRError(f"the model made a {y.shape[-2]}x{y.shape[-1]} output of a "
                                   f"{x.shape[-2]}x{x.shape[-1]} input, not x{self.scale}")
            y = y[:, :, : h * self.scale, : w * self.scale].float()
            return (y.clamp_(0, 1) if clamp else y).cpu()

    def image_code(self, x: torch.Tensor) -> torch.Tensor | None:
        """One code for the whole (1, 3, H, W) host image from models that are conditioned on
        one (``model.image_code``, e.g. AMNet's blur estimate; the code of ``settings.blur``
        when given), so every tile gets the same; None for other models."""
        if self.fixed_code is not None:
            return self.fixed_code.to(self.device, self.dtype)
        image_code = getattr(self.model, "image_code", None)
        if not callable(image_code):
            return None
        with torch.inference_mode():
            return image_code(x.to(self.device, self.dtype))

    def count_tiles(self, height: int, width: int) -> int:
        """Number of tiles an image of this size is cut into at the current tile size."""
        return len(tiles(height, width, self.tile, min(self.settings.tile_pad, self.tile)))

    def upscale_tensor(self, x: torch.Tensor, on_tiles: Callable[[int], None] | None = None,
                       code: torch.Tensor | None = None, clamp: bool = True) -> torch.Tensor:
        """Upscale a (1, 3, H, W) host tensor by the model's scale, halving the tile on OOM
        (``code``: for conditioned models, the code to use instead of ``x``'s own; ``clamp``:
        the output to [0, 1])."""
        code = self.image_code(x) if code is None else code
        forward = partial(self.forward, code=code, clamp=clamp)
        n_tiles = self.count_tiles(*x.shape[-2:]) if self.code_per_tile else 1
        if n_tiles > 1:
            warnings.warn(f"this ONNX export of {self.model.source_arch} estimates the blur per "
                          f"tile, and a {x.shape[-1]}x{x.shape[-2]} image takes "
                          f"{n_tiles} tiles: tiles may disagree; pass "
                          f"--tile {max(x.shape[-2:])} to run it whole, or use the .safetensors "
                          "model", stacklevel=2)
        while True:
            try:
                return run_tiled(forward, x, self.scale, self.tile,
                                 min(self.settings.tile_pad, self.tile), self.settings.batch,
                                 on_tiles)
            except (torch.OutOfMemoryError, RuntimeError) as err:
                if not is_out_of_memory(err):  # e.g. a model made for 4 input channels
                    raise BlindSRError(f"the model cannot run on this image "
                                       f"({tuple(x.shape)}): {first_line(err)}") from err
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if self.tile <= MIN_TILE:
                    message = f"out of memory on {self.device} even with {MIN_TILE}-pixel tiles"
                    raise BlindSRError(message) from None
                self.tile = max(MIN_TILE, self.tile // 2)

    def check_memory(self, height: int, width: int, passes: int = 1) -> None:
        """A one-line error, before any work, if upscaling an image of this size would need
        more host memory than is free (a huge --outscale, for instance)."""
        outscale = self.settings.outscale or self.scale
        out_h, out_w = round(height * outscale), round(width * outscale)
        if out_h < 1 or out_w < 1:
            raise BlindSRError(f"--outscale {outscale:g} makes this {width}x{height} image "
                               "smaller than one pixel")
        pixels = max(out_h * out_w, height * width * self.scale**2)
        need = BYTES_PER_OUTPUT_PIXEL * pixels * passes
        free = available_memory()
        if free is not None and need > free:
            raise BlindSRError(
                f"a {out_w}x{out_h} output needs about {need / 2**30:.1f} GiB of memory and "
                f"{free / 2**30:.1f} GiB is free: lower --outscale or upscale a smaller image")

    def upscale_image(self, image: io.ImageData,
                      on_tiles: Callable[[int], None] | None = None) -> io.ImageData:
        """Upscale colour premultiplied by alpha, and alpha itself (as a gray image), with the
        model (the same code for conditioned models), then divide channel by channel: both go
        through the same operator, so a sharpening model cannot leave alpha where it has taken
        the colour away (dark fringes on transparent edges). The output alpha is the mean of the
        model's three channels, except where the input alpha is flat around a pixel (opaque or
        clear areas): there it keeps the input's value exactly. A wholly opaque image upscales
        as its RGB would; a wholly clear one stays clear."""
        alpha = image.alpha.float() if image.alpha is not None else None
        mixed = partly_transparent(alpha)
        self.check_memory(image.height, image.width, passes=2 if mixed else 1)
        color = image.color.float()
        if image.gray:
            color = color.expand(-1, 3, -1, -1)
        code = self.image_code(color.contiguous())  # the blur of the colour, not of the alpha
        if alpha is not None:
            color = color * alpha
        color = color.contiguous()
        # with alpha, both passes stay unclamped until the division: overshoot at an edge then
        # cancels (a clamped alpha of 1 under a colour overshooting by 7 % tints the edge)
        sr = self.upscale_tensor(color, on_tiles, code, clamp=not mixed)
        sr_alpha = None
        if mixed:
            sr_alpha = self.upscale_tensor(alpha.expand(-1, 3, -1, -1).contiguous(), on_tiles,
                                           code, clamp=False)
        outscale = self.settings.outscale or self.scale
        if outscale != self.scale:  # the same resize for both, so their sizes agree
            sr = imresize(sr, outscale / self.scale)
            if sr_alpha is not None:
                sr_alpha = imresize(sr_alpha, outscale / self.scale)
        out_alpha = None
        if sr_alpha is not None:
            sr = torch.where(sr_alpha > 1e-4, sr / sr_alpha.clamp_min(1e-4), 0)
            flat, value = flat_alpha(alpha, sr.shape[-2:])
            out_alpha = torch.where(flat, value, sr_alpha.mean(dim=1, keepdim=True).clamp(0, 1))
        elif alpha is not None:  # wholly opaque or wholly clear
            out_alpha = torch.full_like(sr[:, :1], float(alpha.max()))
            sr = sr * out_alpha
        sr = sr.clamp_(0, 1)
        if image.gray:
            sr = sr.mean(dim=1, keepdim=True)
        return io.ImageData(color=sr, alpha=out_alpha, bit_depth=image.bit_depth,
                            icc_profile=image.icc_profile)


def upscale(image: Any, model: str | Path | nn.Module | None = None, **settings: Any) -> Any:
    """Upscale one image given as a path, numpy array, PIL image, float tensor or `io.ImageData`.

    Returns the same kind as the input for arrays (same dtype; a boolean mask comes back as the
    mask of the pixels at least half on), PIL images and tensors (``(C, H, W)`` or ``(N, C, H,
    W)`` floats in [0, 1], C in 1-4 with alpha last for 2 and 4: the same layout, dtype and
    device back; a batch is upscaled image by image), else `io.ImageData`.
    Keyword settings are those of `Settings` (tile, tile_pad, batch, dtype, device, outscale,
    channels_last, blur).
    """
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise BlindSRError(f"upscale: unknown setting(s) {', '.join(unknown)}; known: "
                           f"{', '.join(sorted(known))}")
    if isinstance(image, torch.Tensor):
        return _upscale_tensors(image, Upscaler(model, Settings(**settings)))
    data = io.to_image_data(image)
    result = Upscaler(model, Settings(**settings)).upscale_image(data)
    if isinstance(image, np.ndarray):
        if np.issubdtype(image.dtype, np.floating):  # floats in, floats out, not rounded
            return io.to_numpy(result, floating=True).astype(image.dtype)
        if image.dtype == np.bool_:  # not every level above 0, which would grow the mask
            return io.to_numpy(result, floating=True) >= 0.5
        return io.to_numpy(result).astype(image.dtype)
    if type(image).__module__.startswith("PIL."):
        return io.to_pil(result)
    return result


def _upscale_tensors(x: torch.Tensor, upscaler: Upscaler) -> torch.Tensor:
    """:func:`upscale` for a (C, H, W) or (N, C, H, W) float tensor in [0, 1]."""
    batch = x if x.ndim == 4 else x[None] if x.ndim == 3 else None
    if batch is None or batch.shape[1] not in (1, 2, 3, 4) or 0 in batch.shape:
        raise BlindSRError(f"a tensor image must be (C, H, W) or (N, C, H, W) with C in 1-4, "
                           f"got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise BlindSRError(f"a tensor image must hold floats in [0, 1], got {x.dtype} (divide "
                           "8-bit values by 255)")
    values = batch.detach().float().cpu()
    if not (torch.isfinite(values).all() and values.min() >= 0 and values.max() <= 1):
        raise BlindSRError("a tensor image must hold finite values in [0, 1]")
    c = values.shape[1]
    outs = []
    for one in values:
        colour, alpha = (one[:-1], one[-1:]) if c in (2, 4) else (one, None)
        result = upscaler.upscale_image(io.ImageData(colour[None], None if alpha is None
                                                     else alpha[None], 8))
        parts = [result.color] + ([result.alpha] if result.alpha is not None else [])
        outs.append(torch.cat(parts, dim=1))
    out = torch.cat(outs).to(device=x.device, dtype=x.dtype)
    return out if x.ndim == 4 else out[0]


def upscale_files(inputs: list[str], output: str | Path, model: str | Path | None = None,
                  settings: Settings | None = None, suffix: str = "", ext: str = "auto",
                  max_pixels: int | None = None, progress: bool = True,
                  quality: int = 95) -> Report:
    """Upscale files, folders and globs into ``output``; a bad file is reported and skipped."""
    paths, _ = io.expand_inputs(inputs)
    if not paths:
        return process_files(inputs, output, None, verb="upscaled")
    upscaler = Upscaler(model, settings)
    return process_files(
        inputs, output, upscaler.upscale_image, verb="upscaled", suffix=suffix, ext=ext,
        max_pixels=max_pixels, quality=quality, progress=progress,
        steps=lambda image: upscaler.count_tiles(image.height, image.width)
        * (2 if partly_transparent(image.alpha) else 1),  # then alpha has its own pass
        in_place_hint="use -o or --suffix")
