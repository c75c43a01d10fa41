import json

import pytest
import torch
from conftest import load_benchmark, make_code_matter, smooth_images

from blindsr import archs
from blindsr.checkpoint import load_model, save_model
from blindsr.degrade.kernel_code import blur_downsample, coder_for
from blindsr.rewards import get_reward

TINY = {"num_feat": 4, "num_block": 1, "predictor_feat": 4, "am_hidden": 4}


def tiny_amnet(tmp_path, name, seed, code_matters=False):
    torch.manual_seed(seed)
    model = archs.build("amnet", scale=4, code_dim=1, **TINY)
    if code_matters:
        make_code_matter(model, seed)
    model.record_code_units(coder_for(1, (0.2, 4.0)))
    return save_model(model, tmp_path / f"{name}.safetensors")


def test_landscape_and_predictions_on_tiny_models(tmp_path, capsys):
    script = load_benchmark("amrl_landscape")
    renderer = tiny_amnet(tmp_path, "renderer", 0)
    other = tiny_amnet(tmp_path, "other", 1)
    images = smooth_images(tmp_path / "set", n=2, size=48)
    out = tmp_path / "landscape.json"
    assert script.main(["--model", str(renderer), "--predictor", str(renderer), "--predictor",
                        str(other), "--data", str(images), "--sigmas", "1.0", "3.8",
                        "--offsets", "-0.5", "0", "0.5", "--crops", "2", "--patch", "32",
                        "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["sigma"] for r in rows] == [1.0, 3.8]
    for r in rows:
        assert list(r["landscape"]) == ["-0.5", "0.0", "0.5"]
        # sigma 3.8 + 0.5 is clamped to the range's 4.0, so every score is finite
        assert all(torch.isfinite(torch.tensor(v)) for v in r["landscape"].values())
        for v in r["predicted"].values():
            assert 0.2 <= v["crops"] <= 4.0 and 0.2 <= v["whole"] <= 4.0
    # two different predictors give different estimates
    a, b = rows[0]["predicted"].values()
    assert a["crops"] != pytest.approx(b["crops"])
    assert "| 1.0 |" in capsys.readouterr().out


def test_a_missing_dataset_is_a_one_line_error(tmp_path, capsys):
    script = load_benchmark("amrl_landscape")
    renderer = tiny_amnet(tmp_path, "renderer", 0)
    assert script.main(["--model", str(renderer), "--data", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1


def test_shifted_codes_of_the_first_predictor(tmp_path, capsys):
    script = load_benchmark("amrl_landscape")
    renderer = tiny_amnet(tmp_path, "renderer", 0, code_matters=True)
    other = tiny_amnet(tmp_path, "other", 1)
    images = smooth_images(tmp_path / "set", n=2, size=48)
    out = tmp_path / "landscape.json"
    assert script.main(["--model", str(renderer), "--predictor", str(renderer), "--predictor",
                        str(other), "--data", str(images), "--sigmas", "2.0", "--offsets", "0",
                        "--shifts", "-0.5", "0", "--crops", "2", "--patch", "32",
                        "--out", str(out)]) == 0
    shifted = json.loads(out.read_text())["rows"][0]["shifted"]
    assert list(shifted) == ["crops", "whole"] and list(shifted["crops"]) == ["-0.5", "0.0"]
    # offset 0 is the renderer driven by its own predictor, as inference runs it
    model = load_model(renderer).eval()
    hr = [x for _, x in script.load_images(str(images), None, "hr")]
    crops = script.random_crops(hr, 2, 32, 0)
    psnr = get_reward("psnr")
    with torch.no_grad():
        lr = blur_downsample(crops, torch.full((4,), 2.0), 4, quantize=True)
        want_crops = float(psnr(model(lr).clamp(0, 1), crops, lr).mean())
        whole = []
        for x in hr:
            lr = blur_downsample(x, torch.full((1,), 2.0), 4, quantize=True)
            whole.append(float(psnr(model(lr, model.image_code(lr)).clamp(0, 1), x, lr)))
    assert shifted["crops"]["0.0"] == pytest.approx(want_crops, abs=1e-4)
    assert shifted["whole"]["0.0"] == pytest.approx(sum(whole) / len(whole), abs=1e-4)
    with torch.no_grad():  # offset -0.5: half a sigma below each crop's decoded guess
        lr = blur_downsample(crops, torch.full((4,), 2.0), 4, quantize=True)
        coder = coder_for(1, (0.2, 4.0))
        guess = coder.decode(model.clamp_code(model.predictor(lr))).float().reshape(-1)
        code = coder.encode((guess - 0.5).clamp(0.2, 4.0)).reshape(4, 1)
        want_low = float(psnr(model.render(lr, code).clamp(0, 1), crops, lr).mean())
    assert shifted["crops"]["-0.5"] == pytest.approx(want_low, abs=1e-4)
    assert want_low != pytest.approx(want_crops, abs=1e-3)
    assert "renderer.safetensors's codes moved by an offset" in capsys.readouterr().out


@pytest.fixture
def real_setup(tmp_path, monkeypatch):
    """(script, renderer, LR-only folder, arguments) for shifts on a real set under a
    no-reference reward (a sharpness callable)."""
    (tmp_path / "sharpness.py").write_text(
        "def score(sr, hr, lr):\n"
        "    return sr.diff(dim=-1).abs().mean(dim=(1, 2, 3))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    script = load_benchmark("amrl_landscape")
    renderer = tiny_amnet(tmp_path, "renderer", 0, code_matters=True)
    hr = smooth_images(tmp_path / "set", n=2, size=48)
    real = smooth_images(tmp_path / "real", n=2, size=24)
    args = ["--model", str(renderer), "--predictor", str(renderer), "--data", str(hr),
            "--sigmas", "2.0", "--offsets", "0", "--shifts", "-1", "0", "--crops", "1",
            "--patch", "32", "--real", f"lr:{real}", "--reward", "sharpness:score"]
    return script, renderer, real, args


def test_shifts_on_an_lr_only_set_use_a_no_reference_reward(tmp_path, real_setup, capsys):
    script, renderer, real, args = real_setup
    out = tmp_path / "landscape.json"
    assert script.main([*args, "--out", str(out)]) == 0
    result = json.loads(out.read_text())["real"]
    assert list(result) == ["-1.0", "0.0"] and result["0.0"]["images"] == 2
    model = load_model(renderer).eval()
    with torch.no_grad():  # shift 0: the renderer driven by its own whole-image code
        want = [float((lambda sr: sr.diff(dim=-1).abs().mean())(
            model(lr, model.image_code(lr)).clamp(0, 1)))
            for _, lr in script.load_images(f"lr:{real}", None, "lr")]
    assert result["0.0"]["mean"] == pytest.approx(sum(want) / 2, abs=1e-5)
    assert result["-1.0"]["mean"] != pytest.approx(result["0.0"]["mean"], abs=1e-4)
    assert f"lr:{real} (LR only, whole images)" in capsys.readouterr().out
    for bad, message in [(["--reward", "psnr"], "needs HR"), (["--shifts"], "needs --shifts")]:
        assert script.main([*args, *bad]) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_real_crop_gains_are_paired_changes_per_crop(tmp_path, real_setup, capsys):
    script, renderer, real, args = real_setup
    out = tmp_path / "landscape.json"
    assert script.main([*args, "--real-crop-sizes", "12", "30", "--real-crops", "3",
                        "--out", str(out)]) == 0
    crops = json.loads(out.read_text())["real_crops"]
    assert list(crops) == ["12", "30"]
    assert crops["30"]["0.0"]["crops"] == 0  # no real image is 30 pixels wide
    small = crops["12"]
    assert small["0.0"]["crops"] == 6 and small["0.0"]["mean_gain"] == 0.0
    # the same crops by hand: the first image's first crop, from the same seeded stream
    model = load_model(renderer).eval()
    coder = coder_for(1, (0.2, 4.0))
    lrs = [x for _, x in script.load_images(f"lr:{real}", None, "lr")]
    g = torch.Generator().manual_seed(0)
    gains = []
    with torch.no_grad():
        for lr in lrs:
            for _ in range(3):
                y, x = (int(torch.randint(24 - 12 + 1, (1,), generator=g)) for _ in range(2))
                crop = lr[..., y:y + 12, x:x + 12]
                guess = coder.decode(model.clamp_code(model.predictor(crop))).float()
                score = [float(model.render(crop, coder.encode((guess.reshape(-1) + d)
                                                               .clamp(0.2, 4.0)).reshape(1, 1))
                               .clamp(0, 1).diff(dim=-1).abs().mean()) for d in (-1.0, 0.0)]
                gains.append(score[0] - score[1])
    assert small["-1.0"]["mean_gain"] == pytest.approx(sum(gains) / 6, abs=1e-5)
    assert small["-1.0"]["std"] > 0
    assert "random LR crops" in capsys.readouterr().out
    assert script.main([*args[:-6], "--real-crop-sizes", "12"]) == 1
    assert "needs --real" in capsys.readouterr().err
