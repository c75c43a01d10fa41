"""Tests for blindsr.io: formats x modes round trips, 16-bit precision, EXIF, bad input, inputs."""

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile, ImageOps

from blindsr.errors import BlindSRError
from blindsr.io import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    ImageData,
    expand_inputs,
    read_image,
    to_image_data,
    to_numpy,
    to_pil,
    write_image,
)

H, W = 7, 5  # non-square and odd, so transposes and flips cannot pass by accident
CHANNELS = {"gray": 1, "gray_alpha": 2, "rgb": 3, "rgba": 4}


def rand_array(c: int, depth: int, seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = np.uint8 if depth == 8 else np.uint16
    a = rng.integers(0, 1 << depth, (h, w, c), dtype=dtype)
    a[0, 0], a[-1, -1] = 0, (1 << depth) - 1  # both extremes present
    return a[..., 0] if c == 1 else a


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def assert_one_line_error(excinfo: pytest.ExceptionInfo, name: str) -> None:
    msg = str(excinfo.value)
    assert name in msg, msg
    assert "\n" not in msg


# ------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize("mode", list(CHANNELS))
@pytest.mark.parametrize("ext", [".png", ".tif", ".tiff"])
def test_lossless_roundtrip_png_tiff(tmp_path, ext, mode, depth):
    arr = rand_array(CHANNELS[mode], depth)
    path = write_image(tmp_path / f"img{ext}", to_image_data(arr))
    back = read_image(path)
    expected = arr
    if ext != ".png" and mode == "gray_alpha" and depth == 16:  # documented: stored as RGBA
        expected = arr[..., [0, 0, 0, 1]]
    assert back.bit_depth == depth
    assert back.path == path
    assert back.gray == (expected.ndim == 2 or expected.shape[-1] <= 2)
    assert (back.alpha is not None) == (mode in ("gray_alpha", "rgba"))
    assert back.color.dtype == torch.float32
    out = to_numpy(back)
    assert out.dtype == arr.dtype
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("mode", ["rgb", "rgba", "gray_alpha"])
@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_files_are_valid_for_another_decoder(tmp_path, ext, mode):
    """Pillow's own decoder (which keeps the high byte) must see the same image."""
    arr = rand_array(CHANNELS[mode], 16, seed=3)
    path = write_image(tmp_path / f"img{ext}", to_image_data(arr))
    seen = np.asarray(Image.open(path))
    hi = (arr >> 8).astype(np.uint8)
    if mode == "gray_alpha":  # Pillow opens 16-bit gray+alpha as RGBA
        hi = hi[..., [0, 0, 0, 1]]
    np.testing.assert_array_equal(seen, hi)


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("c", [1, 3])
def test_every_16bit_level_survives_exactly(tmp_path, ext, c):
    levels = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    arr = np.stack([np.roll(levels, k) for k in range(c)], axis=-1) if c == 3 else levels
    back = read_image(write_image(tmp_path / f"all{ext}", to_image_data(arr)))
    np.testing.assert_array_equal(to_numpy(back), arr)
    # the tensor holds level / 65535 (float32 close), not an 8-bit approximation
    expected = torch.from_numpy(arr.astype(np.float64) / 65535).float()
    got = back.color[0].permute(1, 2, 0).squeeze(-1)
    assert torch.allclose(got, expected, atol=1e-7, rtol=0)


def test_webp_lossless_at_quality_100(tmp_path):
    for c in (3, 4):
        arr = rand_array(c, 8, seed=c)
        back = read_image(write_image(tmp_path / f"x{c}.webp", to_image_data(arr), quality=100))
        np.testing.assert_array_equal(to_numpy(back), arr)
    gray = rand_array(1, 8)
    back = read_image(write_image(tmp_path / "g.webp", to_image_data(gray), quality=100))
    np.testing.assert_array_equal(to_numpy(back), np.stack([gray] * 3, -1))  # WebP has no gray


def test_bmp_is_lossless_and_keeps_gray(tmp_path):
    for c in (1, 3):
        arr = rand_array(c, 8, seed=c)
        back = read_image(write_image(tmp_path / f"x{c}.bmp", to_image_data(arr)))
        assert back.gray == (c == 1) and back.bit_depth == 8
        np.testing.assert_array_equal(to_numpy(back), arr)


@pytest.mark.parametrize("ext", [".jpg", ".jpeg", ".webp"])
@pytest.mark.parametrize("c", [1, 3])
def test_lossy_formats_are_close(tmp_path, ext, c):
    y, x = np.mgrid[0:32, 0:48]
    smooth = np.stack([x * 5, y * 7, (x + y) * 3], -1).astype(np.uint8)[..., :c]
    smooth = smooth[..., 0] if c == 1 else smooth
    back = read_image(write_image(tmp_path / f"s{ext}", to_image_data(smooth), quality=95))
    out = to_numpy(back).astype(int)
    if ext == ".webp" and c == 1:
        out = out[..., 0]
    assert back.gray == (c == 1 and ext != ".webp")
    assert np.abs(out - smooth).mean() < 2.0


@pytest.mark.parametrize("ext", [".jpg", ".bmp"])
def test_alpha_is_composited_onto_white_without_alpha_channel(tmp_path, ext):
    arr = np.zeros((8, 8, 4), np.uint8)
    arr[..., 0] = 200  # red-ish colour everywhere
    arr[:, :4, 3] = 255  # left half opaque, right half fully transparent
    back = read_image(write_image(tmp_path / f"a{ext}", to_image_data(arr), quality=100))
    assert back.alpha is None
    out = to_numpy(back).astype(int)
    tol = 0 if ext == ".bmp" else 3
    assert np.abs(out[:, 5:] - 255).max() <= tol  # transparent -> white, not black
    assert np.abs(out[:, :3] - [200, 0, 0]).max() <= tol


@pytest.mark.parametrize("ext", [".jpg", ".bmp", ".webp"])
def test_16bit_into_8bit_only_formats(tmp_path, ext):
    arr = rand_array(3, 8).astype(np.uint16) * 257  # exactly representable in 8 bits
    back = read_image(write_image(tmp_path / f"d{ext}", to_image_data(arr), quality=100))
    assert back.bit_depth == 8
    tol = 0 if ext == ".bmp" else 40  # random pixels are JPEG's worst case; only depth matters
    assert np.abs(to_numpy(back).astype(int) - (arr // 257)).max() <= tol


def test_write_rounds_and_clamps(tmp_path):
    color = torch.tensor([-0.5, 0.0, 0.2 / 255, 0.6 / 255, 1.0, 1.5, float("nan")])
    img = ImageData(color.view(1, 1, 1, 7), None, 8)
    np.testing.assert_array_equal(to_numpy(img), [[0, 0, 0, 1, 255, 255, 0]])
    back = read_image(write_image(tmp_path / "r.png", img))
    np.testing.assert_array_equal(to_numpy(back), [[0, 0, 0, 1, 255, 255, 0]])


def test_write_accepts_other_float_dtypes(tmp_path):
    arr = rand_array(3, 8)
    img = to_image_data(arr)
    for dtype in (torch.float16, torch.float64):
        cast = ImageData(img.color.to(dtype), None, 8)
        back = read_image(write_image(tmp_path / "f.png", cast))
        np.testing.assert_array_equal(to_numpy(back), arr)


# ------------------------------------------------------------------------ palettes, 1-bit, CMYK


def test_palette_png_with_trns_gives_alpha(tmp_path):
    idx = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    im = Image.fromarray(idx, mode="L").convert("P")
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    im.info["transparency"] = bytes([0, 128, 255])  # per-index alpha (tRNS)
    im.save(tmp_path / "p.png", transparency=bytes([0, 128, 255]))
    back = read_image(tmp_path / "p.png")
    assert back.bit_depth == 8 and not back.gray
    out = to_numpy(back)
    np.testing.assert_array_equal(out[..., 3], [[0, 128, 255], [255, 128, 0]])
    np.testing.assert_array_equal(out[0, 1, :3], [0, 255, 0])


def test_palette_png_without_trns_is_rgb(tmp_path):
    im = Image.fromarray(np.array([[0, 1]], np.uint8), mode="L").convert("P")
    im.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    im.save(tmp_path / "p.png")
    back = read_image(tmp_path / "p.png")
    assert back.alpha is None
    np.testing.assert_array_equal(to_numpy(back), [[[10, 20, 30], [40, 50, 60]]])


def test_palette_single_transparent_index(tmp_path):
    im = Image.fromarray(np.array([[0, 1, 1]], np.uint8), mode="L").convert("P")
    im.putpalette([9, 9, 9, 7, 7, 7] + [0] * 762)
    im.save(tmp_path / "p.png", transparency=1)
    np.testing.assert_array_equal(to_numpy(read_image(tmp_path / "p.png"))[..., 3], [[255, 0, 0]])


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif"])
def test_one_bit_images(tmp_path, ext):
    bits = np.array([[1, 0, 1], [0, 0, 1]], bool)
    Image.fromarray(bits).save(tmp_path / f"b{ext}")
    back = read_image(tmp_path / f"b{ext}")
    assert back.gray and back.bit_depth == 8
    np.testing.assert_array_equal(to_numpy(back), bits * 255)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    back = read_image(tmp_path / "c.jpg")
    assert back.color.shape == (1, 3, 16, 16) and back.alpha is None
    assert np.abs(to_numpy(back).astype(int) - [255, 0, 0]).max() <= 3


def test_rgb_png_with_colour_key_gives_alpha(tmp_path):
    arr = np.array([[[1, 2, 3], [4, 5, 6]]], np.uint8)
    Image.fromarray(arr).save(tmp_path / "k.png", transparency=(1, 2, 3))
    np.testing.assert_array_equal(to_numpy(read_image(tmp_path / "k.png"))[..., 3], [[0, 255]])


def test_16bit_colour_key_gives_alpha(tmp_path):
    gray = np.array([[7, 8, 7, 1000]], np.uint16)
    Image.fromarray(gray).save(tmp_path / "g.png", transparency=7)
    back = read_image(tmp_path / "g.png")
    assert back.bit_depth == 16 and back.gray
    np.testing.assert_array_equal(to_numpy(back)[..., 1], [[0, 65535, 0, 65535]])
    rgb = np.array([[[1, 2, 3], [1, 2, 4], [1, 2, 3]]], np.uint16)
    data = write_image(tmp_path / "c.png", to_image_data(rgb)).read_bytes()
    trns = png_chunk(b"tRNS", struct.pack(">3H", 1, 2, 3))
    (tmp_path / "k.png").write_bytes(data[:33] + trns + data[33:])  # right after IHDR
    out = to_numpy(read_image(tmp_path / "k.png"))
    np.testing.assert_array_equal(out[..., 3], [[0, 65535, 0]])
    np.testing.assert_array_equal(out[..., :3], rgb)


# -------------------------------------------------------------------------------- EXIF orientation


def stored_with_orientation(path: Path, display: np.ndarray, orientation: int) -> None:
    """Store ``display`` so that a viewer honouring ``orientation`` shows it (the inverse op)."""
    inverse = {
        1: None,
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_90,  # shown rotated 90 degrees clockwise
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270,
    }[orientation]
    im = Image.fromarray(display)
    stored = im if inverse is None else im.transpose(inverse)
    exif = Image.Exif()
    exif[0x0112] = orientation
    kwargs = {"quality": 100, "subsampling": 0} if path.suffix == ".jpg" else {}
    stored.save(path, exif=exif, **kwargs)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_png_exact(tmp_path, orientation):
    display = rand_array(3, 8, seed=orientation)
    stored_with_orientation(tmp_path / "o.png", display, orientation)
    np.testing.assert_array_equal(to_numpy(read_image(tmp_path / "o.png")), display)
    # agrees with Pillow's own interpretation
    oracle = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")))
    np.testing.assert_array_equal(oracle, display)


@pytest.mark.parametrize("orientation", [2, 3, 5, 6, 8])
def test_exif_orientation_jpeg(tmp_path, orientation):
    blocks = np.array([[0, 60, 120], [180, 240, 30]], np.uint8)  # 8x8 flat blocks: ~exact JPEG
    display = np.kron(blocks, np.ones((8, 8), np.uint8))
    display = np.stack([display, 255 - display, display // 2], -1)
    stored_with_orientation(tmp_path / "o.jpg", display, orientation)
    back = read_image(tmp_path / "o.jpg")
    assert (back.height, back.width) == (16, 24)
    assert np.abs(to_numpy(back).astype(int) - display).max() <= 4


def test_exif_orientation_explicit_rotation(tmp_path):
    """Orientation 6: stored rows are shown rotated 90 degrees clockwise; 8: anticlockwise."""
    stored = np.array([[1, 2, 3], [4, 5, 6]], np.uint8) * 40
    for orientation, shown in ((6, [[4, 1], [5, 2], [6, 3]]), (8, [[3, 6], [2, 5], [1, 4]])):
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(stored).save(tmp_path / "s.png", exif=exif)
        np.testing.assert_array_equal(
            to_numpy(read_image(tmp_path / "s.png")), np.array(shown) * 40
        )


def test_exif_orientation_applies_to_16bit_and_alpha(tmp_path):
    gray16 = rand_array(1, 16)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(gray16).save(tmp_path / "g.png", exif=exif)
    back = read_image(tmp_path / "g.png")
    assert back.bit_depth == 16
    np.testing.assert_array_equal(to_numpy(back), np.rot90(gray16, -1))
    rgba = rand_array(4, 8)
    Image.fromarray(rgba).save(tmp_path / "a.png", exif=exif)
    np.testing.assert_array_equal(to_numpy(read_image(tmp_path / "a.png")), np.rot90(rgba, -1))


# ---------------------------------------------------------------------------------- bad input


def test_load_truncated_images_stays_off():
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("notes.png", b"this is not an image at all", "not a readable"),
        ("empty.jpg", b"", "empty"),
    ],
)
def test_not_an_image(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(BlindSRError, match=reason) as e:
        read_image(tmp_path / name)
    assert_one_line_error(e, name)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif", ".webp"])
def test_truncated_file_is_an_error(tmp_path, ext):
    arr = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = tmp_path / f"full{ext}"
    Image.fromarray(arr).save(full)
    data = full.read_bytes()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(BlindSRError) as e:
        read_image(cut)
    assert_one_line_error(e, f"cut{ext}")


@pytest.mark.parametrize("mode", ["rgb", "gray_alpha"])
def test_truncated_16bit_png_is_an_error(tmp_path, mode):
    arr = rand_array(CHANNELS[mode], 16, h=64, w=64)
    data = write_image(tmp_path / "full.png", to_image_data(arr)).read_bytes()
    (tmp_path / "cut16.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(BlindSRError) as e:
        read_image(tmp_path / "cut16.png")
    assert_one_line_error(e, "cut16.png")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(BlindSRError, match="no such file") as e:
        read_image(tmp_path / "nope.png")
    assert_one_line_error(e, "nope.png")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(BlindSRError, match="folder") as e:
        read_image(tmp_path / "folder.png")
    assert_one_line_error(e, "folder.png")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file(tmp_path):
    path = tmp_path / "secret.png"
    Image.new("RGB", (2, 2)).save(path)
    path.chmod(0)
    try:
        with pytest.raises(BlindSRError) as e:
            read_image(path)
        assert_one_line_error(e, "secret.png")
    finally:
        path.chmod(0o644)


def test_unsupported_mode(tmp_path):
    Image.new("F", (3, 3), 0.5).save(tmp_path / "float.tif")
    with pytest.raises(BlindSRError, match="unsupported") as e:
        read_image(tmp_path / "float.tif")
    assert_one_line_error(e, "float.tif")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size but holds almost no pixel data: decoding it would fail."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    parts = [png_chunk(b"IHDR", ihdr), png_chunk(b"IDAT", idat), png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(parts)


def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    monkeypatch.delenv("BLINDSR_MAX_PIXELS", raising=False)
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(100_000, 100_000))  # 10 G pixels, no data at all
    with pytest.raises(BlindSRError, match="over the limit") as e:
        read_image(path)
    assert_one_line_error(e, "bomb.png")
    path.write_bytes(png_header_only(2000, 1000))
    with pytest.raises(BlindSRError, match="2000x1000 = 2,000,000 pixels"):
        read_image(path, max_pixels=1_999_999)
    with pytest.raises(BlindSRError, match="truncated|corrupt|broken"):  # decoding would fail
        read_image(path, max_pixels=0)
    msg = str(e.value)
    assert f"{DEFAULT_MAX_PIXELS:,}" in msg and "--max-pixels" in msg
    assert "BLINDSR_MAX_PIXELS" in msg


def test_pixel_limit_argument_and_env(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    Image.new("RGB", (10, 10)).save(path)
    with pytest.raises(BlindSRError, match="over the limit of 99"):
        read_image(path, max_pixels=99)
    assert read_image(path, max_pixels=100).width == 10
    monkeypatch.setenv("BLINDSR_MAX_PIXELS", "50")
    with pytest.raises(BlindSRError, match="limit of 50"):
        read_image(path)
    assert read_image(path, max_pixels=0).height == 10  # 0: no limit; the argument wins
    monkeypatch.setenv("BLINDSR_MAX_PIXELS", "lots")
    with pytest.raises(BlindSRError, match="BLINDSR_MAX_PIXELS"):
        read_image(path)


def test_limit_above_pillows_own_is_honoured(tmp_path, monkeypatch):
    """Raising our limit must not be blocked by Pillow's guard (restored afterwards)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    path = tmp_path / "p.png"
    Image.new("L", (8, 8)).save(path)
    assert read_image(path, max_pixels=1000).width == 8
    assert Image.MAX_IMAGE_PIXELS == 10


# -------------------------------------------------------------------------------------- writing


def test_write_creates_parents_and_leaves_no_temp_files(tmp_path):
    img = to_image_data(rand_array(3, 8))
    out = write_image(tmp_path / "a" / "b" / "c.png", img)
    assert out.is_file()
    write_image(out, img)  # overwrite in place
    assert [p.name for p in out.parent.iterdir()] == ["c.png"]


def test_interrupted_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "keep.png"
    write_image(path, to_image_data(rand_array(3, 8, seed=1)))
    before = path.read_bytes()

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(BlindSRError, match="No space left") as e:
        write_image(path, to_image_data(rand_array(3, 8, seed=2)))
    assert_one_line_error(e, "keep.png")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_write_errors(tmp_path):
    img = to_image_data(rand_array(3, 8))
    with pytest.raises(BlindSRError, match="unknown extension") as e:
        write_image(tmp_path / "x.gif", img)
    assert_one_line_error(e, "x.gif")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BlindSRError) as e:
        write_image(tmp_path / "file" / "y.png", img)  # parent is a file
    assert_one_line_error(e, "y.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(BlindSRError) as e:
        write_image(tmp_path / "dir.png", img)
    assert_one_line_error(e, "dir.png")
    with pytest.raises(BlindSRError, match="quality"):
        write_image(tmp_path / "q.jpg", img, quality=0)
    with pytest.raises(BlindSRError, match="ImageData"):
        write_image(tmp_path / "t.png", rand_array(3, 8))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anything")
def test_unwritable_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(BlindSRError) as e:
            write_image(folder / "z.png", to_image_data(rand_array(3, 8)))
        assert_one_line_error(e, "z.png")
    finally:
        folder.chmod(0o700)


# -------------------------------------------------------------------------------- conversions


@pytest.mark.parametrize("c", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64, np.float16])
def test_to_image_data_from_arrays(dtype, c):
    rng = np.random.default_rng(c)
    if np.issubdtype(dtype, np.floating):
        arr = rng.random((H, W, c)).astype(dtype)
        values, depth = arr.astype(np.float64), 8
    else:
        arr = rng.integers(0, np.iinfo(dtype).max + 1, (H, W, c), dtype=dtype)
        values, depth = arr / np.iinfo(dtype).max, 8 * np.dtype(dtype).itemsize
    img = to_image_data(arr)
    assert img.bit_depth == depth
    assert img.gray == (c <= 2) and (img.alpha is not None) == (c in (2, 4))
    assert img.color.dtype == torch.float32 and img.color.shape == (1, c - (c in (2, 4)), H, W)
    got = img.color[0].permute(1, 2, 0).double().numpy()
    np.testing.assert_allclose(got, values[..., : got.shape[-1]], atol=1e-6)
    if img.alpha is not None:
        np.testing.assert_allclose(img.alpha[0, 0].double().numpy(), values[..., -1], atol=1e-6)


def test_to_image_data_2d_and_bool():
    img = to_image_data(np.array([[True, False]]))
    assert img.gray and img.bit_depth == 8
    assert img.color.flatten().tolist() == [1.0, 0.0]
    assert to_image_data(np.zeros((3, 4), np.uint16)).color.shape == (1, 1, 3, 4)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((4, 4, 5), np.uint8), "shape"),
        (np.zeros((2, 4, 4, 3), np.uint8), "shape"),
        (np.zeros((0, 4), np.uint8), "shape"),
        (np.zeros((4, 4), np.int32), "int32"),
        (np.full((4, 4), 1.5, np.float32), r"\[0, 1\]"),
        (np.full((4, 4), np.nan, np.float32), r"\[0, 1\]"),
        (torch.zeros(1, 3, 4, 4), "Tensor"),
        (42, "int"),
    ],
)
def test_to_image_data_rejects(bad, match):
    with pytest.raises(BlindSRError, match=match):
        to_image_data(bad)


@pytest.mark.parametrize(
    "mode, channels, alpha, depth",
    [
        ("1", 1, False, 8),
        ("L", 1, False, 8),
        ("LA", 1, True, 8),
        ("RGB", 3, False, 8),
        ("RGBA", 3, True, 8),
        ("P", 3, False, 8),
        ("I;16", 1, False, 16),
        ("CMYK", 3, False, 8),
    ],
)
def test_to_image_data_from_pil(mode, channels, alpha, depth):
    im = Image.new(mode, (W, H))
    img = to_image_data(im)
    assert img.color.shape == (1, channels, H, W)
    assert (img.alpha is not None) == alpha
    assert img.bit_depth == depth


def test_to_image_data_pil_values_and_passthrough(tmp_path):
    arr = rand_array(4, 8)
    img = to_image_data(Image.fromarray(arr))
    np.testing.assert_array_equal(to_numpy(img), arr)
    assert to_image_data(img) is img
    write_image(tmp_path / "p.png", img)
    np.testing.assert_array_equal(to_numpy(to_image_data(str(tmp_path / "p.png"))), arr)
    np.testing.assert_array_equal(to_numpy(to_image_data(tmp_path / "p.png")), arr)


def test_to_numpy_and_to_pil_shapes_and_dtypes():
    for c, shape, mode in [
        (1, (H, W), "L"),
        (2, (H, W, 2), "LA"),
        (3, (H, W, 3), "RGB"),
        (4, (H, W, 4), "RGBA"),
    ]:
        for depth in (8, 16):
            arr = rand_array(c, depth)
            out = to_numpy(to_image_data(arr))
            assert out.shape == shape and out.dtype == arr.dtype
            np.testing.assert_array_equal(out, arr)
        pil = to_pil(to_image_data(rand_array(c, 16)))
        if c == 1:  # 16-bit gray keeps its depth (I;16); PIL has no other 16-bit modes
            assert pil.mode == "I;16" and pil.size == (W, H)
            np.testing.assert_array_equal(np.asarray(pil), rand_array(c, 16))
            continue
        assert pil.mode == mode and pil.size == (W, H)
        np.testing.assert_array_equal(np.asarray(pil), np.round(rand_array(c, 16) / 257))
        floats = to_numpy(to_image_data(rand_array(c, 16)), floating=True)
        assert floats.dtype == np.float32 and floats.shape == shape
        np.testing.assert_allclose(floats, rand_array(c, 16) / 65535, atol=1e-6)


def test_image_data_validation_and_properties():
    img = ImageData(torch.zeros(1, 3, 4, 6), torch.ones(1, 1, 4, 6), 16)
    assert (img.height, img.width, img.gray) == (4, 6, False)
    for color, alpha, depth, message in [
        (torch.zeros(3, 4, 6), None, 8, "color must be a"),
        (torch.zeros(1, 2, 4, 6), None, 8, "color must be a"),
        (np.zeros((1, 3, 4, 6)), None, 8, "got ndarray"),
        (torch.zeros(1, 3, 4, 6, dtype=torch.uint8), None, 8, "got torch.uint8"),
        (torch.zeros(1, 1, 4, 6), torch.zeros(1, 1, 4, 5), 8, "alpha must be"),
        (torch.zeros(1, 1, 4, 6), None, 12, "bit_depth must be 8 or 16"),
    ]:
        with pytest.raises(BlindSRError, match=message):
            ImageData(color, alpha, depth)


# ------------------------------------------------------------------------------- expand_inputs


def test_expand_inputs(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ["b.png", "a.JPG", "c.webp", "notes.txt", ".hidden.png", "d.tiff", "e.gif"]:
        (folder / name).write_bytes(b"x")
    (folder / "sub").mkdir()
    (folder / "sub" / "deep.png").write_bytes(b"x")
    single = tmp_path / "single.bmp"
    single.write_bytes(b"x")
    odd = tmp_path / "odd.dat"  # named explicitly: kept, read_image will judge it
    odd.write_bytes(b"x")
    empty = tmp_path / "empty"
    empty.mkdir()
    inputs = [
        str(folder),
        str(single),
        str(tmp_path / "photos" / "*.png"),  # b.png again: not duplicated
        str(odd),
        str(tmp_path / "missing.png"),
        str(tmp_path / "*.gif"),
        str(empty),
    ]
    files, errors = expand_inputs(inputs)
    assert [p.name for p in files] == [
        "a.JPG",
        "b.png",
        "c.webp",
        "d.tiff",
        "e.gif",  # read-only formats are found in folders and globs as well
        "single.bmp",
        "odd.dat",
    ]
    assert len(errors) == 3
    assert "missing.png" in errors[0] and "no such file" in errors[0]
    assert "*.gif" in errors[1] and "empty" in errors[2]
    assert expand_inputs([str(folder / "*.gif")]) == ([folder / "e.gif"], [])
    assert all("\n" not in e for e in errors)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_a_symlink_is_an_input_of_its_own(tmp_path):
    base = tmp_path / "base.png"
    base.write_bytes(b"x")
    (tmp_path / "link.png").symlink_to(base)
    files, errors = expand_inputs([str(base), str(tmp_path / "link.png"), str(tmp_path)])
    assert [p.name for p in files] == ["base.png", "link.png"] and errors == []
    (tmp_path.parent / f"{tmp_path.name}_alias").symlink_to(tmp_path)  # a folder link: same files
    files, errors = expand_inputs([str(tmp_path), str(tmp_path.parent / f"{tmp_path.name}_alias")])
    assert [p.name for p in files] == ["base.png", "link.png"] and errors == []


def test_expand_inputs_recursive_glob(tmp_path):
    (tmp_path / "x" / "y").mkdir(parents=True)
    (tmp_path / "x" / "y" / "z.png").write_bytes(b"x")
    files, errors = expand_inputs([str(tmp_path / "**" / "*.png")])
    assert [p.name for p in files] == ["z.png"] and errors == []


def test_extensions_constant():
    assert set(IMAGE_EXTENSIONS) == {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def test_large_png_metadata_does_not_stop_the_pixels(tmp_path):
    from PIL import PngImagePlugin

    from blindsr.io import _reason

    info = PngImagePlugin.PngInfo()
    info.add_text("XML:com.adobe.xmp", "x" * (20 * 2**20), zip=True)  # 20 MB of XMP
    pixels = np.full((8, 6, 3), 100, np.uint8)
    Image.fromarray(pixels).save(tmp_path / "xmp.png", pnginfo=info)
    limits = (PngImagePlugin.MAX_TEXT_CHUNK, PngImagePlugin.MAX_TEXT_MEMORY)
    assert np.array_equal(to_numpy(read_image(tmp_path / "xmp.png")), pixels)
    assert (PngImagePlugin.MAX_TEXT_CHUNK, PngImagePlugin.MAX_TEXT_MEMORY) == limits  # restored
    bomb = ValueError("Decompressed data too large for PngImagePlugin.MAX_TEXT_CHUNK")
    assert _reason(bomb).startswith("its text metadata (tEXt/zTXt/iTXt chunks) is too large")


# ----------------------------------------------------------------------- colour profiles, layouts


def fake_profile(space: bytes) -> bytes:
    """An ICC-shaped byte string: what the reader checks is the colour space at bytes 16-20."""
    return b"\0" * 16 + space + bytes(range(108)) + b"tail"


@pytest.mark.parametrize(("ext", "depth"), [(".png", 8), (".png", 16), (".jpg", 8),
                                            (".webp", 8), (".tif", 8), (".tif", 16)])
@pytest.mark.parametrize("c", [1, 3])
def test_an_embedded_colour_profile_is_written_back(tmp_path, ext, depth, c):
    if ext == ".webp" and c == 1:
        pytest.skip("WebP stores gray as RGB")
    space = b"RGB " if c == 3 else b"GRAY"
    src = tmp_path / "src.png"
    Image.fromarray(rand_array(c, 8)).save(src, icc_profile=fake_profile(space))
    image = read_image(src)
    assert image.icc_profile == fake_profile(space)
    image.bit_depth = depth
    write_image(tmp_path / f"out{ext}", image)
    with Image.open(tmp_path / f"out{ext}") as back:
        assert back.info.get("icc_profile") == fake_profile(space)
    assert read_image(tmp_path / f"out{ext}").icc_profile == fake_profile(space)
    assert to_pil(image).info["icc_profile"] == fake_profile(space)
    assert to_image_data(to_pil(image)).icc_profile == fake_profile(space)


def test_a_profile_that_does_not_fit_the_pixels_is_dropped(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg",
                                                     icc_profile=fake_profile(b"CMYK"))
    assert read_image(tmp_path / "c.jpg").icc_profile is None  # now RGB: the profile is wrong
    image = ImageData(torch.rand(1, 1, 4, 4), None, 8, icc_profile=fake_profile(b"RGB "))
    write_image(tmp_path / "gray.png", image)
    with Image.open(tmp_path / "gray.png") as back:
        assert "icc_profile" not in back.info
    write_image(tmp_path / "x.bmp", ImageData(torch.rand(1, 3, 4, 4), None, 8,
                                              icc_profile=fake_profile(b"RGB ")))
    assert read_image(tmp_path / "x.bmp").icc_profile is None


def planar_tiff16(path: Path, a: np.ndarray) -> None:
    """A 16-bit RGB TIFF with PlanarConfiguration 2 (one strip per colour plane)."""
    h, w, c = a.shape
    planes = [np.ascontiguousarray(a[..., i]).astype("<u2").tobytes() for i in range(c)]
    offsets = [8 + sum(map(len, planes[:i])) for i in range(c)]
    data = b"".join(planes)
    entries = [(256, 3, [w]), (257, 3, [h]), (258, 3, [16] * c), (259, 3, [1]), (262, 3, [2]),
               (273, 4, offsets), (277, 3, [c]), (278, 3, [h]), (279, 4, list(map(len, planes))),
               (284, 3, [2])]
    ifd_at = 8 + len(data)
    extra_at = ifd_at + 2 + 12 * len(entries) + 4
    ifd, extra = struct.pack("<H", len(entries)), b""
    for tag, kind, values in entries:
        packed = struct.pack(f"<{len(values)}{'H' if kind == 3 else 'I'}", *values)
        if len(packed) <= 4:
            field = packed.ljust(4, b"\0")
        else:
            field, extra = struct.pack("<I", extra_at + len(extra)), extra + packed
        ifd += struct.pack("<HHI", tag, kind, len(values)) + field
    path.write_bytes(b"II*\0" + struct.pack("<I", ifd_at) + data + ifd + b"\0" * 4 + extra)


def test_16bit_planar_tiff_is_refused_not_misread(tmp_path):
    planar_tiff16(tmp_path / "planar.tif", rand_array(3, 16))
    with pytest.raises(BlindSRError, match="separate colour planes") as err:
        read_image(tmp_path / "planar.tif")
    assert_one_line_error(err, "planar.tif")


def test_only_the_first_frame_of_an_animation_is_used_and_said(tmp_path):
    frames = [Image.new("RGB", (6, 4), colour) for colour in ("red", "blue", "green")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.warns(UserWarning, match="animation of 3 frames; only the first is used"):
        image = read_image(tmp_path / "anim.gif")
    assert to_numpy(image)[0, 0].tolist() == [255, 0, 0]


def test_a_cut_animation_and_a_camera_mpo_read_without_a_false_warning(tmp_path, recwarn):
    frames = [Image.fromarray(rand_array(3, 8, seed=k, h=40, w=40)) for k in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    data = (tmp_path / "anim.gif").read_bytes()
    first = read_image(tmp_path / "anim.gif")
    recwarn.clear()
    (tmp_path / "cut.gif").write_bytes(data[: len(data) * 2 // 3])  # the first frame is whole
    assert torch.equal(read_image(tmp_path / "cut.gif").color, first.color)
    frames[0].save(tmp_path / "cam.jpg", format="MPO", save_all=True, append_images=frames[1:2])
    assert read_image(tmp_path / "cam.jpg").width == 40
    assert not [w for w in recwarn if "animation" in str(w.message)]


def test_16bit_gray_alpha_tiff_carries_no_gray_profile_on_its_rgba(tmp_path):
    image = ImageData(torch.rand(1, 1, 4, 5), torch.rand(1, 1, 4, 5), 16,
                      icc_profile=fake_profile(b"GRAY"))
    write_image(tmp_path / "ga.tif", image)
    with Image.open(tmp_path / "ga.tif") as back:
        assert back.mode == "RGBA" and "icc_profile" not in back.info


def test_big_endian_arrays_are_read_as_their_values():
    a = rand_array(3, 16)
    assert np.array_equal(to_numpy(to_image_data(a.astype(">u2"))), a)


def test_a_leading_tilde_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    image = ImageData(torch.rand(1, 3, 4, 5), None, 8)
    written = write_image("~/pics/a.png", image)
    assert written == tmp_path / "pics" / "a.png" and written.is_file()
    assert not (tmp_path / "~").exists()
    assert read_image("~/pics/a.png").width == 5
