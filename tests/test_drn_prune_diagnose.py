"""benchmarks/drn_prune_diagnose.py on a tiny DRN: every variant, the refit, the random channels,
DR's channels with their own weights, and resuming."""

import itertools
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import load_benchmark
from test_compress_cli import _dual_run, images

from blindsr import archs
from blindsr.checkpoint import save_model
from blindsr.compress import dr
from blindsr.compress.dr import capture
from blindsr.compress.prune import prunable_layers, prune_channels
from blindsr.compress.search import uniform_widths
from blindsr.strategies.dual import DualModels

script = load_benchmark("drn_prune_diagnose")


@pytest.fixture
def files(tmp_path):
    torch.manual_seed(0)
    model = archs.build("drn", scale=4, num_block=1, num_feat=8)
    path = save_model(model, tmp_path / "drn.safetensors")
    run = _dual_run(tmp_path / "run", DualModels(4, num_feat=4, per_stage=True))
    return model, path, run, images(tmp_path / "hr", size=48), tmp_path


def _args(path, run, data, out, *more):
    return ["--model", str(path), "--duals", str(run), "--data", str(data), "--sets", str(data),
            "--finetune-steps", "2", "--select-batches", "1", "--per-round", "8", "--batch",
            "2", "--patch", "16", "--out", str(out), *more]


