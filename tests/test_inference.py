import numpy as np
import pytest
import torch
from PIL import Image

from blindsr import archs, io
from blindsr.errors import BlindSRError
from blindsr.inference import Settings, Upscaler, auto_tile, upscale


def tiny(name="srresnet", scale=4):
    torch.manual_seed(0)
    return archs.build(name, num_feat=8, num_block=2, scale=scale).eval()


@pytest.mark.parametrize("name,scale", [("srresnet", 4), ("srresnet", 3), ("rrdbnet", 4),
                                        ("rrdbnet", 2)])
def test_tiled_matches_untiled(name, scale, rand_image):
    model = tiny(name, scale)
    x = rand_image(h=42, w=58)
    whole = Upscaler(model, Settings(tile=1024, channels_last=False)).upscale_tensor(x)
    tiled = Upscaler(model, Settings(tile=16, tile_pad=16, batch=3)).upscale_tensor(x)
    assert whole.shape == (1, 3, 42 * scale, 58 * scale)
    assert (tiled - whole).abs().max() <= 1 / 255


def test_odd_sizes_are_padded_to_the_model_multiple(rand_image):
    model = tiny("rrdbnet", 2)  # pixel-unshuffle needs even sizes
    out = Upscaler(model, Settings(tile=16, tile_pad=4)).upscale_tensor(rand_image(h=21, w=17))
    assert out.shape == (1, 3, 42, 34)


def test_fp16_on_cpu_is_refused_with_advice():
    with pytest.raises(BlindSRError, match="use fp32 .*bf16 runs, but several times slower"):
        Upscaler("bicubic", Settings(dtype="fp16", device="cpu"))


def test_bf16_runs_close_to_fp32(rand_image):
    model = tiny()
    x = rand_image(h=20, w=20)
    fp32 = Upscaler(model, Settings(tile=32)).upscale_tensor(x)
    bf16 = Upscaler(tiny(), Settings(tile=32, dtype="bf16")).upscale_tensor(x)
    assert (fp32 - bf16).abs().mean() < 0.02


class FlakyMemory(torch.nn.Module):
    """Nearest x2 upsampling that runs out of memory on windows larger than 40 pixels."""

    scale = 2

    def forward(self, x):
        if x.shape[-1] > 40:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


def test_out_of_memory_halves_the_tile(rand_image):
    upscaler = Upscaler(FlakyMemory(), Settings(tile=128, tile_pad=4))
    x = rand_image(h=70, w=70)
    out = upscaler.upscale_tensor(x)
    assert upscaler.tile == 32
    torch.testing.assert_close(out, torch.nn.functional.interpolate(x, scale_factor=2))


def test_out_of_memory_at_the_smallest_tile_is_a_clear_error(rand_image):
    class Hopeless(FlakyMemory):
        def forward(self, x):
            raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(BlindSRError, match="out of memory"):
        Upscaler(Hopeless(), Settings(tile=64)).upscale_tensor(rand_image(h=40, w=40))


def test_auto_tile_is_a_bounded_multiple_of_16():
    tile = auto_tile(tiny(), torch.device("cpu"), torch.float32, batch=4)
    assert 16 <= tile <= 1024 and tile % 16 == 0


def test_alpha_is_premultiplied_so_edges_keep_their_colour():
    alpha = torch.zeros(1, 1, 24, 24)
    alpha[..., 6:18, 6:18] = 1
    color = torch.ones(1, 3, 24, 24) * alpha  # white where opaque, black under transparency
    image = io.ImageData(color=color, alpha=alpha, bit_depth=8)
    out = Upscaler("bicubic", Settings(outscale=4)).upscale_image(image)
    visible = out.alpha[0, 0] > 0.05
    assert out.alpha.shape == (1, 1, 96, 96)
    assert visible.sum() > 48 * 48
    assert out.color[0][:, visible].min() > 0.97  # a naive upscale would darken the fringe


