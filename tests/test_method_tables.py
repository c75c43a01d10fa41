"""benchmarks/method_tables.py: the comparison table of one method group from its run folders."""

import json

import torch
from conftest import load_benchmark

from blindsr import archs
from blindsr.checkpoint import save_model


def load_script():
    return load_benchmark("method_tables")


def test_table_counts_the_cells_where_the_method_beats_the_baseline(shared, tmp_path,
                                                                     monkeypatch, capsys):
    monkeypatch.setenv("BLINDSR_DATA", str(shared / "datasets"))
    script = load_script()
    _, runs, _ = script.GROUPS["eats"]
    for label, seed in (("Original", 0), ("EATS", 1)):  # the others are missing
        torch.manual_seed(seed)
        net = archs.build("srresnet", num_feat=4, num_block=1, scale=4)
        (tmp_path / runs[label]).mkdir()
        save_model(net, tmp_path / runs[label] / "model.safetensors")
    out = tmp_path / "table"
    assert script.main(["eats", "--runs-dir", str(tmp_path), "--max-images", "1",
                        "--out", str(out)]) == 0
    assert "missing (left out): Dropout" in capsys.readouterr().err
    data = json.loads(out.with_suffix(".json").read_text())
    psnr = {(r["model"], r["dataset"], r["degradation"]): r["value"]
            for r in data["results"] if r["metric"] == "psnr"}
    assert {m for m, _, _ in psnr} == {"Original", "EATS"}
    assert any(r["metric"] == "niqe" and r["dataset"] == "RealSRSet" for r in data["results"])
    for dataset in ("Set5", "Set14"):
        won = data["meta"]["wins_psnr"][dataset]
        assert len(won["beats"]) + len(won["loses"]) == 8
        for deg in won["beats"]:
            assert psnr[("EATS", dataset, deg)] > psnr[("Original", dataset, deg)]
        for deg in won["loses"]:
            assert psnr[("EATS", dataset, deg)] <= psnr[("Original", dataset, deg)]
    assert out.with_suffix(".md").is_file() and out.with_suffix(".csv").is_file()


def test_a_group_without_its_baseline_is_an_error(tmp_path, capsys):
    assert load_script().main(["and", "--runs-dir", str(tmp_path)]) == 1
    assert "classical and ANDNet are both needed" in capsys.readouterr().err


def test_merge_keeps_the_rows_of_runs_gone_since(shared, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BLINDSR_DATA", str(shared / "datasets"))
    script = load_script()
    _, runs, _ = script.GROUPS["eats"]

    def trained(label, seed):
        torch.manual_seed(seed)
        (tmp_path / runs[label]).mkdir()
        save_model(archs.build("srresnet", num_feat=4, num_block=1, scale=4),
                   tmp_path / runs[label] / "model.safetensors")

    out = tmp_path / "table"
    args = ["eats", "--runs-dir", str(tmp_path), "--max-images", "1", "--out", str(out)]
    trained("Original", 0), trained("EATS", 1)
    assert script.main(args) == 0
    first = json.loads(out.with_suffix(".json").read_text())
    (tmp_path / runs["Original"] / "model.safetensors").unlink()  # the run folder is gone
    trained("Dropout", 2)
    assert script.main(args) == 1  # without --merge the baseline is missing
    assert script.main([*args, "--merge"]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    assert list(dict.fromkeys(r["model"] for r in data["results"])) == [
        "Original", "Dropout", "EATS"]
    original = [r for r in data["results"] if r["model"] == "Original"]
    assert original == [r for r in first["results"] if r["model"] == "Original"]
    assert set(data["meta"]["carried"]) == {"Original"}
    assert data["meta"]["carried"]["Original"]["command"] == first["meta"]["command"]
    assert not any(m.startswith("Original") for m in data["meta"]["missing"])
    # merged again: the carried rows keep naming the run that made them
    (tmp_path / runs["Dropout"] / "model.safetensors").unlink()
    assert script.main([*args, "--merge"]) == 0
    again = json.loads(out.with_suffix(".json").read_text())
    assert again["meta"]["carried"]["Original"]["command"] == first["meta"]["command"]
    assert set(again["meta"]["carried"]) == {"Original", "Dropout"}
    # rows from a table of another size do not mix
    capsys.readouterr()
    other = ["eats", "--runs-dir", str(tmp_path), "--max-images", "2", "--out", str(out)]
    assert script.main([*other, "--merge"]) == 1
    assert "made with --max-images 1, not 2" in capsys.readouterr().err


def test_earlier_rows_read_back_infinite_values_and_dotted_stems(tmp_path):
    from blindsr.evaluate import Result, write_results
    from blindsr.paths import result_paths

    script = load_script()
    out = tmp_path / "eats_table_v1.2"
    write_results([Result("eats", "Set5", "clean", "psnr", float("inf"))], out,
                  {"max_images": None})
    rows, _ = script.earlier_rows(result_paths(out)[0], ["eats"], None)
    assert rows[0].value == float("inf") and isinstance(rows[0].value, float)
