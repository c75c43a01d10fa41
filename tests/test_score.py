"""blindsr.score / `blindsr score`: existing images scored as `blindsr eval` scores them."""

import json

import numpy as np
import pytest
from PIL import Image

from blindsr.cli import main
from blindsr.errors import BlindSRError
from blindsr.evaluate import evaluate
from blindsr.score import match_references, score_files


def write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_outputs_score_the_same_numbers_as_eval(shared, tmp_path):
    set5 = shared / "datasets" / "Set5" / "x4"
    hr_dir, out_dir = set5 / "HR", tmp_path / "out"
    assert main(["upscale", str(set5 / "LR"), "-o", str(out_dir), "--model", "bicubic",
                 "--suffix", "_out", "-q"]) == 0
    report = score_files([str(out_dir)], str(hr_dir), ["psnr", "ssim"], crop_border=4,
                         strip_suffix="_out")
    assert len(report.images) == 5 and not report.failures
    table = {r.metric: r.value for r in evaluate(["bicubic"], "Set5", "clean", ["psnr", "ssim"])}
    for metric, value in report.means().items():
        assert value == pytest.approx(table[metric], abs=1e-4)  # float sums aside


def test_a_shared_sets_name_is_its_hr_for_the_scale(shared, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BLINDSR_DATA", str(shared / "datasets"))
    set5 = shared / "datasets" / "Set5"
    assert main(["upscale", str(set5 / "x3" / "LR"), "-o", str(tmp_path / "out"), "--model",
                 "bicubic", "-q", "--outscale", "3"]) == 0
    by_name = score_files([str(tmp_path / "out")], "set5", ["psnr"], 3, scale=3)
    by_path = score_files([str(tmp_path / "out")], str(set5 / "x3" / "HR"), ["psnr"], 3)
    assert len(by_name.images) == 5 and by_name.means() == by_path.means()
    # one path and a comma list, as on the command line; Path objects too
    assert score_files(tmp_path / "out", set5 / "x3" / "HR", "psnr", 3).means() == \
        by_path.means()
    two = score_files([str(tmp_path / "out")], "Set5[:2]", ["psnr"], 3, scale=3)
    assert len(two.images) == 2 and len(two.failures) == 3  # the others have no reference
    assert main(["score", str(tmp_path / "out"), "--ref", "Set5"]) == 1  # x4 HR: other sizes
    assert "output is 510x510, reference 512x512" in capsys.readouterr().err
    with pytest.raises(BlindSRError, match="--ref RealSRSet: RealSRSet has LR images only"):
        score_files([str(tmp_path / "out")], "RealSRSet", ["psnr"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "Set5").mkdir()  # the name still means the shared set, as in eval --data ...
    assert score_files([str(tmp_path / "out")], "Set5", ["psnr"], 3, scale=3).means() == \
        by_name.means()
    with pytest.raises(BlindSRError, match="Set5: folder has no .png"):  # ... ./Set5 the folder
        score_files([str(tmp_path / "out")], "./Set5", ["psnr"])


def test_the_command_writes_json_csv_and_markdown(tmp_path, capsys):
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    noisy = np.clip(ref.astype(int) + rng.integers(-8, 9, ref.shape), 0, 255).astype(np.uint8)
    write(tmp_path / "ref" / "a.png", ref)
    write(tmp_path / "out" / "a_x4.png", noisy)
    rc = main(["score", str(tmp_path / "out"), "--ref", str(tmp_path / "ref"), "--strip-suffix",
               "_x4", "--metrics", "psnr", "-o", str(tmp_path / "res" / "scores.json")])
    assert rc == 0  # named as eval names its files: scores.json, scores.csv, scores.md
    data = json.loads((tmp_path / "res" / "scores.json").read_text())
    assert data["failures"] == [] and 20 < data["mean"]["psnr"] < 40
    assert (tmp_path / "res" / "scores.csv").read_text().startswith("image,psnr")
    assert "**mean of 1**" in capsys.readouterr().out


def test_gray_references_and_modcropped_outputs(tmp_path):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (22, 18), dtype=np.uint8)
    write(tmp_path / "ref" / "g.png", gray)
    out = np.repeat(gray[:20, :16, None], 3, axis=2)  # RGB copy of the modcropped image
    write(tmp_path / "out" / "g.png", out)
    report = score_files([str(tmp_path / "out")], str(tmp_path / "ref"), ["psnr"])
    assert "output is 16x20, reference 18x22 (--crop-ref" in report.failures[0]
    report = score_files([str(tmp_path / "out")], str(tmp_path / "ref"), ["psnr", "ssim"],
                         crop_ref=True)
    scores = report.images[str(tmp_path / "out" / "g.png")]
    assert scores["psnr"] == float("inf") or scores["psnr"] > 99
    assert scores["ssim"] == pytest.approx(1.0)


def test_unmatched_and_bad_inputs(tmp_path, capsys):
    for path in ("ref/a.png", "out/a.png", "out/b.png"):
        write(tmp_path / path, np.full((16, 16, 3), 100, np.uint8))
    pairs, missing = match_references([tmp_path / "out" / "a.png", tmp_path / "out" / "b.png"],
                                      [tmp_path / "ref" / "a.png"])
    assert [o.name for o, _ in pairs] == ["a.png"] and "no reference named b" in missing[0]
    rc = main(["score", str(tmp_path / "out"), "--ref", str(tmp_path / "ref")])
    captured = capsys.readouterr()
    assert rc == 1 and "no reference named b" in captured.err and "a.png" in captured.out
    assert main(["score", str(tmp_path / "out"), "--metrics", "psnr,ssim"]) == 1
    assert "psnr, ssim compare with references: give --ref" in capsys.readouterr().err
    assert main(["score", str(tmp_path / "out"), "--ref", str(tmp_path / "none")]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_a_reference_of_another_scale_is_refused_even_with_crop_ref(tmp_path):
    write(tmp_path / "ref" / "a.png", np.zeros((64, 64, 3), np.uint8))
    write(tmp_path / "out" / "a.png", np.zeros((32, 32, 3), np.uint8))
    report = score_files([str(tmp_path / "out")], str(tmp_path / "ref"), ["psnr"], crop_ref=True)
    assert report.images == {} and "not the same scale?" in report.failures[0]


def test_every_reason_is_reported_when_nothing_can_be_scored(tmp_path, capsys):
    write(tmp_path / "ref" / "a.png", np.zeros((64, 64, 3), np.uint8))
    write(tmp_path / "out" / "a.png", np.zeros((32, 32, 3), np.uint8))
    write(tmp_path / "out" / "b.png", np.zeros((32, 32, 3), np.uint8))
    assert main(["score", str(tmp_path / "out"), "--ref", str(tmp_path / "ref")]) == 1
    err = capsys.readouterr().err
    assert "output is 32x32, reference 64x64" in err and "no reference named b" in err
    assert "no image could be scored (2 failed, above)" in err


def test_duplicate_reference_names_matter_only_to_the_outputs_they_match(tmp_path):
    for name in ("ref/a.png", "ref/a.jpg", "ref/b.png", "out/a.png", "out/b.png"):
        write(tmp_path / name, np.full((16, 16, 3), 90, np.uint8))
    report = score_files([str(tmp_path / "out")], str(tmp_path / "ref"), ["psnr"])
    assert list(report.images) == [str(tmp_path / "out" / "b.png")]
    assert "2 references named a.* (a.jpg, a.png): keep one" in report.failures[0]


def test_an_output_folder_in_the_way_is_refused_before_scoring(tmp_path, capsys):
    write(tmp_path / "ref" / "a.png", np.full((16, 16, 3), 90, np.uint8))
    write(tmp_path / "out" / "a.png", np.full((16, 16, 3), 90, np.uint8))
    (tmp_path / "res.csv").mkdir()
    assert main(["score", str(tmp_path / "out"), "--ref", str(tmp_path / "ref"),
                 "-o", str(tmp_path / "res")]) == 1
    captured = capsys.readouterr()
    assert "res.csv is a folder" in captured.err and captured.out == ""


def test_command_defaults_follow_eval_and_the_references(shared, tmp_path, monkeypatch,
                                                           capsys):
    monkeypatch.setenv("BLINDSR_DATA", str(shared / "datasets"))
    set5 = shared / "datasets" / "Set5" / "x4"
    assert main(["upscale", str(set5 / "LR" / "img_001.png"), "-o", str(tmp_path / "out"),
                 "--model", "bicubic", "-q"]) == 0
    capsys.readouterr()
    # a shared set by name: eval's border (the scale) and metrics, unless told otherwise
    for extra, border in [([], 4), (["--crop-border", "0"], 0)]:
        assert main(["score", str(tmp_path / "out"), "--ref", "Set5", "-o",
                     str(tmp_path / f"s{border}.json"), *extra]) == 0
        data = json.loads((tmp_path / f"s{border}.json").read_text())
        assert data["meta"]["crop_border"] == border and set(data["mean"]) == {"psnr", "ssim"}
        want = score_files(tmp_path / "out", set5 / "HR", "psnr,ssim", border)
        assert data["mean"] == pytest.approx(want.means())
    # a folder of references: no border unless asked (its scale is unknown)
    assert main(["score", str(tmp_path / "out"), "--ref", str(set5 / "HR"), "-o",
                 str(tmp_path / "folder.json")]) == 0
    assert json.loads((tmp_path / "folder.json").read_text())["meta"]["crop_border"] == 0
    # no references: NIQE
    assert main(["score", str(tmp_path / "out")]) == 0
    assert "| image | niqe |" in capsys.readouterr().out
    # the Python API has the same defaults
    api = score_files(tmp_path / "out", "Set5")
    assert api.crop_border == 4 and api.means() == pytest.approx(
        json.loads((tmp_path / "s4.json").read_text())["mean"])
    assert score_files(tmp_path / "out").metrics == ["niqe"]
    assert score_files(tmp_path / "out", set5 / "HR").crop_border == 0


def test_a_reference_smaller_than_the_output_is_named_as_such(tmp_path):
    write(tmp_path / "ref" / "a.png", np.zeros((90, 90, 3), np.uint8))
    write(tmp_path / "out" / "a.png", np.zeros((96, 96, 3), np.uint8))
    report = score_files([str(tmp_path / "out")], str(tmp_path / "ref"), ["psnr"])
    assert "the reference is the smaller one" in report.failures[0]


def test_a_shared_name_wins_over_a_same_named_folder_as_in_eval(tmp_path, monkeypatch):
    from blindsr.score import names_shared_set

    monkeypatch.chdir(tmp_path)
    (tmp_path / "Set5").mkdir()
    assert names_shared_set("Set5") and names_shared_set("set14[:2]")
    assert not names_shared_set("./Set5") and not names_shared_set(str(tmp_path / "Set5"))


def test_out_under_the_home_folder_is_written_there(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "ref" / "a.png", np.zeros((16, 16, 3), np.uint8))
    write(tmp_path / "out" / "a.png", np.ones((16, 16, 3), np.uint8))
    assert main(["score", str(tmp_path / "out"), "--ref", str(tmp_path / "ref"), "-o",
                 "~/sub/x"]) == 0
    assert (tmp_path / "home" / "sub" / "x.json").is_file() and not (tmp_path / "~").exists()
