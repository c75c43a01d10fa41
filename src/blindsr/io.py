"""Image files <-> float tensors: the only module that knows formats, bit depth, alpha and EXIF.

Reading (:func:`read_image`) accepts PNG, JPEG, BMP, TIFF and WebP, and GIF and PPM/PGM/PBM
(first frame of an animation; written back as PNG):
8 and 16 bits per channel, 1-bit, gray, gray+alpha, RGB, RGBA, palette (tRNS -> alpha), CMYK and
YCbCr (-> RGB); the EXIF orientation is applied. The rest of blindsr sees :class:`ImageData`:
float32 tensors in [0, 1], colour (1, C, H, W) with C = 1 or 3, and straight (not premultiplied)
alpha.

Writing (:func:`write_image`) takes the format from the extension and keeps what it can hold:

- bit depth: 16-bit images stay 16-bit in PNG and TIFF; JPEG, WebP and BMP are always 8-bit.
- alpha: kept in PNG, TIFF and WebP. JPEG and BMP have no alpha: the image is composited onto
  white (what a viewer shows on a white page) rather than exposing colour hidden by transparency.
- gray stays gray, except in WebP (RGB only). 16-bit gray+alpha TIFF is stored as RGBA because
  Pillow cannot read 16-bit gray+alpha TIFF back.
- JPEG uses 4:4:4 chroma at quality >= 90; WebP at quality 100 is lossless.
- an embedded ICC colour profile is read into ``ImageData.icc_profile`` and written back into
  PNG, JPEG, WebP and TIFF (not BMP) when it fits the pixels (an RGB profile on RGB, a gray one on
  gray; a CMYK profile is dropped with the conversion to RGB). Other metadata (EXIF, DPI, text)
  is not carried: the orientation is already applied to the pixels.

Pillow truncates 16-bit RGB(A) and gray+alpha to 8 bits, so those are read by decoding the file
twice with Pillow's own C decoders, for the high and then the low byte of each sample (no extra
dependency), and written by the small PNG/TIFF encoders below. Files are written atomically
(:mod:`blindsr.atomic`). Every failure raises a one-line
:class:`BlindSRError` naming the file.
"""

from __future__ import annotations

import glob
import os
import struct
import sys
import threading
import warnings
import zlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError, features

from .atomic import write_atomic
from .errors import BlindSRError
from .paths import user_path

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# read as well (first frame of an animated GIF), written as PNG
READ_ONLY_EXTENSIONS: tuple[str, ...] = (".gif", ".ppm", ".pgm", ".pbm", ".pnm")
READ_EXTENSIONS: tuple[str, ...] = (*IMAGE_EXTENSIONS, *READ_ONLY_EXTENSIONS)
DEFAULT_MAX_PIXELS: int = 178_956_970  # Pillow's decompression-bomb error threshold
MAX_PIXELS_ENV = "BLINDSR_MAX_PIXELS"

_WRITE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
# Pillow plugins we let identify a file (JPEG also opens MPO camera files); never EPS & co.
_READ_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF", "PPM")
_OPEN_LOCK = threading.Lock()
PNG_TEXT_LIMIT = 64 * 2**20  # bytes of one decompressed PNG text chunk read at open


