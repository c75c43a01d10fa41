import csv
import json

import pytest
import torch
from PIL import Image

from blindsr import archs, io
from blindsr.checkpoint import save_model
from blindsr.cli import main
from blindsr.degrade import apply
from blindsr.errors import BlindSRError
from blindsr.evaluate import EvalLog, Result, evaluate, format_tables
from blindsr.metrics import METRICS, Metric, psnr
from blindsr.zoo import Bicubic


def smooth(seed, h=64, w=64, c=3):
    """A smooth random image (upsampled noise), so that SR numbers are meaningful."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, c, h // 8, w // 8, generator=g)
    return torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear")


def write(path, img):
    io.write_image(path, io.ImageData(img, None, 8))
    return path


def hr_folder(tmp_path, n=2, name="hrset", gray=()):
    folder = tmp_path / name
    for k in range(n):
        write(folder / f"im{k}.png", smooth(k, c=1 if k in gray else 3))
    return folder


def tiny(scale=4):
    torch.manual_seed(0)
    return archs.build("srresnet", num_feat=8, num_block=1, scale=scale).eval()


def test_bicubic_set5_x4_clean_matches_the_literature(shared):
    # Bicubic on Set5 x4 (MATLAB LR, PSNR on Y, border 4) is reported as 28.42 dB everywhere.
    results = evaluate(["bicubic"], ["Set5"], ["clean"], ["psnr"], scale=4, device="cpu")
    assert [(r.model, r.dataset, r.degradation, r.metric) for r in results] == [
        ("bicubic", "Set5", "clean", "psnr")]
    assert results[0].value == pytest.approx(28.42, abs=0.05)


def test_same_call_same_numbers_and_seed_matters(tmp_path):
    folder = str(hr_folder(tmp_path))
    run = lambda seed: evaluate(["bicubic"], [folder], ["noise"], ["psnr"], device="cpu",  # noqa: E731
                                seed=seed)
    first, again, other = run(0), run(0), run(1)
    assert first == again
    assert first[0].value != other[0].value


def test_degradation_seed_is_seed_plus_image_index(tmp_path):
    folder = hr_folder(tmp_path)
    got = evaluate(["bicubic"], [str(folder)], ["b+n"], ["psnr"], device="cpu", seed=5)[0].value
    values = []
    for k in range(2):
        hr = io.read_image(folder / f"im{k}.png").color
        sr = Bicubic(4)(apply(hr, "b+n", 4, seed=5 + k))
        values.append(psnr(sr, hr, crop_border=4, y_channel=True).item())
    assert got == pytest.approx(sum(values) / 2, abs=1e-6)
    # a subset scores its images as the whole set does: image k keeps seed + k
    second = evaluate(["bicubic"], [f"{folder}[1:]"], ["b+n"], ["psnr"], device="cpu", seed=5)
    assert second[0].value == pytest.approx(values[1], abs=1e-6)


def test_paired_clean_uses_given_lr_and_other_presets_degrade_the_hr(tmp_path):
    hr_only = hr_folder(tmp_path, name="hr_only")
    paired = tmp_path / "paired"
    for k in range(2):
        hr = smooth(k)
        write(paired / "HR" / f"im{k}.png", hr)
        write(paired / "LR" / f"im{k}.png", torch.full((1, 3, 16, 16), 0.5))  # not HR's LR
    kw = dict(metrics=["psnr"], device="cpu")
    on_pairs = {r.degradation: r.value
                for r in evaluate(["bicubic"], [str(paired)], ["clean", "blur"], **kw)}
    on_hr = {r.degradation: r.value
             for r in evaluate(["bicubic"], [str(hr_only)], ["clean", "blur"], **kw)}
    assert on_pairs["blur"] == pytest.approx(on_hr["blur"], abs=1e-9)  # degraded on the fly
    assert on_pairs["clean"] < on_hr["clean"] - 3  # the flat LR files were used as given


def test_gray_images_are_scored_on_their_one_channel(tmp_path):
    folder = hr_folder(tmp_path, n=1, gray=(0,))
    got = evaluate(["bicubic"], [str(folder)], ["clean"], ["psnr"], device="cpu")[0].value
    hr = io.read_image(folder / "im0.png").color
    assert hr.shape[1] == 1
    expected = psnr(Bicubic(4)(apply(hr, "clean", 4)), hr, crop_border=4, y_channel=True)
    assert got == pytest.approx(expected.item(), abs=1e-6)


def test_tables_have_a_block_per_set_and_an_improvement_row():
    values = {("A", "Set5", "clean"): 30.0, ("A", "Set5", "noise"): 25.0,
              ("B", "Set5", "clean"): 30.5, ("B", "Set5", "noise"): 24.75,
              ("A", "Set14", "clean"): 27.0, ("B", "Set14", "clean"): 27.25}
    results = [Result(m, d, g, "psnr", v) for (m, d, g), v in values.items()]
    results.append(Result("A", "Set5", "clean", "ssim", 0.8))
    results.append(Result("B", "Set5", "clean", "ssim", 0.81))
    text = format_tables(results)
    psnr_table, ssim_table = text.split("\n\n**SSIM**")
    lines = psnr_table.splitlines()
    assert lines[0] == "**PSNR** (higher is better; Improvement = B − A)"
    assert lines[2] == "| Dataset | Model | clean | noise |"
    assert lines[4:] == [
        "| Set5 | A | 30.00 | 25.00 |",
        "|  | B | 30.50 | 24.75 |",
        "|  | Improvement | +0.50 | -0.25 |",
        "| Set14 | A | 27.00 | – |",
        "|  | B | 27.25 | – |",
        "|  | Improvement | +0.25 | – |",
    ]
    assert "|  | Improvement | +0.0100 |" in ssim_table


def test_lower_better_metrics_say_so():
    results = [Result("A", "S", "clean", "psnr", 30.0)]
    assert "higher is better" in format_tables(results)
    assert "Improvement" not in format_tables(results)  # one model: nothing to compare


@pytest.fixture
def no_reference_metric(monkeypatch):
    """A stand-in no-reference, lower-is-better metric recording the shapes it was given."""
    seen = []

    def mean_level(x):
        seen.append(tuple(x.shape))
        return x.mean(dim=(1, 2, 3))

    monkeypatch.setitem(METRICS, "nrmean", Metric("nrmean", mean_level, lower_better=True,
                                                   full_reference=False))
    return seen


def test_lr_only_sets_get_only_no_reference_metrics(tmp_path, no_reference_metric):
    folder = tmp_path / "real"
    write(folder / "a.png", smooth(0, 24, 24))
    write(folder / "b.png", smooth(1, 24, 24, c=1))  # gray: RGB metrics see three channels
    report = EvalLog()
    results = evaluate(["bicubic"], [f"lr:{folder}"], ["clean", "noise"], ["psnr", "nrmean"],
                       device="cpu", report=report)
    assert [(r.degradation, r.metric) for r in results] == [("given", "nrmean")]
    assert no_reference_metric == [(1, 3, 96, 96)] * 2
    assert any("psnr skipped" in line for line in report.notes)
    assert not report.failures
    assert "lower is better" in format_tables(results)


def test_cli_writes_json_csv_and_images_and_compares_two_models(tmp_path, capsys):
    folder = hr_folder(tmp_path, gray=(1,))
    ckpt = save_model(tiny(), tmp_path / "ckpts" / "tiny.safetensors")
    out, images = tmp_path / "res" / "results.json", tmp_path / "sr"
    code = main(["eval", "--model", "bicubic", "--model", str(ckpt), "--data", str(folder),
                 "--degrade", "clean,b+n", "--metrics", "psnr,ssim", "--out", str(out),
                 "--save-images", str(images), "--seed", "3", "-q"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "| hrset | bicubic |" in printed and "|  | Improvement |" in printed
    doc = json.loads(out.read_text())
    assert {k for r in doc["results"] for k in r} == {"model", "dataset", "degradation",
                                                      "metric", "value"}
    assert len(doc["results"]) == 2 * 1 * 2 * 2
    assert {"scale", "seed", "crop_border", "blindsr", "device", "date"} <= set(doc["meta"])
    assert doc["meta"]["seed"] == 3 and doc["meta"]["crop_border"] == 4
    with out.with_suffix(".csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [float(r["value"]) for r in rows] == [r["value"] for r in doc["results"]]
    assert out.with_suffix(".md").read_text().startswith("**PSNR**")
    # The Python API with the module itself gives the checkpoint's numbers.
    api = evaluate({"net": tiny()}, [str(folder)], ["b+n"], ["psnr"], device="cpu", seed=3)
    from_file = [r["value"] for r in doc["results"]
                 if (r["model"], r["degradation"], r["metric"]) == (str(ckpt), "b+n", "psnr")]
    assert [r.value for r in api] == pytest.approx(from_file, abs=1e-9)
    safe = str(ckpt).strip("/").replace("/", "_")
    for model in ("bicubic", safe):
        for deg in ("clean", "b+n"):
            assert Image.open(images / model / "hrset" / deg / "im0.png").size == (64, 64)
            assert Image.open(images / model / "hrset" / deg / "im1.png").mode == "L"


def test_bad_image_is_reported_and_the_rest_evaluated(tmp_path, capsys):
    folder = hr_folder(tmp_path)
    expected = evaluate(["bicubic"], [str(folder)], ["clean"], ["psnr"], device="cpu")
    (folder / "broken.png").write_bytes(b"not a png")
    report = EvalLog()
    got = evaluate(["bicubic"], [str(folder)], ["clean"], ["psnr"], device="cpu", report=report)
    assert got == expected
    assert len(report.failures) == 1 and "broken.png" in report.failures[0]
    assert report.failures[0].startswith("hrset/broken: image skipped (the set's means leave it")
    assert main(["eval", "--model", "bicubic", "--data", str(folder), "--metrics", "psnr",
                 "-q"]) == 1
    captured = capsys.readouterr()
    assert "| hrset | bicubic |" in captured.out and "broken.png" in captured.err


@pytest.mark.parametrize("args,needle", [
    (["--data", "NoSuchSet"], "NoSuchSet"),
    (["--model", "nope.safetensors"], "nope.safetensors"),
    (["--metrics", "psnr,fancy"], "fancy"),
    (["--degrade", "clean,smudge"], "smudge"),
    (["--scale", "2"], "x4"),
    (["--crop-border", "-3"], "crop_border (--crop-border) must be a whole number >= 0"),
    (["--out", "{tmp}/afile/table"], "cannot create --out file"),
    (["--save-images", "{tmp}/afile"], "--save-images folder"),
])
def test_user_errors_are_one_line(tmp_path, capsys, args, needle):
    folder = hr_folder(tmp_path, n=1)
    ckpt = save_model(tiny(), tmp_path / "tiny.safetensors")
    (tmp_path / "afile").write_text("x")
    base = {"--data": str(folder), "--model": str(ckpt), "--metrics": "psnr"}
    base.update({k: v.format(tmp=tmp_path) for k, v in zip(args[::2], args[1::2], strict=True)})
    argv = ["eval", *[x for kv in base.items() for x in kv], "-q"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("blindsr: error:") and needle in err
    assert len(err.splitlines()) == 1


def test_an_image_that_cannot_be_saved_keeps_its_scores(tmp_path, monkeypatch):
    from blindsr import io

    folder = hr_folder(tmp_path, n=2)
    expected = evaluate(["bicubic"], [str(folder)], ["clean"], ["psnr"], device="cpu")

    def refuse(path, image, quality=95):
        raise BlindSRError(f"cannot write {path}: disk full")

    monkeypatch.setattr(io, "write_image", refuse)
    report = EvalLog()
    got = evaluate(["bicubic"], [str(folder)], ["clean"], ["psnr"], device="cpu",
                   save_images=tmp_path / "sr", report=report)
    assert got == expected
    assert len(report.failures) == 2 and all("not saved" in f for f in report.failures)


def test_single_strings_are_names_not_letters_and_bad_counts_raise(tmp_path):
    folder = str(hr_folder(tmp_path, n=2))
    listed = evaluate(["bicubic"], [folder], ["clean", "noise"], ["psnr"], device="cpu")
    assert evaluate("bicubic", folder, "clean,noise", "psnr", device="cpu") == listed
    for kwargs, message in [({"max_images": -1}, "max_images must be"),
                            ({"max_images": 0}, "max_images must be"),
                            ({"seed": "a"}, "seed must be")]:
        with pytest.raises(BlindSRError, match=message):
            evaluate("bicubic", folder, "clean", "psnr", device="cpu", **kwargs)


def test_models_can_be_a_list_and_bad_arguments_raise(tmp_path):
    folder = str(hr_folder(tmp_path, n=1))
    with pytest.raises(BlindSRError, match="no models"):
        evaluate({}, [folder], ["clean"], ["psnr"])
    with pytest.raises(BlindSRError, match="not a degradation"):
        evaluate(["bicubic"], [folder], ["given"], ["psnr"])
    one = evaluate(["bicubic"], [folder, folder], None, ["psnr"], device="cpu", max_images=1)
    assert [(r.dataset, r.degradation) for r in one] == [("hrset", "clean")]


def test_a_metric_that_fails_or_gives_nan_skips_that_image_only(tmp_path, monkeypatch, capsys):
    def picky(x):  # NaN on the flat image, a runtime failure on the small one
        if x.shape[-1] < 64:
            raise RuntimeError("Calculated output size: (192x0x0). Output size is too small")
        return torch.full((x.shape[0],), float("nan")) if x.std() == 0 else x.mean(dim=(1, 2, 3))

    monkeypatch.setitem(METRICS, "picky", Metric("picky", picky, lower_better=True,
                                                 full_reference=False))
    folder = tmp_path / "real"
    write(folder / "a.png", smooth(0, 24, 24))
    write(folder / "flat.png", torch.full((1, 3, 24, 24), 0.5))
    write(folder / "small.png", smooth(1, 12, 12))
    out = tmp_path / "res" / "run"
    assert main(["eval", "--model", "bicubic", "--data", f"lr:{folder}", "--metrics", "picky",
                 "-q", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "flat (given): picky skipped: picky is undefined on this image (NaN" in err
    assert "small (given): picky skipped: picky cannot score this 48x48 image" in err
    rows = json.loads(out.with_suffix(".json").read_text())["results"]
    expected = float(smooth(0, 24, 24).mean())
    assert len(rows) == 1 and rows[0]["value"] == pytest.approx(expected, abs=0.05)


def test_nothing_scored_is_a_failure(tmp_path, capsys):
    folder = tmp_path / "real"
    write(folder / "a.png", smooth(0, 24, 24))
    assert main(["eval", "--model", "bicubic", "--data", f"lr:{folder}", "--metrics", "psnr",
                 "-q"]) == 1
    assert "(no results)" in capsys.readouterr().out


@pytest.mark.parametrize("out, written", [("res/v1.2", "res/v1.2.json"),
                                          ("res/run.json", "res/run.json")])
def test_out_stems_keep_their_dots_and_folders_are_refused(tmp_path, capsys, out, written):
    folder = hr_folder(tmp_path, n=1)
    assert main(["eval", "--model", "bicubic", "--data", str(folder), "-q", "--out",
                 str(tmp_path / out)]) == 0
    assert (tmp_path / written).is_file() and (tmp_path / written).with_suffix(".md").is_file()
    (tmp_path / "busy.md").mkdir()  # one of the three files cannot be written: refused up front
    for bad, message in ((str(tmp_path), "not a folder"), (str(tmp_path / "busy"), "busy.md")):
        assert main(["eval", "--model", "bicubic", "--data", str(folder), "-q", "--out",
                     bad]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "busy.json").exists()


def test_seeds_near_the_top_of_the_range_wrap_per_image(tmp_path):
    folder = hr_folder(tmp_path, n=2)
    results = evaluate(["bicubic"], [str(folder)], ["noise"], ["psnr"], device="cpu",
                       seed=2**64 - 1)
    assert len(results) == 1
    with pytest.raises(BlindSRError, match=r"seed must be a whole number in \[0, 2\*\*64\)"):
        evaluate(["bicubic"], [str(folder)], ["noise"], ["psnr"], device="cpu", seed=2**64)


def test_one_degradation_spelt_two_ways_is_one_column(tmp_path):
    folder = hr_folder(tmp_path, n=1)
    results = evaluate(["bicubic"], [str(folder)], ["bd", "BD", "Bicubic", "iso2", "iso2.0"],
                       ["psnr"], device="cpu")
    assert [r.degradation for r in results] == ["BD", "bicubic", "iso2"]


def test_results_json_is_standard_json_for_identical_images(tmp_path):
    from blindsr.evaluate import write_results

    out = tmp_path / "r"
    write_results([Result("m", "d", "clean", "psnr", float("inf"))], out, {"x": float("nan")})
    text = out.with_suffix(".json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard {c}"))
    assert float(data["results"][0]["value"]) == float("inf") and data["meta"]["x"] == "nan"


@pytest.mark.parametrize("kwargs, message", [
    ({"scale": -1}, r"scale \(--scale\) must be a whole number >= 1, got -1"),
    ({"crop_border": 2.5}, r"crop_border \(--crop-border\) must be a whole number >= 0, got 2.5"),
    ({"tile": 0}, r"tile \(--tile\) must be a whole number >= 16, got 0"),
    ({"datasets": None}, "datasets: name at least one set"),
])
def test_bad_api_arguments_name_themselves(tmp_path, kwargs, message):
    args = {"models": ["bicubic"], "datasets": [str(hr_folder(tmp_path, n=1))], **kwargs}
    with pytest.raises(BlindSRError, match=message):
        evaluate(**args)


def test_two_images_of_one_name_are_not_saved_over_each_other(tmp_path):
    folder = tmp_path / "coll"
    write(folder / "a.png", smooth(0, 32, 32))
    Image.fromarray((smooth(1, 32, 32)[0].permute(1, 2, 0).numpy() * 255).astype("uint8")).save(
        folder / "a.jpg", quality=95)
    report = EvalLog()
    results = evaluate(["bicubic"], [str(folder)], ["clean"], ["psnr"], device="cpu",
                       save_images=tmp_path / "saved", report=report)
    assert len(results) == 1  # both images scored
    assert [line for line in report.failures if "not saved" in line and "another image" in line]
    assert (tmp_path / "saved" / "bicubic" / "coll" / "clean" / "a.png").is_file()


def test_blur_widths_are_used_exactly_and_only_their_spelling_is_shortened(tmp_path):
    from blindsr.degrade.presets import canonical

    assert [canonical(n) for n in ("iso1.30", "iso2.0", "iso.5", "iso1.234567")] == [
        "iso1.3", "iso2", "iso0.5", "iso1.234567"]
    folder = hr_folder(tmp_path, n=1)
    results = evaluate(["bicubic"], [str(folder)], ["iso1.234567", "iso1.23457"], ["psnr"],
                       device="cpu")
    assert [r.degradation for r in results] == ["iso1.234567", "iso1.23457"]  # two widths


def test_save_images_expands_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    evaluate(["bicubic"], [str(hr_folder(tmp_path, n=1))], ["clean"], ["psnr"], device="cpu",
             save_images="~/imgs")
    assert (tmp_path / "home" / "imgs" / "bicubic").is_dir() and not (tmp_path / "~").exists()
