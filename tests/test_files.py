from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blindsr.errors import BlindSRError
from blindsr.files import check_output, output_path, process_files


def test_output_path_names_a_file_only_for_a_single_input():
    out = Path("out")
    assert output_path(Path("in/a.png"), Path("b.jpg"), single=True) == Path("b.jpg")
    assert output_path(Path("in/a.png"), out, single=False, suffix="_x4") == out / "a_x4.png"
    assert output_path(Path("in/a.png"), out, single=False, ext="webp") == out / "a.webp"
    # a format that can be read but not written falls back to PNG
    assert output_path(Path("in/a.gif"), out, single=False) == out / "a.png"


@pytest.mark.parametrize("output,single,ext,message", [
    ("out.gif", True, "auto", "cannot write .gif images"),
    ("two.png", False, "auto", "names one file but there are several inputs"),
    ("out.jpg", True, "png", "is a .jpg file but --ext asks for png"),
])
def test_check_output_refuses_a_file_name_that_cannot_be_honoured(output, single, ext,
                                                                  message):
    with pytest.raises(BlindSRError, match=message):
        check_output(Path(output), single, ext)


@pytest.mark.parametrize("output,single,ext", [
    ("out.jpeg", True, "jpg"), ("out.tiff", True, "tif"), ("results", False, "png"),
    ("run.v2", False, "auto"),
])
def test_check_output_accepts_folders_and_matching_files(output, single, ext):
    check_output(Path(output), single, ext)


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