@dataclass
class ImageData:
    """An image as tensors: ``color`` (1, C, H, W) with C in (1, 3); ``alpha`` (1, 1, H, W) or None.

    Values are in [0, 1]; alpha is straight. ``bit_depth`` (8 or 16) is that of the source file and
    decides the depth written back where the format allows it. ``icc_profile``: the source's
    embedded colour profile (raw ICC bytes), written back with the image where it fits.
    """

    color: torch.Tensor
    alpha: torch.Tensor | None
    bit_depth: int
    path: Path | None = None
    icc_profile: bytes | None = None

    def __post_init__(self) -> None:
        c = self.color
        if not isinstance(c, torch.Tensor) or c.ndim != 4 or c.shape[0] != 1 or c.shape[1] not in (
                1, 3):
            shape = tuple(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__
            raise BlindSRError(f"ImageData: color must be a (1, 1 or 3, H, W) tensor, got {shape}")
        for name, t in (("color", c), ("alpha", self.alpha)):
            if t is not None and not t.is_floating_point():
                raise BlindSRError(f"ImageData: {name} must be floats in [0, 1], got {t.dtype} "
                                   "(divide 8-bit values by 255)")
        if self.alpha is not None and tuple(self.alpha.shape) != (1, 1, *c.shape[-2:]):
            raise BlindSRError(f"ImageData: alpha must be (1, 1, H, W), got "
                               f"{tuple(self.alpha.shape)}")
        if self.bit_depth not in (8, 16):
            raise BlindSRError(f"ImageData: bit_depth must be 8 or 16, got {self.bit_depth}")

    @property
    def height(self) -> int:
        """Rows of pixels."""
        return int(self.color.shape[-2])

    @property
    def width(self) -> int:
        """Columns of pixels."""
        return int(self.color.shape[-1])

    @property
    def gray(self) -> bool:
        """True when the image has a single colour channel."""
        return self.color.shape[1] == 1


# ----------------------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> ImageData:
    """Read an image file; ``max_pixels`` (default ``$BLINDSR_MAX_PIXELS`` or
    :data:`DEFAULT_MAX_PIXELS`, 0 = no limit) guards against decompression bombs; a leading
    ``~`` is expanded."""
    path = user_path(path)
    limit = max_pixel_limit(max_pixels)
    _check_readable(path)
    try:
        color, alpha, depth, icc = _read_arrays(path, limit)
    except BlindSRError:
        raise
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...)
        raise BlindSRError(f"cannot read image {path}: {_reason(exc)}") from exc
    return _from_arrays(color, alpha, depth, path, icc)


def max_pixel_limit(max_pixels: int | None = None) -> int:
    """The decompression-bomb limit in pixels (0: none): ``max_pixels`` if given, else
    ``$BLINDSR_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`; a negative one is an error."""
    if max_pixels is not None:
        if int(max_pixels) < 0:
            raise BlindSRError(f"--max-pixels must be >= 0 (0: no limit), got {max_pixels}")
        return int(max_pixels)
    env = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not env:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(env.replace("_", ""))
    except ValueError:
        raise BlindSRError(f"{MAX_PIXELS_ENV}={env!r} is not a whole number") from None
    if limit < 0:
        raise BlindSRError(f"{MAX_PIXELS_ENV} must be >= 0 (0: no limit), got {limit}")
    return limit


def _check_readable(path: Path) -> None:
    try:
        if path.is_dir():
            reason = "it is a folder, not an image file"
        elif not path.exists():
            reason = "no such file"
        elif not path.is_file():
            reason = "not a regular file"
        elif path.stat().st_size == 0:
            reason = "the file is empty (0 bytes)"
        else:
            return
    except OSError as exc:
        reason = exc.strerror or str(exc)
    raise BlindSRError(f"cannot read image {path}: {reason}")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not a readable PNG, JPEG, BMP, TIFF or WebP image (corrupt or unsupported variant)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = " ".join(str(exc).split())
    if "MAX_TEXT_" in text:  # Pillow's guard against a zip bomb in PNG text chunks
        return ("its text metadata (tEXt/zTXt/iTXt chunks) is too large to read safely; "
                "strip the metadata (e.g. exiftool -all= FILE) and try again")
    return text if text else type(exc).__name__


def _open(path: Path) -> Image.Image:
    """Image.open without Pillow's own pixel limit (we apply ours, maybe higher, ourselves) and
    with room for large PNG metadata before the pixels (XMP of tens of MB: Pillow stops at 1 MB
    of text per chunk)."""
    from PIL import PngImagePlugin

    with _OPEN_LOCK:
        saved = (Image.MAX_IMAGE_PIXELS, PngImagePlugin.MAX_TEXT_CHUNK,
                 PngImagePlugin.MAX_TEXT_MEMORY)
        Image.MAX_IMAGE_PIXELS = None
        PngImagePlugin.MAX_TEXT_CHUNK = max(saved[1], PNG_TEXT_LIMIT)
        PngImagePlugin.MAX_TEXT_MEMORY = max(saved[2], 4 * PNG_TEXT_LIMIT)
        try:
            return Image.open(path, formats=_READ_FORMATS)
        finally:
            (Image.MAX_IMAGE_PIXELS, PngImagePlugin.MAX_TEXT_CHUNK,
             PngImagePlugin.MAX_TEXT_MEMORY) = saved


