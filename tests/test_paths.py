import pytest

from blindsr.errors import BlindSRError
from blindsr.paths import prepare_output, require_file


def test_require_file_names_a_folder_and_a_missing_file(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    assert require_file(tmp_path / "a.txt", "config") == tmp_path / "a.txt"
    with pytest.raises(BlindSRError, match=r"^config .* is a folder, not a file$"):
        require_file(tmp_path, "config")
    with pytest.raises(BlindSRError, match=r"^config not found: .*b.txt$"):
        require_file(tmp_path / "b.txt", "config")


def test_prepare_output_probes_the_folder_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "deep" / "er" / "out.safetensors"
    assert prepare_output(target, "output file") == target
    assert list(tmp_path.iterdir()) == []  # the folders it made to try are gone again
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "old.txt").write_text("kept")
    prepare_output(tmp_path / "run", "run folder", folder=True)
    prepare_output(tmp_path / "run" / "new", "run folder", folder=True)
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["old.txt"]


@pytest.mark.parametrize("relative,folder,message", [
    ("afile/out.png", False, "a part of it is a file"),
    ("afile/x/out.png", False, "a part of it is a file"),
    ("afile", True, "exists and is not a folder"),
    ("adir", False, "is a folder, not a file"),
])
def test_prepare_output_refuses_in_one_line(tmp_path, relative, folder, message):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    with pytest.raises(BlindSRError, match=message) as err:
        prepare_output(tmp_path / relative, "output", folder=folder)
    assert "\n" not in str(err.value)


def test_result_paths_append_the_extensions_and_refuse_folders(tmp_path):
    from blindsr.paths import result_paths

    assert [p.name for p in result_paths(tmp_path / "v1.2")] == ["v1.2.json", "v1.2.csv",
                                                                 "v1.2.md"]
    assert result_paths(tmp_path / "run.MD")[0] == tmp_path / "run.json"
    for bad in ("", ".", "..", "res/", str(tmp_path)):
        with pytest.raises(BlindSRError, match="give a file stem"):
            result_paths(bad)
