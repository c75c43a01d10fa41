from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blindsr.errors import BlindSRError
from blindsr.files import check_ext, check_output, output_path, process_files


def test_output_path_names_a_file_only_for_a_single_input():
    out = Path("out")
    assert output_path(Path("in/a.png"), Path("b.jpg"), single=True) == Path("b.jpg")
    assert output_path(Path("in/a.png"), out, single=False, suffix="_x4") == out / "a_x4.png"
    assert output_path(Path("in/a.png"), out, single=False, ext="webp") == out / "a.webp"
    # a format that can be read but not written falls back to PNG
    assert output_path(Path("in/a.gif"), out, single=False) == out / "a.png"


@pytest.mark.parametrize("output,single,message", [
    ("out.gif", True, "cannot write .gif images"),
    ("two.png", False, "names one file but there are several inputs"),
])
def test_check_output_refuses_a_file_name_that_cannot_be_honoured(output, single, message):
    with pytest.raises(BlindSRError, match=message):
        check_output(Path(output), single)


def test_an_output_that_cannot_be_created_stops_the_run_before_any_work(tmp_path):
    (tmp_path / "taken").write_text("a file")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    calls = []

    def job(image, advance):
        calls.append(image)
        return image

    with pytest.raises(BlindSRError, match="-o folder .*taken exists and is not a folder"):
        process_files([str(tmp_path / "a.png")], tmp_path / "taken", job)
    with pytest.raises(BlindSRError, match="cannot create -o file .*: a part of it is a file"):
        process_files([str(tmp_path / "a.png")], tmp_path / "taken" / "b.png", job)
    assert calls == []
    process_files([str(tmp_path / "a.png")], tmp_path / "new" / "deep", job, progress=False)
    assert calls and (tmp_path / "new" / "deep" / "a.png").is_file()


def test_check_output_and_ext_accept_folders_and_matching_files(tmp_path):
    for output, ext in [("out.jpeg", "jpg"), ("out.tiff", "tif"), ("results", "png"),
                        ("run.v2", "auto"), ("out.jpg", "auto")]:
        check_output(Path(output), single=True)
        check_ext(Path(output), ext)
    (tmp_path / "shots.png").mkdir()  # a folder may have a file-like name
    check_output(tmp_path / "shots.png", single=False)
    check_ext(tmp_path / "shots.png", "jpg")
    assert output_path(Path("a.png"), tmp_path / "shots.png", single=True) == (
        tmp_path / "shots.png" / "a.png")
    with pytest.raises(BlindSRError, match="is a .jpg file but --ext asks for png"):
        check_ext(Path("out.jpg"), "png")


def test_an_output_that_is_another_input_is_never_written(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "a.png", "b.png", "b_x.png"):
        Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).save(tmp_path / name)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    report = process_files([str(tmp_path)], tmp_path, lambda image, advance: image, ext="png",
                           suffix="", progress=False)
    assert report.written == [] and len(report.failures) == 4
    report = process_files([str(tmp_path)], tmp_path, lambda image, advance: image, ext="png",
                           suffix="_x", progress=False)
    assert {p.name for p in report.written} == {"a_x.png", "b_x_x.png"}
    assert any("overwrite the input" in f and "b_x.png" in f for f in report.failures)
    assert all(before[name] == (tmp_path / name).read_bytes() for name in before)


def test_two_inputs_with_one_output_name_write_one_and_report_the_other(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a.png", "a.jpg"):
        Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).save(tmp_path / name)
    report = process_files([str(tmp_path / "a.png"), str(tmp_path / "a.jpg")],
                           tmp_path / "out", lambda image, advance: image, ext="png",
                           progress=False)
    assert [p.name for p in report.written] == ["a.png"]
    assert len(report.failures) == 1 and "was written from" in report.failures[0]
    assert "a.jpg" in report.failures[0]


def test_a_failing_job_is_reported_with_its_file_and_the_rest_go_on(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray((rng.random((8, 8, 3)) * 255).astype(np.uint8)).save(tmp_path / name)
    calls = []

    def job(image, advance):
        calls.append(image)
        if len(calls) == 1:
            raise BlindSRError("too large")
        return image

    report = process_files([str(tmp_path)], tmp_path / "out", job, progress=False)
    assert [p.name for p in report.written] == ["b.png"]
    assert report.failures == [f"{tmp_path / 'a.png'}: too large"]
    calls.clear()

    def named_job(image, advance):  # a message that names its file is not prefixed again
        raise BlindSRError(f"{image.path}: too small")

    report = process_files([str(tmp_path / "a.png")], tmp_path / "out", named_job,
                           progress=False)
    assert report.failures == [f"{tmp_path / 'a.png'}: too small"]


@pytest.mark.parametrize("suffix", ["/sub/x", "../../up", "a\\b"])
def test_a_suffix_with_a_path_separator_is_refused_before_any_work(tmp_path, suffix):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    with pytest.raises(BlindSRError, match="cannot hold a path separator"):
        process_files([str(tmp_path / "a.png")], tmp_path / "out", lambda image, advance: image,
                      suffix=suffix, progress=False)
    assert not (tmp_path / "out").exists()


def test_a_bad_pixel_limit_in_the_environment_is_one_error_for_the_run(tmp_path, monkeypatch):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (4, 4)).save(tmp_path / name)
    monkeypatch.setenv("BLINDSR_MAX_PIXELS", "abc")
    with pytest.raises(BlindSRError, match="BLINDSR_MAX_PIXELS='abc' is not a whole number"):
        process_files([str(tmp_path)], tmp_path / "out", lambda image, advance: image,
                      progress=False)


def test_a_colour_profile_survives_the_job(tmp_path):
    from blindsr.inference import upscale_files

    profile = b"\0" * 16 + b"RGB " + bytes(108)
    Image.new("RGB", (6, 6), "red").save(tmp_path / "a.jpg", icc_profile=profile)
    report = upscale_files([str(tmp_path / "a.jpg")], tmp_path / "out", "bicubic",
                           progress=False)
    with Image.open(report.written[0]) as out:
        assert out.size == (24, 24) and out.info.get("icc_profile") == profile
