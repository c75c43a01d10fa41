import os
import stat

import pytest

from blindsr import atomic
from blindsr.atomic import save_figure, write_atomic
from blindsr.errors import BlindSRError


def test_writes_text_and_bytes_and_makes_the_folder(tmp_path):
    target = tmp_path / "a" / "b" / "out.json"
    assert write_atomic(target, "héllo\n") == target
    assert target.read_bytes() == "héllo\n".encode()
    write_atomic(target, b"\x00\x01", durable=True)
    assert target.read_bytes() == b"\x00\x01"
    assert os.listdir(target.parent) == ["out.json"]  # no temporary file left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "table.csv"
    write_atomic(target, "old\n")

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full)
    with pytest.raises(BlindSRError, match=r"cannot write .*table.csv: No space left on device$"):
        write_atomic(target, "new\n")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["table.csv"]


def test_an_interrupt_mid_write_leaves_no_temporary(tmp_path, monkeypatch):
    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "m.safetensors", b"x", durable=True)
    assert os.listdir(tmp_path) == []


def test_folders_in_the_way_are_one_line_errors(tmp_path):
    (tmp_path / "dir.json").mkdir()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(BlindSRError, match="dir.json: it is a folder"):
        write_atomic(tmp_path / "dir.json", "{}")
    with pytest.raises(BlindSRError, match="a part of its folder is a file"):
        write_atomic(tmp_path / "afile" / "out.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "dir.json"]


def test_files_get_the_users_default_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        path = write_atomic(tmp_path / "f.txt", "x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600


def test_save_figure_uses_the_extension_format(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1, 1))
    try:
        png = save_figure(fig, tmp_path / "curves.png")
        pdf = save_figure(fig, tmp_path / "curves.PDF")
    finally:
        plt.close(fig)
    assert png.read_bytes().startswith(b"\x89PNG")
    assert pdf.read_bytes().startswith(b"%PDF")
