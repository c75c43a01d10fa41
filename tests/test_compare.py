"""blindsr.compare / `blindsr compare`: side-by-side crops of several models' outputs."""

import numpy as np
import pytest
import torch
from PIL import Image

from blindsr import archs
from blindsr.checkpoint import save_model
from blindsr.cli import main
from blindsr.compare import CAPTION, GAP, make_panels, parse_crop, render
from blindsr.errors import BlindSRError
from blindsr.evaluate import evaluate


@pytest.fixture
def hr_image(tmp_path):
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    path = tmp_path / "hr" / "photo.png"
    path.parent.mkdir()
    Image.fromarray(small).resize((48, 40), Image.BICUBIC).save(path)
    return path


def tiny_model(tmp_path):
    torch.manual_seed(0)
    return str(save_model(archs.build("srresnet", scale=4, num_feat=4, num_block=1),
                          tmp_path / "tiny.safetensors"))


def test_parse_crop():
    assert parse_crop("1,2,3,4") == (1, 2, 3, 4) and parse_crop(None) is None
    for bad in ("1,2,3", "a,b,c,d", "0,0,0,4", "-1,0,2,2"):
        with pytest.raises(BlindSRError, match="--crop must be X,Y,W,H"):
            parse_crop(bad)


def test_panels_crop_every_output_alike_and_score_as_eval(tmp_path, hr_image):
    model = tiny_model(tmp_path)
    panels = make_panels(hr_image, ["bicubic", model], degrade="b+n+j", crop=(4, 8, 16, 12))
    assert [p.label for p in panels] == ["bicubic", model, "HR"]
    assert all(p.crop.shape == (1, 3, 12, 16) for p in panels)
    table = evaluate({"bicubic": "bicubic", "tiny": model}, str(hr_image.parent), "b+n+j",
                     ["psnr"])
    assert [p.psnr for p in panels[:2]] == pytest.approx([r.value for r in table], abs=1e-9)
    assert panels[2].psnr is None and panels[0].caption.endswith(" dB")


def test_an_lr_image_is_upscaled_as_it_is_and_has_no_reference(tmp_path, hr_image):
    panels = make_panels(hr_image, ["bicubic"])
    assert len(panels) == 1 and panels[0].psnr is None
    assert panels[0].crop.shape == (1, 3, 80, 96)  # the centre half of 160 x 192


def test_the_figure_is_one_row_of_zoomed_panels(tmp_path, hr_image, capsys):
    out = tmp_path / "fig.png"
    assert main(["compare", str(hr_image), "--model", "bicubic", "--model", tiny_model(tmp_path),
                 "--degrade", "b+n+j", "--crop", "0,0,32,16", "--zoom", "3", "-o", str(out)]) == 0
    with Image.open(out) as figure:
        assert figure.size == (3 * (32 * 3 + GAP) - GAP, 16 * 3 + CAPTION)
    assert "HR" in capsys.readouterr().err
    panels = make_panels(hr_image, ["bicubic"], crop=(0, 0, 8, 8))
    assert render(panels).size == (8 * 32, 8 * 32 + CAPTION)  # zoomed to about 256 pixels


def test_bad_requests_fail_in_one_line(tmp_path, hr_image, capsys):
    for args, message in [
        (["--crop", "0,0,999,4"], "leaves the 192x160 output"),
        (["-o", str(tmp_path / "fig.jpg")], "the figure is written as .png"),
        (["--model", "nosuch"], "nosuch: no such model file or shipped model"),
        (["--degrade", "fog"], "fog"),
    ]:
        argv = ["compare", str(hr_image), "-o", str(tmp_path / "fig.png"), *args]
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    Image.new("RGB", (3, 5)).save(tmp_path / "tiny.png")
    assert main(["compare", str(tmp_path / "tiny.png"), "--degrade", "bicubic", "--model",
                 "bicubic", "-o", str(tmp_path / "t.png")]) == 1
    assert "an image of 3x5 is smaller than the scale 4" in capsys.readouterr().err


def test_bicubic_follows_the_scale_of_the_degradation(hr_image):
    panels = make_panels(hr_image, ["bicubic"], degrade="bicubic", scale=2)
    assert panels[-1].label == "HR" and panels[0].crop.shape == panels[-1].crop.shape


def test_scale_zoom_and_size_limits(tmp_path, hr_image, capsys):
    with pytest.raises(BlindSRError, match="--scale must be a positive integer"):
        make_panels(hr_image, ["bicubic"], degrade="bicubic", scale=0)
    panels = make_panels(hr_image, ["bicubic"], scale=2)  # an LR image, bicubic at x2
    assert panels[0].crop.shape == (1, 3, 40, 48)
    with pytest.raises(BlindSRError, match="--zoom must be >= 1, got 0"):
        render(panels, zoom=0)
    with pytest.raises(BlindSRError, match="the figure would be .* lower --zoom"):
        render(panels, zoom=1000)
    with pytest.raises(BlindSRError, match=r"outputs differ in size \(bicubic 96x80, "):
        make_panels(hr_image, ["bicubic", tiny_model(tmp_path)], scale=2)


def test_the_figure_goes_into_a_new_folder(tmp_path, hr_image):
    out = tmp_path / "new" / "deeper" / "fig.png"
    assert main(["compare", str(hr_image), "--model", "bicubic", "-o", str(out)]) == 0
    assert out.is_file()