@pytest.mark.parametrize("outscale", [None, 3])
def test_a_sharpening_model_leaves_no_dark_fringe_on_transparent_edges(outscale):
    # the shipped blind model sharpens: with alpha upscaled by bicubic instead of the model,
    # alpha stayed > 0 where the model had already taken the colour to 0 (447 of 996 edge pixels
    # below 100/255 in this image), a dark ring on any background
    alpha = torch.zeros(1, 1, 32, 32)
    alpha[..., 8:24, 8:24] = 1
    image = io.ImageData(color=torch.ones(1, 3, 32, 32) * alpha, alpha=alpha, bit_depth=8)
    out = Upscaler("blindsr-x4", Settings(outscale=outscale)).upscale_image(image)
    side = 32 * (outscale or 4)
    assert out.alpha.shape == (1, 1, side, side) and out.color.shape == (1, 3, side, side)
    visible = out.alpha[0, 0] > 0.05
    assert visible.sum() > (side // 2) ** 2
    assert out.color[0][:, visible].min() > 0.9
    on_white = out.color * out.alpha + (1 - out.alpha)
    assert on_white.min() > 0.9


def test_opaque_and_clear_areas_keep_their_alpha_exactly(rand_image):
    color = rand_image(c=3, h=24, w=20)
    up = Upscaler("blindsr-x4", Settings())
    rgb = up.upscale_image(io.ImageData(color=color, alpha=None, bit_depth=8))
    opaque = up.upscale_image(io.ImageData(color=color, alpha=torch.ones(1, 1, 24, 20),
                                           bit_depth=8))
    assert torch.equal(opaque.alpha, torch.ones(1, 1, 96, 80))
    assert torch.equal(opaque.color, rgb.color)  # an opaque RGBA image upscales as RGB does
    clear = up.upscale_image(io.ImageData(color=color, alpha=torch.zeros(1, 1, 24, 20),
                                          bit_depth=8))
    assert torch.equal(clear.alpha, torch.zeros(1, 1, 96, 80))


def test_flat_colour_stays_flat_at_a_fractional_outscale():
    alpha = torch.zeros(1, 1, 33, 33)
    alpha[..., 9:25, 9:25] = 1
    rgb = torch.tensor([0.8, 0.4, 0.2]).view(1, 3, 1, 1)
    image = io.ImageData(color=rgb * alpha, alpha=alpha, bit_depth=8)
    out = Upscaler("bicubic", Settings(outscale=2.5)).upscale_image(image)
    assert out.color.shape[-2:] == out.alpha.shape[-2:] == (83, 83)
    visible = out.alpha[0, 0] > 0.05
    assert (out.color[0][:, visible] - rgb.view(3, 1)).abs().max() < 0.02


def test_gray_in_gray_out_and_outscale(rand_image):
    image = io.ImageData(color=rand_image(c=1, h=16, w=20), alpha=None, bit_depth=16)
    out = Upscaler(tiny(), Settings(outscale=2)).upscale_image(image)
    assert out.color.shape == (1, 1, 32, 40) and out.bit_depth == 16


def test_python_api_keeps_the_input_kind():
    array = (np.random.default_rng(0).random((12, 10, 3)) * 255).astype(np.uint8)
    out = upscale(array, model="bicubic", outscale=2)
    assert isinstance(out, np.ndarray) and out.shape == (24, 20, 3) and out.dtype == np.uint8
    pil = upscale(Image.fromarray(array), model=tiny())
    assert isinstance(pil, Image.Image) and pil.size == (40, 48)


def test_checkpoint_path_as_model(tmp_path, rand_image):
    from blindsr.checkpoint import save_model

    model = tiny()
    path = save_model(model, tmp_path / "m.safetensors")
    x = rand_image(h=12, w=12)
    a = Upscaler(model, Settings(tile=64)).upscale_tensor(x)
    b = Upscaler(str(path), Settings(tile=64)).upscale_tensor(x)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("arch, kwargs", [
    ("srresnet", {"num_in_ch": 1, "num_out_ch": 1, "num_feat": 4, "num_block": 1}),
    ("srvgg", {"num_in_ch": 4, "num_out_ch": 4, "num_feat": 4, "num_conv": 1}),
])
def test_a_model_that_is_not_rgb_is_refused_in_one_line(arch, kwargs, tmp_path, capsys):
    from blindsr.checkpoint import save_model
    from blindsr.cli import main

    path = save_model(archs.build(arch, **kwargs), tmp_path / "m.safetensors")
    with pytest.raises(BlindSRError, match=f"{arch} maps .* channels; upscale and eval run "
                                           "RGB-to-RGB models"):
        Upscaler(path, Settings(device="cpu"))
    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    assert main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "o.png"),
                 "--model", str(path), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RGB-to-RGB" in err[0]


