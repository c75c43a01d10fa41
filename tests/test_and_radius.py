"""benchmarks/and_radius.py: the attack's difficulty at each radius, beside the test presets."""

import json

import torch
from conftest import load_benchmark

from blindsr import archs
from blindsr.checkpoint import save_model


def test_a_larger_radius_is_a_harder_attack(shared, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BLINDSR_DATA", str(shared / "datasets"))
    script = load_benchmark("and_radius")
    torch.manual_seed(0)
    net = save_model(archs.build("srresnet", num_feat=4, num_block=1, scale=4),
                     tmp_path / "net.safetensors")
    assert script.main(["--model", str(net), "--epsilon", "0.05,0.2", "--noise-rms", "0.01,0.1",
                        "--crops", "2", "--patch", "32", "--channels", "16"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    l1 = report["l1"]
    assert set(report["l1_after_colour_fit"]) == {"identity (BlurPool)", "epsilon 0.05",
                                                  "epsilon 0.2"}
    assert l1["identity (BlurPool)"] < l1["epsilon 0.05"] < l1["epsilon 0.2"]
    assert l1["adversarial noise, rms 0.01"] < l1["adversarial noise, rms 0.1"]
    assert set(script.PRESETS) <= set(l1)
    assert script.main(["--model", str(tmp_path / "absent.safetensors")]) == 1


def test_colour_fit_undoes_an_affine_colour_map(rand_image):
    script = load_benchmark("and_radius")
    ref = rand_image(2, 3, 8, 8, seed=1) * 0.5 + 0.25
    matrix = torch.tensor([[0.9, 0.1, 0.0], [0.05, 1.1, -0.05], [0.0, 0.2, 0.8]])
    cast = torch.einsum("ij,njhw->nihw", matrix, ref) + 0.02
    assert (cast - ref).abs().max() > 0.02
    assert (script.colour_fit(cast, ref) - ref).abs().max() < 1e-4
