"""``blindsr compress`` end to end on a tiny DRN, its errors, the pruned checkpoint in load_model /
upscale / eval, and the benchmark script on tiny budgets."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_benchmark
from PIL import Image

import blindsr
from blindsr import archs, cli
from blindsr.checkpoint import read_checkpoint, save_model
from blindsr.compress.objective import load_duals
from blindsr.compress.prune import layer_widths
from blindsr.evaluate import evaluate
from blindsr.strategies.dual import DualModels
from blindsr.train_state import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--search-steps", "2", "--finetune-steps", "2", "--dual-steps", "1", "--batch", "2",
        "--patch", "16", "--multiple", "1", "--per-round", "16", "--device", "cpu", "-q"]


def images(folder: Path, n: int = 3, size: int = 32) -> Path:
    folder.mkdir(parents=True)
    g = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        base = np.stack([np.sin(3 * xx + i), np.cos(2 * yy - i), xx * yy], -1)
        img = (base * 0.4 + 0.5 + g.normal(0, 0.02, base.shape)).clip(0, 1)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    model = archs.build("drn", scale=4, num_block=1, num_feat=4)
    path = save_model(model, tmp_path / "drn.safetensors")
    return path, images(tmp_path / "hr"), tmp_path


@pytest.mark.parametrize("method, decode", [("dr", "budget"), ("dr", "argmax"),
                                            ("l1", "budget")])
def test_compress_end_to_end(setup, method, decode, capsys):
    path, data, tmp = setup
    out = tmp / f"pruned_{method}.safetensors"
    rc = cli.main(["compress", "--model", str(path), "--data", str(data), "--ratio", "0.3",
                   "--method", method, "--decode", decode, *FAST, "-o", str(out)])
    assert rc == 0
    assert "params" in capsys.readouterr().err
    report = json.loads(out.with_suffix(".json").read_text())
    model = blindsr.load_model(out)
    assert model.arch_name == "drn"
    assert model.block_widths == report["block_widths"] and model.up_widths == report["up_widths"]
    assert report["params_after"] < report["params_before"]
    assert (report["search"] is not None) == (method == "dr")
    assert report["settings"]["decode"] == decode
    if decode == "budget":  # 64 channels, 0.3 removed: floor(44.8) = 44 kept
        assert report["channels_after"] == 44
    if method == "l1":
        assert sorted(report["widths"].values()) == [11, 11, 11, 11]  # +0 left: 44 = 4 x 11
    else:  # the pruned model has exactly the searched widths
        searched = report["search"]["widths"]
        assert layer_widths(model) == report["widths"] == searched
    if decode == "argmax":  # each one of its candidates: at least the ratio removed
        assert all(w in report["search"]["candidates"][k] for k, w in searched.items())
        assert report["channels_removed"] >= 0.3
    _, meta = read_checkpoint(out)
    summary = json.loads(meta["summary"])["compress"]
    assert summary["ratio"] == 0.3 and summary["params_after"] == report["params_after"]
    # the pruned file works like any model: upscale and eval
    image = (np.random.default_rng(1).random((10, 12, 3)) * 255).astype(np.uint8)
    assert blindsr.upscale(image, model=str(out), device="cpu").shape == (40, 48, 3)
    results = evaluate(models={"p": str(out)}, datasets=[str(data)], scale=4, device="cpu")
    assert {r.metric for r in results} == {"psnr", "ssim"}
    assert all(np.isfinite(r.value) for r in results)


@pytest.mark.parametrize("change, message", [
    ({"--ratio": "1.5"}, "ratio must be a number in (0, 1)"),
    ({"--model": "srresnet"}, "DRN models only, got srresnet"),
    ({"-o": "out.pth"}, "must end in .safetensors"),
    ({"--model": "missing.safetensors"}, "checkpoint not found"),
    ({"--data": "no/such/folder"}, "not found"),
    ({"--batch": "0"}, "batch must be >= 1"),
    ({"--lam": "nan"}, "lam must be a finite number, got nan"),
    ({"--alpha-lr": "inf"}, "alpha_lr must be a finite number, got inf"),
    ({"--model": "nan"}, "the model has non-finite weights (head.weight); nothing written"),
])
def test_bad_input_gives_one_line_errors(setup, change, message, capsys):
    path, data, tmp = setup
    if change.get("--model") == "srresnet":
        other = archs.build("srresnet", num_feat=4, num_block=1, scale=4)
        change["--model"] = str(save_model(other, tmp / "sr.safetensors"))
    elif change.get("--model") == "nan":
        broken = blindsr.load_model(path)
        with torch.no_grad():
            broken.head.weight[0, 0, 0, 0] = float("nan")
        change["--model"] = str(save_model(broken, tmp / "nan.safetensors"))
    elif change.get("--model"):
        change["--model"] = str(tmp / change["--model"])
    opts = {"--model": str(path), "--data": str(data), "--ratio": "0.5",
            "-o": str(tmp / "x.safetensors"), **change}
    rc = cli.main(["compress", *FAST, *[x for kv in opts.items() for x in kv]])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and message in err and len(err.splitlines()) == 1
    assert not (tmp / "x.safetensors").exists()


def test_an_output_that_cannot_be_created_is_refused_before_the_work(setup, capsys,
                                                                     monkeypatch):
    from blindsr.compress import pipeline

    path, data, tmp = setup
    (tmp / "afile").write_text("x")
    (tmp / "report.json").mkdir()  # the report beside the model cannot be written
    monkeypatch.setattr(pipeline, "compress", lambda *a, **k: pytest.fail("compressed"))
    for out, message in (("afile/x.safetensors", "cannot create output file"),
                         ("report.safetensors", "report file " + str(tmp / "report.json"))):
        rc = cli.main(["compress", *FAST, "--model", str(path), "--data", str(data),
                       "--ratio", "0.5", "-o", str(tmp / out)])
        err = capsys.readouterr().err.strip()
        assert rc == 1 and message in err and len(err.splitlines()) == 1
    assert not (tmp / "report.safetensors").exists()


def test_the_benchmark_script_runs_on_a_tiny_model(setup):
    path, data, tmp = setup
    script = load_benchmark("drn_compress")
    out = tmp / "results" / "drn_compress"
    rc = script.main(["--model", str(path), "--data", str(data), "--sets", str(data),
                      "--ratios", "0.5", "--methods", "dr,l1", "--search-steps", "1",
                      "--finetune-steps", "1", "--dual-steps", "1", "--per-round", "16",
                      "--multiple", "1", "--batch", "2", "--patch", "16", "--device", "cpu",
                      "--macs-size", "8", "--latency-repeats", "1", "--out", str(out),
                      "--save-models", str(tmp / "models"), "--reference"])
    assert rc == 0
    result = json.loads(out.with_suffix(".json").read_text())
    rows = result["rows"]
    assert [r["model"] for r in rows] == ["DRN-S", "DRN-S+ft", "DRN-S50-dr", "DRN-S50-l1"]
    reference = rows.pop(1)  # the unpruned model, fine-tuned like the others
    assert reference["method"] == "none" and reference["channels_removed"] == 0
    assert reference["params"] == rows[0]["params"]
    assert reference["hr/psnr"] != rows[0]["hr/psnr"]  # it was trained
    for r in rows:
        assert {"params", "macs_g", "latency_ms", "hr/psnr", "hr/ssim"} <= set(r)
    assert rows[1]["params"] < rows[0]["params"] and rows[2]["macs_g"] < rows[0]["macs_g"]
    # the baseline keeps as many channels as the dr model, whatever the search removed
    reports = result["reports"]
    assert reports["DRN-S50-l1"]["channels_after"] == reports["DRN-S50-dr"]["channels_after"]
    table = out.with_suffix(".md").read_text()
    assert "| DRN-S50-l1 | l1 |" in table and "hr PSNR / SSIM" in table
    assert blindsr.load_model(tmp / "models" / "DRN-S50-dr.safetensors").up_widths
    assert "| DRN-S+ft | none | 0.0% |" in table


def test_the_benchmark_script_resumes_after_the_models_it_has(setup, monkeypatch):
    path, data, tmp = setup
    script = load_benchmark("drn_compress")
    out = tmp / "results" / "resumed"
    common = ["--model", str(path), "--data", str(data), "--sets", str(data), "--ratios", "0.5",
              "--search-steps", "0", "--finetune-steps", "1", "--dual-steps", "1",
              "--multiple", "1", "--per-round", "16", "--batch", "2", "--patch", "16",
              "--device", "cpu", "--macs-size", "8", "--latency-repeats", "1", "--out", str(out),
              "--l1-match", "ratio"]
    assert script.main([*common, "--methods", "l1"]) == 0
    first = json.loads(out.with_suffix(".json").read_text())["rows"]
    calls = []
    real = script.compress
    monkeypatch.setattr(script, "compress",
                        lambda *a, **k: calls.append(a[2].method) or real(*a, **k))
    assert script.main([*common, "--methods", "l1,dr", "--resume"]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert calls == ["dr"]  # the l1 model was kept, not compressed again
    assert [r["model"] for r in rows] == ["DRN-S", "DRN-S50-l1", "DRN-S50-dr"]
    assert rows[:2] == first
    with pytest.raises(SystemExit, match="made with another finetune_steps"):  # last one counts
        script.main([*common, "--finetune-steps", "2", "--methods", "l1", "--resume"])
    with pytest.raises(SystemExit, match="made with another sets"):
        script.main([*common, "--sets", f"{data},{data}", "--methods", "l1", "--resume"])
    table = out.with_suffix(".md").read_text()
    assert table.count("Command: `") == 1 and table.count("Resumed with: `") == 1
    # a file made before --decode / --refit existed ran argmax without refit
    saved = json.loads(out.with_suffix(".json").read_text())
    for key in ("decode", "refit"):
        del saved["meta"]["setup"][key]
    out.with_suffix(".json").write_text(json.dumps(saved))
    with pytest.raises(SystemExit, match="made with another decode"):
        script.main([*common, "--methods", "l1", "--resume"])
    assert script.main([*common, "--methods", "l1", "--resume", "--decode", "argmax",
                        "--refit", "none"]) == 0
    # before "each" existed, --refit was a switch: true meant today's "last"
    saved = json.loads(out.with_suffix(".json").read_text())
    saved["meta"]["setup"]["refit"] = True
    out.with_suffix(".json").write_text(json.dumps(saved))
    with pytest.raises(SystemExit, match="made with another refit"):
        script.main([*common, "--methods", "l1", "--resume", "--decode", "argmax"])
    assert script.main([*common, "--methods", "l1", "--resume", "--decode", "argmax",
                        "--refit", "last"]) == 0


def test_a_resume_knows_the_model_by_its_weights_not_its_file(setup, monkeypatch):
    path, data, tmp = setup
    script = load_benchmark("drn_compress")
    out = tmp / "results" / "moved"
    common = ["--data", str(data), "--sets", str(data), "--ratios", "0.5", "--methods", "l1",
              "--search-steps", "0", "--finetune-steps", "1", "--dual-steps", "1",
              "--multiple", "1", "--batch", "2", "--patch", "16", "--device", "cpu",
              "--macs-size", "8", "--latency-repeats", "1", "--out", str(out),
              "--l1-match", "ratio"]
    assert script.main(["--model", str(path), *common]) == 0
    moved = tmp / "elsewhere" / "model.safetensors"  # another checkout: new path, new mtime
    moved.parent.mkdir()
    moved.write_bytes(path.read_bytes())
    calls = []
    monkeypatch.setattr(script, "compress", lambda *a, **k: calls.append(a) or None)
    assert script.main(["--model", str(moved), *common, "--resume"]) == 0
    assert calls == []  # the same weights: every row kept
    model = blindsr.load_model(path)
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    save_model(model, tmp / "changed.safetensors")
    with pytest.raises(SystemExit, match="made with another model"):
        script.main(["--model", str(tmp / "changed.safetensors"), *common, "--resume"])


def test_the_benchmark_script_merges_runs_made_side_by_side(setup, monkeypatch):
    path, data, tmp = setup
    script = load_benchmark("drn_compress")
    out, side = tmp / "results" / "main", tmp / "results" / "side"
    common = ["--model", str(path), "--data", str(data), "--sets", str(data),
              "--search-steps", "0", "--finetune-steps", "1", "--dual-steps", "1",
              "--multiple", "1", "--per-round", "16", "--batch", "2", "--patch", "16",
              "--device", "cpu", "--macs-size", "8", "--latency-repeats", "1"]
    assert script.main([*common, "--ratios", "0.5", "--out", str(out)]) == 0
    assert script.main([*common, "--ratios", "0.3", "--methods", "dr", "--out", str(side)]) == 0
    calls = []
    real = script.compress
    monkeypatch.setattr(script, "compress",
                        lambda *a, **k: calls.append(a[2].method) or real(*a, **k))
    assert script.main([*common, "--ratios", "0.5,0.3", "--out", str(out), "--resume",
                        "--merge", str(side.with_suffix(".json"))]) == 0
    assert calls == ["l1"]  # only the 30 % l1 model was missing; it matches the merged dr model
    merged = json.loads(out.with_suffix(".json").read_text())
    assert [r["model"] for r in merged["rows"]] == [
        "DRN-S", "DRN-S50-dr", "DRN-S50-l1", "DRN-S30-dr", "DRN-S30-l1"]
    assert set(merged["reports"]) == {"DRN-S50-dr", "DRN-S50-l1", "DRN-S30-dr", "DRN-S30-l1"}
    assert merged["meta"]["merged"][0]["file"] == str(side.with_suffix(".json"))
    assert merged["meta"]["merged"][0]["commands"][0].endswith(f"--out {side}")
    assert f"Merged from `{side.with_suffix('.json')}`, made by: `" in \
        out.with_suffix(".md").read_text()
    joined = tmp / "results" / "joined"  # everything already made: only joined and written
    calls.clear()
    assert script.main([*common, "--ratios", "0.5,0.3", "--out", str(joined), "--merge",
                        str(out.with_suffix(".json"))]) == 0
    assert calls == [] and json.loads(joined.with_suffix(".json").read_text())["rows"] == \
        merged["rows"]
    assert "| DRN-S30-l1 | l1 |" in joined.with_suffix(".md").read_text()
    with pytest.raises(SystemExit, match="cannot merge .*nothing.json: no such file"):
        script.main([*common, "--out", str(out), "--resume", "--merge", str(tmp / "nothing.json")])
    with pytest.raises(SystemExit, match="made with another finetune_steps"):
        script.main([*common, "--out", str(out), "--finetune-steps", "2",
                     "--merge", str(side.with_suffix(".json"))])


def test_the_benchmark_script_keeps_each_finished_model_when_a_later_one_fails(setup,
                                                                               monkeypatch, shared):
    path, data, tmp = setup
    script = load_benchmark("drn_compress")
    out = tmp / "results" / "cut"
    real = script.compress

    def fail_on_dr(model, sources, settings, **kw):
        if settings.method == "dr":
            raise KeyboardInterrupt  # the session ends mid-run
        return real(model, sources, settings, **kw)

    monkeypatch.setattr(script, "compress", fail_on_dr)
    with pytest.raises(KeyboardInterrupt):
        script.main(["--model", str(path), "--data", str(data), "--sets", str(data),
                     "--ratios", "0.3,0.5", "--methods", "l1,dr", "--search-steps", "0",
                     "--finetune-steps", "1", "--dual-steps", "1", "--multiple", "1",
                     "--batch", "2", "--patch", "16", "--device", "cpu", "--macs-size", "8",
                     "--latency-repeats", "1", "--out", str(out), "--l1-match", "ratio"])
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["DRN-S", "DRN-S30-l1"]
    with pytest.raises(SystemExit, match="needs the dr model of ratio 0.3 first"):
        script.main(["--model", str(path), "--data", str(data), "--methods", "l1",
                     "--ratios", "0.3", "--out", str(tmp / "other")])


def test_compress_leaves_the_model_and_dual_models_untouched(setup):
    from blindsr.compress.pipeline import CompressSettings, compress

    path, data, _ = setup
    model = blindsr.load_model(path)
    duals = DualModels(4, num_feat=4)
    before = {k: v.clone() for k, v in [*model.state_dict().items(),
                                        *duals.state_dict().items()]}
    settings = CompressSettings(ratio=0.3, method="l1", finetune_steps=2, batch=2, patch=16,
                                multiple=1, finetune_lr=1e-2, device="cpu")
    result = compress(model, [str(data)], settings, duals=duals)
    after = dict([*model.state_dict().items(), *duals.state_dict().items()])
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert result.report["settings"]["ratio"] == 0.3 and result.report["losses"]["finetune"]


def _dual_run(run_dir: Path, duals: torch.nn.Module, name: str = "dual") -> Path:
    """A training run folder whose one checkpoint holds ``duals`` under ``name``."""
    save_checkpoint(run_dir, 10, {"generator": {}, name: duals.state_dict()}, {}, keep=1)
    return run_dir


def test_compress_uses_dual_models_of_a_training_run(setup, capsys):
    path, data, tmp = setup
    torch.manual_seed(3)
    duals = DualModels(4, num_feat=4, per_stage=True)
    run = _dual_run(tmp / "dual_run", duals)
    loaded = load_duals(run, 4)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 duals.state_dict().values(), strict=True))
    out = tmp / "pruned.safetensors"
    rc = cli.main(["compress", "--model", str(path), "--data", str(data), "--ratio", "0.5",
                   "--duals", str(run), *FAST, "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["duals"] == str(run) and "dual_warmup" not in report["losses"]


@pytest.mark.parametrize("case, message", [
    ("x2", "do not fit x4 (missing: blocks.1."),
    ("no_dual", "has no dual weights"),
    ("empty", "holds no training checkpoint"),
])
def test_bad_dual_runs_give_one_line_errors(setup, case, message, capsys):
    path, data, tmp = setup
    run = tmp / "run"
    if case == "x2":
        _dual_run(run, DualModels(2, num_feat=4, per_stage=True))
    elif case == "no_dual":
        _dual_run(run, DualModels(4, num_feat=4, per_stage=True), name="discriminator")
    else:
        run.mkdir()
    rc = cli.main(["compress", "--model", str(path), "--data", str(data), "--ratio", "0.5",
                   "--duals", str(run), *FAST, "-o", str(tmp / "x.safetensors")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and message in err and len(err.splitlines()) == 1
    assert not (tmp / "x.safetensors").exists()


def test_a_ratio_the_width_multiple_cannot_reach_is_refused_before_the_work(setup, capsys):
    path, data, tmp = setup
    rc = cli.main(["compress", *FAST, "--model", str(path), "--data", str(data), "--ratio",
                   "0.95", "-o", str(tmp / "x.safetensors")])
    err = capsys.readouterr().err
    assert rc == 1 and "ratio 0.95 is out of reach for this model" in err
    assert "searching" not in err and not (tmp / "x.safetensors").exists()