def test_unknown_model_is_a_clear_error():
    with pytest.raises(BlindSRError, match="no such model"):
        Upscaler("does-not-exist.safetensors")


def test_an_output_too_large_for_memory_is_refused_before_any_work(monkeypatch):
    import blindsr.inference as inference

    image = io.ImageData(torch.rand(1, 3, 20, 30), None, 8)
    upscaler = Upscaler("bicubic", Settings(outscale=8))
    calls = []
    tensor_pass = upscaler.upscale_tensor
    monkeypatch.setattr(upscaler, "upscale_tensor", lambda *a, **k: calls.append(1)
                        or tensor_pass(*a, **k))
    needed = inference.BYTES_PER_OUTPUT_PIXEL * 160 * 240
    monkeypatch.setattr(inference, "available_memory", lambda: needed - 1)
    with pytest.raises(BlindSRError, match=r"a 240x160 output needs about .* GiB of memory"):
        upscaler.upscale_image(image)
    assert calls == []
    monkeypatch.setattr(inference, "available_memory", lambda: needed)
    assert upscaler.upscale_image(image).width == 240 and calls == [1]


def test_outscale_is_bounded_and_a_large_scale_is_probed_small(monkeypatch):
    from blindsr.inference import bytes_per_pixel

    with pytest.raises(BlindSRError,
                       match=r"outscale \(--outscale\) must be a number in \(0, 256\]"):
        Upscaler("bicubic", Settings(outscale=1000))
    probes = {}

    def record(scale):
        def hook(module, args, out):
            probes[scale] = args[0].shape[-1]
        return hook

    for outscale in (4, 256):
        upscaler = Upscaler("bicubic", Settings(outscale=outscale))
        upscaler.model.register_forward_hook(record(outscale))
        per_pixel = bytes_per_pixel(upscaler.model, torch.float32, torch.device("cpu"))
        assert per_pixel == pytest.approx(3 * 3 * outscale**2 * 4)  # 3 x its output, fp32
    assert probes == {4: 32, 256: 1}  # a 32x32 probe at x256 would make 800 MB


@pytest.mark.parametrize("settings,message", [
    (dict(tile_pad=-1), "tile_pad"), (dict(batch=-1), "batch"), (dict(batch=0), "batch"),
    (dict(batch=2.5), "batch"), (dict(tile=8), "tile"), (dict(tile=32.5), "tile"),
    (dict(outscale="2"), "outscale"),
])
def test_settings_no_run_can_use_are_refused(settings, message):
    with pytest.raises(BlindSRError, match=f"^{message} \\(--"):
        Upscaler("bicubic", Settings(**settings))


def test_numpy_scalars_are_settings_like_python_numbers():
    image = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    want = upscale(image, model="bicubic", outscale=2.0, tile=16, tile_pad=2, batch=2)
    got = upscale(image, model="bicubic", outscale=np.float32(2.0), tile=np.int64(16),
                  tile_pad=np.int64(2), batch=np.int32(2))
    assert np.array_equal(got, want) and got.shape == (40, 40, 3)
    settings = Settings(tile=np.int64(16), outscale=np.int64(3), blur=np.float32(1.5))
    assert type(settings.tile) is int and type(settings.outscale) is float
    assert type(settings.blur) is float


