import json

import pytest
import torch
from conftest import load_benchmark, smooth_images

from blindsr import archs
from blindsr.checkpoint import save_model
from blindsr.degrade.kernel_code import coder_for

TINY = {"num_feat": 4, "num_block": 1, "predictor_feat": 4, "am_hidden": 4}


def tiny_amnet(tmp_path, name, seed):
    torch.manual_seed(seed)
    model = archs.build("amnet", scale=4, code_dim=1, **TINY)
    model.record_code_units(coder_for(1, (0.2, 4.0)))
    return save_model(model, tmp_path / f"{name}.safetensors")


def test_landscape_and_predictions_on_tiny_models(tmp_path, capsys):
    script = load_benchmark("amrl_landscape")
    renderer = tiny_amnet(tmp_path, "renderer", 0)
    other = tiny_amnet(tmp_path, "other", 1)
    images = smooth_images(tmp_path / "set", n=2, size=48)
    out = tmp_path / "landscape.json"
    assert script.main(["--model", str(renderer), "--predictor", str(renderer), "--predictor",
                        str(other), "--data", str(images), "--sigmas", "1.0", "3.8",
                        "--offsets", "-0.5", "0", "0.5", "--crops", "2", "--patch", "32",
                        "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["sigma"] for r in rows] == [1.0, 3.8]
    for r in rows:
        assert list(r["landscape"]) == ["-0.5", "0.0", "0.5"]
        # sigma 3.8 + 0.5 is clamped to the range's 4.0, so every score is finite
        assert all(torch.isfinite(torch.tensor(v)) for v in r["landscape"].values())
        for v in r["predicted"].values():
            assert 0.2 <= v["crops"] <= 4.0 and 0.2 <= v["whole"] <= 4.0
    # two different predictors give different estimates
    a, b = rows[0]["predicted"].values()
    assert a["crops"] != pytest.approx(b["crops"])
    assert "| 1.0 |" in capsys.readouterr().out


def test_a_missing_dataset_is_a_one_line_error(tmp_path, capsys):
    script = load_benchmark("amrl_landscape")
    renderer = tiny_amnet(tmp_path, "renderer", 0)
    assert script.main(["--model", str(renderer), "--data", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