def _check_pixels(path: Path, size: tuple[int, int], limit: int) -> None:
    w, h = size
    if limit > 0 and w * h > limit:
        raise BlindSRError(
            f"cannot read image {path}: {w}x{h} = {w * h:,} pixels is over the limit of {limit:,} "
            f"(a guard against decompression bombs); raise it with --max-pixels N or "
            f"{MAX_PIXELS_ENV}=N"
        )


Arrays = tuple[np.ndarray, "np.ndarray | None", int]


def _read_arrays(path: Path, limit: int) -> tuple[np.ndarray, np.ndarray | None, int, Any]:
    """Decode to (color HxWxC, alpha HxW or None, bit depth, the file's ICC profile entry),
    EXIF orientation applied."""
    with _open(path) as im:
        _check_pixels(path, im.size, limit)
        _check_layout(im)
        color, alpha, depth = _decode(im, path)
        orientation = _orientation(im)
        icc = im.info.get("icc_profile") or None
        frames = _animation_frames(im)
    if frames > 1:
        warnings.warn(f"{path}: an animation of {frames} frames; only the first is used",
                      stacklevel=3)
    color = _orient(color, orientation)
    alpha = None if alpha is None else _orient(alpha, orientation)
    return color, alpha, depth, icc


def _animation_frames(im: Image.Image) -> int:
    """Frames of an animated GIF, PNG or WebP; 1 for anything else (a camera's MPO JPEG, a
    multi-page TIFF) or when a damaged file cannot say (its first frame decoded)."""
    if im.format not in ("GIF", "PNG", "WEBP"):
        return 1
    try:
        return int(im.n_frames) if getattr(im, "is_animated", False) else 1
    except Exception:  # a file cut after its first frame
        return 1


