"""``scripts/ship_model.py``: model cards for run folders and for pruned checkpoints."""

import sys

import pytest
import torch
from conftest import load_benchmark

import blindsr
from blindsr import archs
from blindsr.checkpoint import save_model
from blindsr.compress.pipeline import checkpoint_summary
from blindsr.compress.prune import prune_channels


@pytest.fixture
def ship(tmp_path, monkeypatch):
    script = load_benchmark("ship_model", folder="scripts")
    monkeypatch.setattr(script, "WEIGHTS_DIR", tmp_path / "weights")
    (tmp_path / "weights").mkdir()
    return script


def _run(script, monkeypatch, *argv):
    monkeypatch.setattr(sys, "argv", ["ship_model.py", *argv])
    script.main()


def test_a_pruned_checkpoint_ships_with_its_compression_and_source(ship, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = archs.build("drn", scale=4, num_block=1, num_feat=4)
    training = {"config": "drn_s_cpu", "strategy": "dual", "iterations": 7, "data": ["T91"]}
    source = save_model(model, tmp_path / "drn.safetensors", training)
    pruned = prune_channels(model, {"up.0.blocks.0": [0, 2], "up.1.blocks.0": [1, 3]})
    report = {"method": "dr", "ratio": 0.3, "channels_removed": 0.25, "params_before": 1000,
              "params_after": 900, "params_removed": 0.1, "block_widths": [2, 2],
              "up_widths": [4, 4], "source": str(source), "duals": "runs/x"}
    path = save_model(pruned, tmp_path / "pruned.safetensors", checkpoint_summary(report))
    _run(ship, monkeypatch, str(path), "--name", "drn-tiny30", "--summary", "a tiny pruned DRN")
    shipped = tmp_path / "weights" / "drn-tiny30.safetensors"
    card = shipped.with_suffix(".md").read_text()
    assert "channel number search + dual regression channel pruning" in card
    assert "| pruning ratio | 0.3 (25.0% of the prunable channels removed) |" in card
    assert f"| compressed from | `{source}` (dual models: runs/x) |" in card
    assert "| strategy | `dual` |" in card and "| iterations | 7 " in card  # the source's training
    assert blindsr.load_model(shipped).block_widths == [2, 2]


def test_a_run_folder_card_and_a_missing_source(ship, tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    model = archs.build("srresnet", num_feat=4, num_block=1, scale=4)
    save_model(model, run / "model.safetensors", {"strategy": "plain", "iterations": 3})
    (run / "config.yaml").write_text("name: run\n")
    _run(ship, monkeypatch, str(run), "--name", "tiny", "--summary", "tiny")
    card = (tmp_path / "weights" / "tiny.md").read_text()
    assert "| strategy | `plain` |" in card and "## Training config (resolved)" in card
    assert "compressed" not in card
    assert "## Using it" in card and "--model tiny+" in card and "--int8" in card
    notes = tmp_path / "notes.md"
    notes.write_text("## Choices\n\nthe renderer's code is sigma\n")
    amnet = run / "amnet"
    amnet.mkdir()
    save_model(archs.build("amnet", num_feat=4, num_block=1, scale=4, predictor_feat=4,
                           am_hidden=4), amnet / "model.safetensors", {"strategy": "amnet"})
    _run(ship, monkeypatch, str(amnet), "--name", "tiny-am", "--summary", "s", "--notes",
         str(notes))
    card = (tmp_path / "weights" / "tiny-am.md").read_text()
    assert "no --int8" in card and "## Choices" in card and "--model tiny-am --blur 2.0" in card
    assert "| degradation | made by the strategy itself (`amnet`; see below) |" in card
    assert card.index("## Using it") < card.index("## Choices")
    with pytest.raises(SystemExit, match="not found"):
        _run(ship, monkeypatch, str(tmp_path / "gone.safetensors"), "--name", "x",
             "--summary", "x")


def test_every_shipped_card_says_how_to_use_its_model():
    from blindsr.shipped import shipped_models

    for name, model in shipped_models().items():
        assert f"blindsr upscale photo.jpg --model {name}+" in model.card_text(), name
