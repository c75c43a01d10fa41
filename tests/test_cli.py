import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blindsr.cli import main


def write_png(path, size=(20, 16), mode="RGB"):
    rng = np.random.default_rng(0)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray((rng.random(shape) * 255).astype(np.uint8), mode).save(path)
    return path


def test_upscale_folder_skips_bad_files_and_reports(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    write_png(src / "good.png")
    write_png(src / "gray.png", mode="L")
    (src / "empty.png").write_bytes(b"")
    (src / "fake.jpg").write_text("not an image")
    code = main(["upscale", str(src), "-o", str(tmp_path / "out"), "--model", "bicubic",
                 "--outscale", "2", "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert Image.open(tmp_path / "out" / "good.png").size == (40, 32)
    assert Image.open(tmp_path / "out" / "gray.png").mode == "L"
    assert "empty.png" in err and "fake.jpg" in err and "2 failed" in err
    assert "Traceback" not in err


def test_upscale_single_file_to_named_output(tmp_path):
    src = write_png(tmp_path / "a.png")
    assert main(["upscale", str(src), "-o", str(tmp_path / "b.jpg"), "--model", "bicubic",
                 "-q"]) == 0
    assert Image.open(tmp_path / "b.jpg").size == (80, 64)


def test_upscale_refuses_to_overwrite_its_input(tmp_path, capsys):
    src = write_png(tmp_path / "a.png")
    assert main(["upscale", str(src), "-o", str(tmp_path), "--model", "bicubic", "-q"]) == 1
    assert "overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--dtype", "fp16", "--device", "cpu"], "bf16"),
    (["--model", "nope.safetensors"], "nope.safetensors"),
    (["--tile", "4"], "--tile"),
    (["--outscale", "nan"], "--outscale"),
    (["--outscale", "inf"], "--outscale"),
    (["--outscale", "0"], "--outscale"),
    (["--outscale=-2"], "--outscale"),
    (["--max-pixels=-3"], "--max-pixels"),
    (["--quality", "0"], "--quality"),
    (["--batch", "0"], "--batch"),
])
def test_upscale_bad_options_give_one_line(tmp_path, capsys, args, message):
    src = write_png(tmp_path / "a.png")
    assert main(["upscale", str(src), "-o", str(tmp_path / "o"), "-q", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("blindsr: error:")


def test_upscale_suffix_ext_and_quality_shape_the_output(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    write_png(src / "a.png", size=(48, 40))
    for q in (95, 20):
        out = tmp_path / f"q{q}"
        assert main(["upscale", str(src), "-o", str(out), "--model", "bicubic", "--suffix",
                     "_x4", "--ext", "jpg", "--quality", str(q), "-q"]) == 0
        assert [p.name for p in out.iterdir()] == ["a_x4.jpg"]
        with Image.open(out / "a_x4.jpg") as im:
            assert im.format == "JPEG" and im.size == (192, 160)
    assert (tmp_path / "q20" / "a_x4.jpg").stat().st_size < \
        (tmp_path / "q95" / "a_x4.jpg").stat().st_size / 2
    assert main(["upscale", str(src), "-o", str(tmp_path / "w"), "--model", "bicubic", "--ext",
                 "webp", "-q"]) == 0
    with Image.open(tmp_path / "w" / "a.webp") as im:
        assert im.format == "WEBP"


def test_upscale_tile_options_reach_the_tiler(tmp_path, monkeypatch):
    import blindsr.inference as inference

    seen = []
    real = inference.run_tiled

    def spy(forward, x, scale, tile, pad, batch, on_tiles=None):
        seen.append((tile, pad, batch))
        return real(forward, x, scale, tile, pad, batch, on_tiles)

    monkeypatch.setattr(inference, "run_tiled", spy)
    src = write_png(tmp_path / "a.png", size=(40, 36))
    assert main(["upscale", str(src), "-o", str(tmp_path / "o.png"), "--model", "bicubic",
                 "--tile", "16", "--tile-pad", "5", "--batch", "3", "-q"]) == 0
    assert seen == [(16, 5, 3)]
    assert Image.open(tmp_path / "o.png").size == (160, 144)


def test_upscale_names_a_missing_input_at_once_and_goes_on(tmp_path, capsys):
    src = write_png(tmp_path / "a.png")
    code = main(["upscale", str(tmp_path / "gone.png"), str(src), "-o", str(tmp_path / "o"),
                 "--model", "bicubic", "-q"])
    err = capsys.readouterr().err
    assert code == 1 and (tmp_path / "o" / "a.png").exists()
    assert err.count("gone.png") == 2  # the error line when it is met, then the summary
    assert "error:" in err.splitlines()[0] and "Traceback" not in err


def test_degrade_preset_and_random(tmp_path):
    src = write_png(tmp_path / "hr.png", size=(34, 25))
    assert main(["degrade", str(src), "-o", str(tmp_path / "lr"), "--preset", "b+n+j",
                 "--scale", "4"]) == 0
    assert Image.open(tmp_path / "lr" / "hr.png").size == (8, 6)
    assert main(["degrade", str(src), "-o", str(tmp_path / "rnd"), "--random", "--seed", "3"]) == 0
    first = np.asarray(Image.open(tmp_path / "rnd" / "hr.png"))
    assert main(["degrade", str(src), "-o", str(tmp_path / "rnd2"), "--random", "--seed", "3"]) == 0
    assert np.array_equal(first, np.asarray(Image.open(tmp_path / "rnd2" / "hr.png")))
    assert main(["degrade", str(src), "-o", str(tmp_path / "lr.jpg")]) == 0  # a file for one
    assert Image.open(tmp_path / "lr.jpg").format == "JPEG"


def test_degrade_noises_a_gray_image_on_its_one_channel_as_eval_does(tmp_path):
    from blindsr import io
    from blindsr.degrade import apply

    src = tmp_path / "g.png"
    Image.fromarray(np.full((64, 64), 128, np.uint8), "L").save(src)
    assert main(["degrade", str(src), "-o", str(tmp_path / "lr"), "--preset", "noise"]) == 0
    written = np.asarray(Image.open(tmp_path / "lr" / "g.png")).astype(float)
    assert written.std() == pytest.approx(20, abs=2)  # sigma 20 (three averaged: 11.5)
    expected = apply(io.read_image(src).color.float(), "noise", 4, seed=0)  # eval's LR
    assert np.array_equal(written, (expected[0, 0].numpy() * 255).round())


def test_degrade_random_noises_a_gray_image_at_full_strength(tmp_path):
    cfg = tmp_path / "noise.yaml"  # colour Gaussian noise sigma 20 alone, once
    stage = ("  blur: {{prob: 0.0}}\n  resize: {{probs: [0, 0, 1]}}\n"
             "  noise: {{gaussian_prob: 1.0, gaussian_sigma: [{0}, {0}], gray_prob: 0.0}}\n"
             "  jpeg_quality: [100, 100]\n")
    cfg.write_text(f"stage1:\n{stage.format(20)}stage2:\n{stage.format(0)}"
                   "final: {sinc_prob: 0.0}\n")
    src = tmp_path / "g.png"
    Image.fromarray(np.full((128, 128), 128, np.uint8), "L").save(src)
    assert main(["degrade", str(src), "-o", str(tmp_path / "lr"), "--random", "--config",
                 str(cfg), "--scale", "1", "-q"]) == 0
    written = np.asarray(Image.open(tmp_path / "lr" / "g.png")).astype(float)
    assert written.ndim == 2 and written.std() == pytest.approx(20, abs=2)  # averaged: 11.5


def test_degrade_gives_file_k_seed_plus_k_as_eval(tmp_path):
    from blindsr import io
    from blindsr.degrade import apply

    hr = tmp_path / "hr"
    hr.mkdir()
    for name in ("b.png", "a.png", "c.png"):
        write_png(hr / name, size=(32, 32))
    assert main(["degrade", str(hr), "-o", str(tmp_path / "lr"), "--preset", "n+j",
                 "--seed", "5", "-q"]) == 0
    for k, name in enumerate(("a.png", "b.png", "c.png")):  # sorted by name
        got = np.asarray(Image.open(tmp_path / "lr" / name))
        want = apply(io.read_image(hr / name).color.float(), "n+j", 4, seed=5 + k)
        assert np.array_equal(got, (want[0].permute(1, 2, 0).numpy() * 255).round())
    residual = [np.asarray(Image.open(tmp_path / "lr" / n)).astype(float) for n in ("a.png",
                                                                                     "b.png")]
    assert not np.array_equal(residual[0], residual[1])


def test_degrade_gives_a_symlinked_file_a_seed_of_its_own(tmp_path):
    hr = tmp_path / "hr"
    hr.mkdir()
    write_png(hr / "a.png", size=(32, 32))
    (hr / "b.png").symlink_to(hr / "a.png")
    assert main(["degrade", str(hr), "-o", str(tmp_path / "lr"), "--preset", "noise",
                 "-q"]) == 0
    a, b = (np.asarray(Image.open(tmp_path / "lr" / n)) for n in ("a.png", "b.png"))
    assert not np.array_equal(a, b)  # seeds 0 and 1, not one shared noise field


def test_degrade_in_place_names_its_own_options(tmp_path):
    from blindsr.degrade_files import degrade_files

    src = write_png(tmp_path / "a.png", size=(32, 32))
    report = degrade_files([str(src)], tmp_path, preset="bicubic")
    assert report.failures and "overwrite the input" in report.failures[0]
    assert report.failures[0].endswith("(use -o for another folder)")


def test_a_bad_degrade_seed_is_one_error_before_any_file(tmp_path, capsys):
    src = write_png(tmp_path / "hr.png", size=(32, 32))
    for extra in (["--random"], ["--preset", "noise"]):
        assert main(["degrade", str(src), str(src), "-o", str(tmp_path / "o"), *extra,
                     "--seed", str(2**64)]) == 1
        err = capsys.readouterr().err.strip()
        assert err == "blindsr: error: seed must be in [0, 2**64), got 18446744073709551616"


def test_degrade_random_config_file(tmp_path, capsys):
    src = write_png(tmp_path / "hr.png", size=(32, 32))
    bad = tmp_path / "bad.yaml"
    bad.write_text("no_such_key: 1\n")
    assert main(["degrade", str(src), "-o", str(tmp_path / "o"), "--random",
                 "--config", str(bad)]) == 1
    assert "no_such_key" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("noise_range: [1, 30\n")
    assert main(["degrade", str(src), "-o", str(tmp_path / "o"), "--random",
                 "--config", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "broken.yaml: invalid YAML at line" in err and len(err.strip().splitlines()) == 1
    # options the chosen preset does not use are refused, not ignored
    assert main(["degrade", str(src), "-o", str(tmp_path / "o"), "--config", str(bad)]) == 1
    assert "is for --random (the pipeline's settings) or --preset and" in capsys.readouterr().err
    assert main(["degrade", str(src), "-o", str(tmp_path / "o"), "--preset", "b+n+j",
                 "--model", "andnet-x4"]) == 1
    assert "--model andnet-x4: only --preset and attacks a model" in capsys.readouterr().err


def test_degrade_unknown_preset(tmp_path, capsys):
    src = write_png(tmp_path / "hr.png")
    assert main(["degrade", str(src), "-o", str(tmp_path / "o"), "--preset", "fog"]) == 1
    err = capsys.readouterr().err
    assert "fog" in err and "Traceback" not in err


def test_models_lists_shipped_models_and_marks_the_default(capsys):
    from blindsr import zoo

    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == ["bicubic", *zoo.shipped_models()]
    marked = [line.split()[0] for line in lines if line.endswith("[default]")]
    assert marked == [zoo.default_model_name()]


def test_models_name_prints_its_card(capsys):
    from blindsr import zoo

    for name, entry in zoo.shipped_models().items():
        assert main(["models", name]) == 0
        assert capsys.readouterr().out.strip() == entry.card_text().strip()
    assert main(["models", "bicubic"]) == 0
    assert "always available" in capsys.readouterr().out
    assert main(["models", "no-such-model"]) == 1
    err = capsys.readouterr().err.strip()
    assert "no such shipped model" in err and "bicubic" in err and len(err.splitlines()) == 1


def test_help_does_not_import_torch():
    # the parser of every command is built without torch, so that `blindsr --help` is instant
    code = "import sys; from blindsr.cli import build_parser; build_parser(); " \
           "print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_command_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "blindsr", "--version"], capture_output=True,
                            text=True, check=True)
    assert result.stdout.startswith("blindsr ")


def test_degrade_and_writes_a_grid_of_samples(tmp_path, capsys):
    src = write_png(tmp_path / "hr.png", size=(40, 36))
    small = write_png(tmp_path / "small.png", size=(12, 12))
    cfg = tmp_path / "and.yaml"  # a training config: its strategy.params are used
    cfg.write_text("strategy:\n  name: and\n  params: {channels: 8, epsilon: 0.2, alpha: 0.06, "
                   "steps: 2}\n")
    args = ["degrade", str(src), "-o", str(tmp_path / "a"), "--preset", "and", "--config",
            str(cfg), "--model", "bicubic"]
    assert main([*args, "--seed", "1"]) == 0
    grid = np.asarray(Image.open(tmp_path / "a" / "hr.png"))
    side = 36 + 2  # the 36-pixel crop and a 1-pixel border
    assert grid.shape == (2 * side, 4 * side, 3)  # HR + 3 adversarial / identity + 3 random
    tiles = [grid[r * side + 1:(r + 1) * side - 1, c * side + 1:(c + 1) * side - 1]
             for r in range(2) for c in range(4)]
    assert all(not np.array_equal(tiles[0], t) for t in tiles[1:])
    assert main([*args, "--seed", "1", "-o", str(tmp_path / "b")]) == 0
    assert np.array_equal(grid, np.asarray(Image.open(tmp_path / "b" / "hr.png")))
    assert main(["degrade", str(small), "-o", str(tmp_path / "c"), "--preset", "and"]) == 1
    assert "too small for an AND grid" in capsys.readouterr().err
    # without a config: the calibrated prior, whose attacked LRs keep the image (not a flat colour)
    assert main(["degrade", str(src), "-o", str(tmp_path / "d"), "--preset", "and"]) == 0
    grid = np.asarray(Image.open(tmp_path / "d" / "hr.png")).astype(np.float64)
    def spatial_std(tile):  # per channel, averaged: a flat colour has none
        return tile.std(axis=(0, 1)).mean()

    hr_std = spatial_std(grid[1:side - 1, 1:side - 1])
    for c in range(1, 4):
        assert spatial_std(grid[1:side - 1, c * side + 1:(c + 1) * side - 1]) > 0.3 * hr_std


class _ClosedPipe:
    """A stdout whose reader has gone away."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        pass


def test_closed_stdout_pipe_exits_quietly_in_process(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["models"]) == 141
    assert capsys.readouterr().err == ""


def test_closed_stdout_pipe_exits_quietly(tmp_path):
    # `blindsr models blindsr-x4 | head -0`: the read end is closed before the command writes
    # (it takes a second to start), so every write fails; no traceback, no "Exception ignored".
    proc = subprocess.Popen([sys.executable, "-m", "blindsr", "models", "blindsr-x4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert err == ""


def test_upscale_refuses_an_ext_other_than_the_named_files(tmp_path, capsys):
    src = write_png(tmp_path / "a.png")
    assert main(["upscale", str(src), "-o", str(tmp_path / "b.jpg"), "--ext", "png",
                 "--model", "bicubic", "-q"]) == 1
    assert "is a .jpg file but --ext asks for png" in capsys.readouterr().err
    assert not (tmp_path / "b.jpg").exists()


def test_upscale_refuses_a_file_name_for_several_inputs_before_any_work(tmp_path, capsys):
    a, b = write_png(tmp_path / "a.png"), write_png(tmp_path / "b.png")
    assert main(["upscale", str(a), str(b), "-o", str(tmp_path / "two.png"), "--model",
                 "bicubic", "-q"]) == 1
    err = capsys.readouterr().err
    assert "names one file but there are several inputs" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "two.png").exists()


def test_file_system_errors_and_warnings_are_one_line(monkeypatch, capsys):
    import warnings

    import blindsr.cli as cli

    shown = []
    original = warnings.formatwarning

    def fails(args):
        shown.append(warnings.formatwarning("a thing to know", UserWarning, "data.py", 343))
        raise PermissionError(13, "Permission denied", "/root/x")

    monkeypatch.setattr(cli, "_run_models", fails)
    assert main(["models"]) == 1
    assert shown == ["blindsr: warning: a thing to know\n"]
    assert warnings.formatwarning is original  # restored for whoever called main
    assert capsys.readouterr().err == "blindsr: error: /root/x: Permission denied\n"
    assert cli._one_line_warning("old API", FutureWarning) == (
        "blindsr: warning (FutureWarning): old API\n")

    def library_bug(args):
        raise OSError("cannot write mode RGBA as JPEG")  # no errno: a bug, not the system

    monkeypatch.setattr(cli, "_run_models", library_bug)
    with pytest.raises(OSError, match="RGBA"):
        main(["models"])


def test_degrade_refuses_random_with_a_preset_and_a_config_of_another_method(tmp_path, capsys):
    src = write_png(tmp_path / "hr.png", size=(32, 32))
    for preset in ("and", "b+n+j"):
        assert main(["degrade", str(src), "-o", str(tmp_path / "o"), "--random",
                     "--preset", preset]) == 1
        assert f"--random and --preset {preset}: choose one" in capsys.readouterr().err
    tiny = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
    assert main(["degrade", str(src), "-o", str(tmp_path / "o"), "--preset", "and",
                 "--config", str(tiny)]) == 1
    assert "a training config of strategy plain, not and" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_missing_single_input_is_reported_once(tmp_path, capsys):
    assert main(["upscale", str(tmp_path / "nope.png"), "-o", str(tmp_path / "x.png"),
                 "--model", "bicubic", "-q"]) == 1
    err = capsys.readouterr().err
    assert "no such file" in err and "names one file" not in err


def test_eval_help_lists_every_preset(capsys):
    from blindsr.degrade.presets import PRESETS

    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(name in text for name in PRESETS)