def _check_layout(im: Image.Image) -> None:
    """Refuse what Pillow would decode to wrong pixels without an error."""
    if im.format != "TIFF":
        return
    tags = getattr(im, "tag_v2", {})
    bits = tags.get(258, (8,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    if tags.get(284, 1) == 2 and any(b > 8 for b in bits):
        raise ValueError("16-bit TIFF with separate colour planes (PlanarConfiguration 2) is not "
                         "supported; save it with contiguous samples")


def profile_fits(icc: bytes | None, channels: int) -> bool:
    """Whether an ICC profile describes pixels of ``channels`` colour channels (its header's
    colour space: 'RGB ' for 3, 'GRAY' for 1)."""
    if not icc or len(icc) < 20:
        return False
    return icc[16:20] == (b"RGB " if channels == 3 else b"GRAY")


# Pillow keeps only the high byte of these 16-bit layouts; decoding again with the opposite byte
# order gives the low byte (same bits per pixel, so PNG/TIFF un-filtering is unchanged).
_NATIVE, _OTHER = ("L", "B") if sys.byteorder == "little" else ("B", "L")
_LOW_BYTE = {
    f"{m};16{e}": f"{m};16{o}"
    for m in ("RGB", "RGBA", "RGBX")
    for e, o in (("B", "L"), ("L", "B"), ("N", _OTHER))
}


def _tile_rawmode(tile: Any) -> str | None:
    args = tile[3]
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def _with_rawmode(tile: Any, rawmode: str) -> Any:
    args = rawmode if isinstance(tile[3], str) else (rawmode, *tile[3][1:])
    if hasattr(tile, "_replace"):
        return tile._replace(args=args)
    return (tile[0], tile[1], tile[2], args)


def _join16(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    return (hi.astype(np.uint16) << 8) | lo


def _decode(im: Image.Image, path: Path | None) -> Arrays:
    raws = {_tile_rawmode(t) for t in (getattr(im, "tile", None) or [])}
    if path is not None and raws == {"LA;16B"}:  # 16-bit gray+alpha PNG: read the 4 bytes as RGBA
        im.tile = [_with_rawmode(t, "RGBA") for t in im.tile]
        im.load()
        b = np.asarray(im)
        return _join16(b[..., 0], b[..., 1])[..., None], _join16(b[..., 2], b[..., 3]), 16
    if path is not None and raws and raws <= _LOW_BYTE.keys():
        im.load()
        hi = np.asarray(im)
        with _open(path) as low:
            low.tile = [_with_rawmode(t, _LOW_BYTE[_tile_rawmode(t)]) for t in low.tile]
            low.load()
            both = _join16(hi, np.asarray(low))
        if both.shape[-1] == 4:
            return both[..., :3], both[..., 3], 16
        return both, _key_alpha(both, im.info.get("transparency"), 65535), 16
    im.load()
    return _decode_loaded(im)


def _key_alpha(color: np.ndarray, key: Any, opaque: int) -> np.ndarray | None:
    """Alpha from a tRNS colour key (0 where the pixel equals the key), or None without a key."""
    if key is None or isinstance(key, bytes):
        return None
    key = np.asarray(key, dtype=color.dtype).reshape(-1)
    if key.size != color.shape[-1]:
        return None
    hit = np.all(color == key, axis=-1)
    return np.where(hit, 0, opaque).astype(color.dtype)


_TO_RGB = {"1": "L", "La": "LA", "RGBa": "RGBA", "RGBX": "RGB", "CMYK": "RGB", "YCbCr": "RGB"}


def _decode_loaded(im: Image.Image) -> Arrays:
    mode = im.mode
    if mode.startswith("I"):
        return _decode_int(im)
    if mode in _TO_RGB:
        im = im.convert(_TO_RGB[mode])
    if im.mode in ("P", "PA"):
        has_alpha = im.mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
    elif im.mode in ("L", "RGB") and "transparency" in im.info:
        im = im.convert("LA" if im.mode == "L" else "RGBA")
    if im.mode not in ("L", "LA", "RGB", "RGBA"):
        raise ValueError(f"unsupported pixel format {mode!r}")
    a = np.asarray(im)
    if a.ndim == 2:
        return a[..., None], None, 8
    if im.mode in ("LA", "RGBA"):
        return a[..., :-1], a[..., -1], 8
    return a, None, 8


def _decode_int(im: Image.Image) -> Arrays:
    """16-bit gray (I;16*) or 32-bit integer gray holding 16-bit values."""
    a = np.asarray(im)
    if im.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N") or a.ndim != 2:
        raise ValueError(f"unsupported pixel format {im.mode!r}")
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise ValueError("unsupported pixel format: integer values outside 0..65535")
    a = a.astype(np.uint16)[..., None]
    return a, _key_alpha(a, im.info.get("transparency"), 65535), 16


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block must not make a good image unreadable
        return 1
    return value if value in range(1, 9) else 1


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels into display pixels for an EXIF orientation (1-8), on HxW[xC] arrays."""
    if orientation == 2:
        return a[:, ::-1]
    if orientation == 3:
        return a[::-1, ::-1]
    if orientation == 4:
        return a[::-1]
    if orientation == 5:
        return a.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(a, -1)
    if orientation == 7:
        return a.swapaxes(0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(a, 1)
    return a


def _to_tensor(a: np.ndarray, scale: float) -> torch.Tensor:
    """HxWxC array -> (1, C, H, W) float32 tensor divided by ``scale``."""
    x = np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32)
    if scale != 1.0:
        x /= np.float32(scale)
    return torch.from_numpy(x)[None]


def _from_arrays(
    color: np.ndarray, alpha: np.ndarray | None, depth: int, path: Path | None = None,
    icc: Any = None,
) -> ImageData:
    """ImageData from decoded arrays; ``icc`` is kept when it is a profile that fits the pixels."""
    scale = 255.0 if depth == 8 else 65535.0
    a = None if alpha is None else _to_tensor(alpha[..., None], scale)
    profile = icc if isinstance(icc, bytes) and profile_fits(icc, color.shape[-1]) else None
    return ImageData(_to_tensor(color, scale), a, depth, path, profile)


# ----------------------------------------------------------------------------------------- writing


def write_image(path: str | os.PathLike[str], image: ImageData, quality: int = 95) -> Path:
    """Write ``image`` in the format named by the extension (see the module docstring for what each
    format keeps); parent folders are created and the file appears atomically; a leading ``~`` is
    expanded. Returns the path."""
    path = user_path(path)
    fmt = _WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(IMAGE_EXTENSIONS)
        raise BlindSRError(f"cannot write {path}: unknown extension {path.suffix!r} ({known})")
    if not isinstance(image, ImageData):
        raise BlindSRError(f"cannot write {path}: expected ImageData, got {type(image).__name__}")
    if not 1 <= quality <= 100:
        raise BlindSRError(f"cannot write {path}: quality must be in 1..100, got {quality}")
    try:
        data = _encode(image, fmt, quality)
    except Exception as exc:
        raise BlindSRError(f"cannot write {path}: {_reason(exc)}") from exc
    write_atomic(path, data)
    return path


def _quantize(color: torch.Tensor, alpha: torch.Tensor | None, depth: int) -> np.ndarray:
    """Round and clamp to integer levels: HxWxC uint8/uint16, alpha as the last channel."""
    x = color if alpha is None else torch.cat([color, alpha.to(color.dtype)], dim=1)
    x = torch.nan_to_num(x.detach().float(), nan=0.0).clamp_(0, 1)
    x = x.mul_((1 << depth) - 1).round_()
    a = x[0].permute(1, 2, 0).to("cpu", torch.int32).numpy()
    return np.ascontiguousarray(a, dtype=np.uint8 if depth == 8 else np.uint16)


def _over_white(color: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    a = alpha.to(color.dtype).clamp(0, 1)
    return color.clamp(0, 1) * a + (1 - a)


def _encode(image: ImageData, fmt: str, quality: int) -> bytes:
    depth = 16 if image.bit_depth == 16 and fmt in ("PNG", "TIFF") else 8
    color, alpha = image.color, image.alpha
    if alpha is not None and fmt in ("JPEG", "BMP"):
        color, alpha = _over_white(color, alpha), None
    arr = _quantize(color, alpha, depth)
    icc = image.icc_profile if profile_fits(image.icc_profile, color.shape[1]) else None
    if depth == 16:
        return _png16(arr, icc) if fmt == "PNG" else _tiff16(arr, icc)
    options = _save_options(fmt, quality)
    if icc is not None and fmt != "BMP" and not (fmt == "WEBP" and color.shape[1] == 1):
        options["icc_profile"] = icc
    buf = BytesIO()
    _pil_from_array(arr).save(buf, format=fmt, **options)
    return buf.getvalue()


def _pil_from_array(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)


def _save_options(fmt: str, quality: int) -> dict[str, Any]:
    if fmt == "JPEG":
        return {"quality": quality, "subsampling": 0 if quality >= 90 else 2}
    if fmt == "WEBP":
        return {"quality": quality, "lossless": quality >= 100, "exact": True}
    if fmt == "TIFF" and features.check("libtiff"):
        return {"compression": "tiff_adobe_deflate"}
    return {}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png16(arr: np.ndarray, icc: bytes | None = None) -> bytes:
    """16-bit PNG (gray, gray+alpha, RGB, RGBA) with the Sub filter on every row, and an iCCP
    chunk for ``icc``."""
    h, w, c = arr.shape
    raw = arr.astype(">u2").view(np.uint8).reshape(h, w * c * 2)
    rows = np.empty((h, raw.shape[1] + 1), np.uint8)
    rows[:, 0] = 1  # filter type Sub: byte minus the same byte of the previous pixel, mod 256
    rows[:, 1:] = raw
    np.subtract(raw[:, 2 * c :], raw[:, : -2 * c], out=rows[:, 1 + 2 * c :])
    z = zlib.compressobj(6, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    idat = z.compress(rows.tobytes()) + z.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    chunks = [_png_chunk(b"IDAT", idat[i : i + (1 << 20)]) for i in range(0, len(idat), 1 << 20)]
    profile = [] if icc is None else [_png_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc))]
    parts = [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", ihdr), *profile, *chunks,
             _png_chunk(b"IEND", b"")]
    return b"".join(parts)


def _tiff16(arr: np.ndarray, icc: bytes | None = None) -> bytes:
    """16-bit little-endian TIFF in strips; with libtiff in Pillow (to read it back), Adobe deflate
    with the horizontal-differencing predictor; ``icc`` as the ICC profile tag (34675)."""
    if arr.shape[-1] == 2:  # Pillow cannot read 16-bit gray+alpha TIFF: store RGBA
        arr, icc = arr[..., [0, 0, 0, 1]], None  # (and a gray profile would not fit RGB)
    h, w, c = arr.shape
    deflate = features.check("libtiff")
    if deflate:  # predictor 2: each sample minus the same sample of the previous pixel, mod 2**16
        diff = arr.copy()
        diff[:, 1:] -= arr[:, :-1]
        arr = diff
    per_strip = max(1, (1 << 20) // (w * c * 2))
    data = arr.astype("<u2")
    body = bytearray(8)
    offsets, counts = [], []
    for y in range(0, h, per_strip):
        strip = data[y : y + per_strip].tobytes()
        if deflate:
            z = zlib.compressobj(6, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
            strip = z.compress(strip) + z.flush()
        offsets.append(len(body))
        counts.append(len(strip))
        body += strip + b"\0" * (len(strip) % 2)
    if len(body) + 4096 + 8 * len(offsets) > 0xFFFFFFFF:
        raise BlindSRError("image too large for a classic TIFF file (4 GiB); use PNG")
    entries = [
        (256, 4, [w]),
        (257, 4, [h]),
        (258, 3, [16] * c),
        (259, 3, [8 if deflate else 1]),
        (262, 3, [1 if c == 1 else 2]),
        (273, 4, offsets),
        (277, 3, [c]),
        (278, 4, [per_strip]),
        (279, 4, counts),
        (284, 3, [1]),
        (317, 3, [2 if deflate else 1]),
    ] + ([(338, 3, [2])] if c == 4 else [])  # extra sample: unassociated (straight) alpha
    if icc is not None:
        entries.append((34675, 7, icc))  # type 7: undefined bytes
    ifd_at = len(body)
    extra_at = ifd_at + 2 + 12 * len(entries) + 4
    ifd, extra = bytearray(struct.pack("<H", len(entries))), bytearray()
    for tag, kind, values in entries:
        if kind == 7:
            packed = bytes(values)
        else:
            packed = struct.pack(f"<{len(values)}{'H' if kind == 3 else 'I'}", *values)
        if len(packed) <= 4:
            field = packed.ljust(4, b"\0")
        else:
            field = struct.pack("<I", extra_at + len(extra))
            extra += packed + b"\0" * (len(packed) % 2)  # values start on a word boundary
        ifd += struct.pack("<HHI", tag, kind, len(values)) + field
    ifd += struct.pack("<I", 0)
    body[:8] = b"II*\0" + struct.pack("<I", ifd_at)
    return bytes(body + ifd + extra)


# ----------------------------------------------------------------------------------- conversions


def to_image_data(obj: Any) -> ImageData:
    """An ImageData from a path, a numpy array (HxW or HxWxC, C in 1-4; uint8, uint16 or float in
    [0, 1]), a PIL image (taken as is: no EXIF rotation) or an ImageData (returned unchanged)."""
    if isinstance(obj, ImageData):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        return read_image(obj)
    if isinstance(obj, np.ndarray):
        return _from_numpy(obj)
    if isinstance(obj, Image.Image):
        try:
            return _from_arrays(*_decode(obj, None), icc=obj.info.get("icc_profile"))
        except Exception as exc:
            raise BlindSRError(f"cannot use PIL image: {_reason(exc)}") from exc
    raise BlindSRError(
        f"cannot use {type(obj).__name__} as an image: expected a path, a numpy array, "
        "a PIL image or ImageData"
    )


def _from_numpy(a: np.ndarray) -> ImageData:
    if not a.dtype.isnative:  # big-endian data on this machine, e.g. '>u2'
        a = a.astype(a.dtype.newbyteorder("="))
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4) or 0 in a.shape:
        raise BlindSRError(
            f"array of shape {a.shape} is not an image: expected HxW or HxWxC with C in 1, 2, 3, 4"
        )
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    if a.dtype == np.uint8:
        depth, scale = 8, 255.0
    elif a.dtype == np.uint16:
        depth, scale = 16, 65535.0
    elif np.issubdtype(a.dtype, np.floating):
        if not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
            raise BlindSRError("float image array must hold finite values in [0, 1]")
        depth, scale = 8, 1.0
    else:
        raise BlindSRError(f"image arrays must be uint8, uint16 or float in [0, 1], got {a.dtype}")
    x = _to_tensor(a, scale)
    if a.shape[2] in (2, 4):
        return ImageData(x[:, :-1].contiguous(), x[:, -1:].contiguous(), depth)
    return ImageData(x, None, depth)


def to_numpy(image: ImageData, floating: bool = False) -> np.ndarray:
    """HxWxC (HxW: gray, no alpha) uint8 or uint16 per ``bit_depth``, or float32 in [0, 1]
    without rounding to levels with ``floating``; alpha as the last channel."""
    _check_image_data(image, "to_numpy")
    if floating:
        x = image.color if image.alpha is None else torch.cat([image.color, image.alpha], dim=1)
        a = x[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    else:
        a = _quantize(image.color, image.alpha, image.bit_depth)
    return a[..., 0] if a.shape[-1] == 1 else a


def to_pil(image: ImageData) -> Image.Image:
    """A PIL image: L, LA, RGB or RGBA at 8 bits, or I;16 for a 16-bit gray one without alpha
    (PIL has no other 16-bit modes)."""
    _check_image_data(image, "to_pil")
    if image.bit_depth == 16 and image.gray and image.alpha is None:
        im = Image.fromarray(_quantize(image.color, None, 16)[..., 0])  # uint16: I;16
    else:
        im = _pil_from_array(_quantize(image.color, image.alpha, 8))
    if profile_fits(image.icc_profile, image.color.shape[1]):
        im.info["icc_profile"] = image.icc_profile
    return im


def _check_image_data(image: Any, who: str) -> None:
    if not isinstance(image, ImageData):
        raise BlindSRError(f"{who} takes a blindsr.io.ImageData (see to_image_data), got "
                           f"{type(image).__name__}")


# ---------------------------------------------------------------------------------------- inputs


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Files, folders (non-recursive, sorted, image extensions only, hidden files skipped) and glob
    patterns -> (image paths without duplicates, one-line errors for inputs that gave nothing)."""
    found: list[Path] = []
    errors: list[str] = []
    for text in inputs:
        p = Path(text)
        if p.is_dir():
            try:
                files = sorted(q for q in p.iterdir() if is_image_file(q))
            except OSError as exc:
                files = []
                errors.append(f"{text}: cannot list folder: {exc.strerror or exc}")
            else:
                if not files:
                    errors.append(f"{text}: folder has no {'/'.join(READ_EXTENSIONS)} images")
        elif p.is_file():
            files = [p]
        elif any(ch in text for ch in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            files = [Path(m) for m in matches if is_image_file(Path(m))]
            if not files:
                errors.append(f"{text}: no image files match this pattern")
        else:
            files = []
            errors.append(f"{text}: no such file or folder")
        found.extend(files)
    return _unique(found), errors


def is_image_file(p: Path) -> bool:
    """A visible file with an extension :func:`read_image` reads."""
    return p.suffix.lower() in READ_EXTENSIONS and not p.name.startswith(".") and p.is_file()


def input_key(path: Path) -> str:
    """What makes two input paths one input: the same name in the same (resolved) folder; a
    symlink to a file is an input of its own."""
    return os.path.normcase(path.parent.resolve() / path.name)


def _unique(paths: list[Path]) -> list[Path]:
    """Without repeats of one path (a file named twice, or by a folder and a glob); a symlink
    is another input, with its own output name."""
    seen: set[str] = set()
    out = []
    for p in paths:
        key = input_key(p)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out