def test_tensors_come_back_as_tensors_of_the_same_layout():
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (2, 12, 10, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[0, :4, :, 3] = 0  # partly clear: alpha goes through the model too
    nchw = torch.from_numpy(rgba).permute(0, 3, 1, 2).double() / 255
    out = upscale(nchw, model="bicubic")
    assert out.shape == (2, 4, 48, 40) and out.dtype == torch.float64
    for k in range(2):  # each image as its float numpy array would be upscaled
        want = upscale(rgba[k].astype(np.float32) / 255, model="bicubic")
        assert torch.allclose(out[k].permute(1, 2, 0).float(), torch.from_numpy(want), atol=1e-6)
    gray = upscale(nchw[0, :1], model="bicubic")
    assert gray.shape == (1, 48, 40)
    for bad, message in [(torch.zeros(3, 4), "must be \\(C, H, W\\)"),
                         (torch.zeros(5, 4, 4), "C in 1-4"),
                         (torch.zeros(3, 4, 4, dtype=torch.uint8), "floats in \\[0, 1\\]"),
                         (torch.full((3, 4, 4), 2.0), "finite values in \\[0, 1\\]")]:
        with pytest.raises(BlindSRError, match=message):
            upscale(bad, model="bicubic")


def test_an_outscale_below_one_output_pixel_is_one_line():
    image = np.zeros((20, 30, 3), np.uint8)
    with pytest.raises(BlindSRError, match=r"--outscale 1e-09 makes this 30x20 image smaller "
                                           "than one pixel"):
        upscale(image, model="bicubic", outscale=1e-9)


def test_a_model_without_a_scale_attribute_is_measured():
    image = np.zeros((16, 16, 3), np.uint8)
    image[:, 8:] = 255
    out = upscale(image, model=torch.nn.Upsample(scale_factor=2))
    assert out.shape == (32, 32, 3) and out[:, 17:].min() == 255 and out[:, :15].max() == 0


def test_a_model_that_is_not_what_it_says_is_a_clear_error():
    class Liar(torch.nn.Module):
        scale = 2

        def forward(self, x):
            return x

    image = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(BlindSRError, match="made a 16x16 output of a 16x16 input, not x2"):
        upscale(image, model=Liar())
    with pytest.raises(BlindSRError, match="cannot run on a 1x3x8x8 image: .*4 channels"):
        upscale(image, model=torch.nn.Conv2d(4, 3, 3, padding=1))


def test_float_arrays_come_back_as_floats_not_rounded_to_levels():
    image = np.random.default_rng(0).random((12, 10, 3)).astype(np.float32)
    out = upscale(image, model="bicubic")
    assert out.dtype == np.float32 and out.shape == (48, 40, 3)
    assert not np.allclose(out * 255, np.round(out * 255), atol=1e-3)
    assert 0 <= out.min() and out.max() <= 1


def test_devices_by_name_or_as_torch_devices():
    from blindsr.inference import pick_device

    img = np.zeros((8, 8, 3), np.uint8)
    a = upscale(img, model="bicubic", device=torch.device("cpu"))
    assert np.array_equal(a, upscale(img, model="bicubic", device="cpu"))
    assert pick_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(BlindSRError, match="device .* must be a name such as cpu"):
        upscale(img, model="bicubic", device=3)
    with pytest.raises(BlindSRError, match="--device tpu: unknown device"):
        pick_device("tpu")
    for name in ("meta", "xpu"):  # torch parses these, blindsr cannot run on them
        with pytest.raises(BlindSRError, match=f"--device {name}: not supported here"):
            pick_device(name)


def test_a_boolean_mask_keeps_its_extent():
    mask = np.zeros((16, 16), bool)
    mask[4:12, 4:12] = True  # a quarter of the image
    out = upscale(mask, model="bicubic")
    assert out.dtype == np.bool_ and out.shape == (64, 64)
    assert out.mean() == pytest.approx(0.25, abs=0.01)  # >0 would have grown it to ~0.32


def test_an_unknown_setting_is_one_error_naming_the_known_ones():
    import blindsr

    with pytest.raises(BlindSRError, match="unknown setting.*foo; known: .*tile"):
        blindsr.upscale(np.zeros((8, 8, 3), np.uint8), model="bicubic", foo=1)


def test_loading_and_upscaling_leave_the_callers_random_stream_alone(rand_image):
    import blindsr
    from blindsr.checkpoint import load_model

    x = rand_image(1, 3, 12, 10)
    for call in (lambda: load_model("blindsr-x4"), lambda: blindsr.upscale(x, model="blindsr-x4")):
        torch.manual_seed(0)
        call()
        after = torch.rand(1)
        torch.manual_seed(0)
        assert torch.equal(after, torch.rand(1))


def test_the_package_lists_its_lazy_calls():
    import blindsr

    assert {"upscale", "load_model"} <= set(dir(blindsr))