def test_every_variant_is_measured_before_and_after_the_fine_tuning(files):
    model, path, run, data, tmp = files
    assert script.main(_args(path, run, data, tmp / "diag")) == 0
    rows = json.loads((tmp / "diag.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == list(script.VARIANTS)
    full = sum(p.numel() for p in model.parameters())
    assert len({r["params"] for r in rows}) == 1 and rows[0]["params"] < full  # same widths
    for r in rows:
        assert r["before"]["hr/psnr"] != r["after"]["hr/psnr"]  # it was fine-tuned
    by = {r["variant"]: r for r in rows}
    assert by["l1-refit"]["before"] != by["l1"]["before"]  # the refit changed the weights
    table = (tmp / "diag.md").read_text()
    assert "| l1-refit |" in table and "before: hr" in table


def test_resume_keeps_the_variants_it_has_and_refuses_another_setup(files, monkeypatch):
    _, path, run, data, tmp = files
    assert script.main(_args(path, run, data, tmp / "d", "--variants", "l1")) == 0
    made = []
    real = script.run_variant
    monkeypatch.setattr(script, "run_variant",
                        lambda v, *a, **k: made.append(v) or real(v, *a, **k))
    assert script.main(_args(path, run, data, tmp / "d", "--variants", "l1,random",
                             "--resume")) == 0
    assert made == ["random"]
    assert len(json.loads((tmp / "d.json").read_text())["meta"]["commands"]) == 2
    with pytest.raises(SystemExit, match="another model or setup"):
        script.main(_args(path, run, data, tmp / "d", "--ratio", "0.3", "--resume"))
    made.clear()  # a run of other variants beside it joins it
    assert script.main(_args(path, run, data, tmp / "e", "--variants", "l1-refit")) == 0
    assert script.main(_args(path, run, data, tmp / "all", "--variants", "l1,random,l1-refit",
                             "--merge", str(tmp / "d.json"), str(tmp / "e.json"))) == 0
    assert made == ["l1-refit"]  # e's own run; the merge made nothing
    joined = json.loads((tmp / "all.json").read_text())
    assert [r["variant"] for r in joined["rows"]] == ["l1", "random", "l1-refit"]
    assert len(joined["meta"]["commands"]) == 4  # d's two, e's, and the merge


def test_random_keep_draws_the_uniform_widths_reproducibly():
    torch.manual_seed(0)
    model = archs.build("drn", scale=4, num_block=2, num_feat=16)
    widths = uniform_widths(model, 0.5, 1)
    keep = script.random_keep(model, widths, seed=3)
    assert keep == script.random_keep(model, widths, seed=3)
    assert keep != script.random_keep(model, widths, seed=4)
    for name, idx in keep.items():
        assert len(idx) == widths[name] == len(set(idx)) and idx == sorted(idx)


def test_the_refit_matches_the_original_layer_better_than_the_kept_weights():
    torch.manual_seed(0)
    model = archs.build("drn", scale=4, num_block=1, num_feat=16).eval()
    batches = [(torch.rand(4, 3, 12, 12), None) for _ in range(2)]
    layer = prunable_layers(model)[0]
    keep = {x.name: list(range(0, x.width, 2)) for x in prunable_layers(model)}
    refitted = script.refit_keep(model, keep, itertools.cycle(batches), 2)
    plain = prune_channels(model, keep)
    x = batches[0][0]
    target = capture(model, layer.consumer, x)
    err_refit = F.mse_loss(capture(refitted, layer.consumer, x), target)
    err_plain = F.mse_loss(capture(plain, layer.consumer, x), target)
    assert err_refit < 0.5 * err_plain


def test_dr_select_keeps_the_original_weights_of_the_channels_it_picks(files):
    model, _, run, data, _ = files
    args = script.parse_args(_args("m", run, data, "o"))
    from blindsr.compress.objective import DualObjective, load_duals
    from blindsr.compress.pipeline import make_batches

    select, _ = make_batches([str(data)], 4, 16, 2, 1, torch.device("cpu"))
    objective = DualObjective(load_duals(run, 4), 0.1)
    widths = uniform_widths(model, 0.5, 1)
    pruned = script.build("dr-select", model, widths, select, objective, args)
    for layer in prunable_layers(model):
        full = model.get_submodule(layer.consumer).weight
        kept = pruned.get_submodule(layer.consumer).weight
        assert kept.shape[1] == widths[layer.name]
        for c in range(kept.shape[1]):  # every kept column is one of the original columns
            assert any(torch.equal(kept[:, c], full[:, j]) for j in range(full.shape[1]))


def test_channel_stats_compare_the_kept_sets(files):
    """benchmarks/drn_channel_stats.py: per layer, the dr and l1 sets at the uniform widths,
    how many they share, and the activation statistics of each set."""
    model, path, run, data, tmp = files
    stats = load_benchmark("drn_channel_stats")
    assert stats.main(["--model", str(path), "--duals", str(run), "--data", str(data),
                       "--select-batches", "1", "--per-round", "8", "--batch", "2",
                       "--patch", "16", "--out", str(tmp / "stats")]) == 0
    rows = json.loads((tmp / "stats.json").read_text())["rows"]
    widths = uniform_widths(model, 0.5, 1)
    assert [r["layer"] for r in rows] == list(widths)
    for r in rows:
        assert len(r["dr"]) == len(r["l1"]) == r["kept"] == widths[r["layer"]]
        assert r["shared"] == len(set(r["dr"]) & set(r["l1"]))
        assert 0 <= r["active_dr"] <= 1 and 0 <= r["active_all"] <= 1
    # the activation statistics are those of the original network's consumer inputs
    x = torch.rand(2, 3, 8, 8)
    got = stats.activation_stats(model.eval(), x)
    layer = prunable_layers(model)[0]
    with torch.no_grad():
        a = dr.consumer_input(model, layer.consumer, x)
    assert torch.allclose(torch.tensor(got[layer.name]["active"]),
                          (a > 0).float().mean(dim=(0, 2, 3)))


def test_shorter_budgets_start_from_the_same_pruned_network(files):
    _, path, run, data, tmp = files
    assert script.main(_args(path, run, data, tmp / "one", "--variants", "l1,dr")) == 0
    assert script.main(_args(path, run, data, tmp / "two", "--variants", "l1,dr",
                             "--also-at", "1")) == 0
    one = json.loads((tmp / "one.json").read_text())["rows"]
    two = json.loads((tmp / "two.json").read_text())["rows"]
    for a, b in zip(one, two, strict=True):
        assert a["before"] == b["before"] and a["after"] == b["after"]  # the main run unchanged
        assert b["after_at"]["1"] not in (b["before"], b["after"])  # a fine-tuning of its own
    assert "after 1: hr" in (tmp / "two.md").read_text()
    with pytest.raises(SystemExit):
        script.main(_args(path, run, data, tmp / "bad", "--also-at", "2"))  # not shorter
