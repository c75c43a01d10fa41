import json

import pytest
from PIL import Image

from blindsr.cli import main
from blindsr.errors import BlindSRError
from blindsr.plot import plot_run, read_metrics, series


def write_metrics(run, rows, tail=""):
    run.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows) + tail
    (run / "metrics.jsonl").write_text(text)


ROWS = [
    {"step": 10, "time": 1.0, "it_s": 5.0, "train/l_l1": 0.2, "lr/generator": 2e-4},
    {"step": 20, "time": 2.0, "it_s": 5.0, "train/l_l1": 0.1, "lr/generator": 1e-4},
    {"step": 20, "val/Set5/clean/psnr": 28.0, "val/Set5/clean/ssim": 0.8, "val/mean_psnr": 28.0},
    {"step": 21, "event": "nonfinite_skipped", "consecutive": 1},
]


def test_series_skips_cut_lines_and_non_numbers(tmp_path):
    write_metrics(tmp_path, ROWS, tail='{"step": 30, "train/l_')  # a line cut by a kill
    data = series(read_metrics(tmp_path / "metrics.jsonl"))
    assert data["train/l_l1"] == ([10, 20], [0.2, 0.1])
    assert data["val/Set5/clean/psnr"] == ([20], [28.0])
    assert "event" not in data and "time" not in data and "it_s" not in data


def test_plot_writes_a_png_with_one_panel_per_kind(tmp_path):
    write_metrics(tmp_path / "run", ROWS)
    out = plot_run(tmp_path / "run")
    assert out == tmp_path / "run" / "curves.png"
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (800, 1200)  # 4 panels of 8x3 in at 100 dpi
    write_metrics(tmp_path / "short", ROWS[:2])
    with Image.open(plot_run(tmp_path / "short", tmp_path / "x" / "c.png")) as img:
        assert img.size == (800, 600)  # losses and lr only


def test_plot_cli_and_errors(tmp_path, capsys):
    write_metrics(tmp_path / "run", ROWS)
    assert main(["plot", str(tmp_path / "run"), "-o", str(tmp_path / "o.png")]) == 0
    assert (tmp_path / "o.png").is_file() and "o.png" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "nothing")]) == 1
    assert "no metrics file" in capsys.readouterr().err
    write_metrics(tmp_path / "empty", [{"step": 1, "event": "x"}])
    with pytest.raises(BlindSRError, match="nothing to plot"):
        plot_run(tmp_path / "empty")
    (tmp_path / "bad.jsonl").write_text("step,loss\n1,0.5\n")  # a CSV by mistake
    assert main(["plot", str(tmp_path / "bad.jsonl")]) == 1
    assert "not a metrics file (none of its 2 lines is a JSON object with a step)" in \
        capsys.readouterr().err
    (tmp_path / "binary.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BlindSRError, match="cannot read it as text"):
        plot_run(tmp_path / "binary.jsonl")


def test_plot_takes_the_metrics_file_and_refuses_bad_outputs_in_one_line(tmp_path, capsys):
    write_metrics(tmp_path / "run", ROWS)
    metrics = str(tmp_path / "run" / "metrics.jsonl")
    assert main(["plot", metrics, "-o", str(tmp_path / "c.svg")]) == 0
    assert (tmp_path / "c.svg").read_text().lstrip().startswith("<?xml")
    capsys.readouterr()
    (tmp_path / "afile").write_text("x")
    for out, message in [("c.txt", "not an image format"), ("afile/c.png", "cannot create")]:
        assert main(["plot", metrics, "-o", str(tmp_path / out)]) == 1
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_a_metrics_file_of_any_name_is_plotted_beside_itself(tmp_path, capsys):
    write_metrics(tmp_path / "run", ROWS)
    copy = tmp_path / "saved" / "run1.jsonl"
    copy.parent.mkdir()
    copy.write_text((tmp_path / "run" / "metrics.jsonl").read_text())
    assert main(["plot", str(copy)]) == 0
    assert (tmp_path / "saved" / "curves.png").is_file()
    (tmp_path / "picture.png").write_bytes(b"\x89PNG")
    assert main(["plot", str(tmp_path / "picture.png")]) == 1
    assert "not a run folder or a metrics file" in capsys.readouterr().err
