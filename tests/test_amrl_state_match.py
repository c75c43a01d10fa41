import json

import torch
from conftest import load_benchmark, make_code_matter, smooth_images

from blindsr import archs
from blindsr.checkpoint import save_model
from blindsr.degrade.kernel_code import coder_for

TINY = {"num_feat": 4, "num_block": 1, "predictor_feat": 4, "am_hidden": 4}


def tiny_amnet(seed, constant_code=False):
    torch.manual_seed(seed)
    model = archs.build("amnet", scale=4, code_dim=1, **TINY).eval()
    if constant_code:  # the predictor's features are 0: every input gets the head's bias
        with torch.no_grad():
            for conv in model.predictor.convs:
                conv.weight.zero_()
                conv.bias.zero_()
    model.record_code_units(coder_for(1, (0.2, 4.0)))
    return model


def test_tiles_cover_the_image_and_the_last_one_is_flush():
    script = load_benchmark("amrl_state_match")
    assert script.tile_origins(10, 4, 2) == [0, 2, 4, 6]
    assert script.tile_origins(11, 4, 4) == [0, 4, 7]
    assert script.tile_origins(3, 4, 2) == [0]  # a side smaller than the tile: one tile


def test_per_tile_rendering_is_the_whole_render_when_every_tile_gets_one_code():
    script = load_benchmark("amrl_state_match")
    model = make_code_matter(tiny_amnet(0, constant_code=True))
    lr = torch.rand(1, 3, 22, 19)
    with torch.inference_mode():
        whole, code = script.sr_of("whole", model, model, lr, 8, 6)
        mean, mean_code = script.sr_of("tile-mean", model, model, lr, 8, 6)
        tiled, none = script.sr_of("per-tile", model, model, lr, 8, 6)
    assert none is None and torch.allclose(code, mean_code) and torch.equal(whole, mean)
    assert tiled.shape == whole.shape == (1, 3, 88, 76)
    inner = (..., slice(24, -24), slice(24, -24))  # the borders pad differently
    assert torch.allclose(tiled[inner], whole[inner], atol=1e-5)
    other = tiny_amnet(1)  # a predictor that tells the tiles apart: another image
    with torch.inference_mode():
        varied, _ = script.sr_of("per-tile", model, other, lr, 8, 6)
    assert not torch.allclose(varied[inner], tiled[inner], atol=1e-4)


def test_the_script_writes_its_table(tmp_path, capsys):
    script = load_benchmark("amrl_state_match")
    renderer = save_model(tiny_amnet(0), tmp_path / "a" / "model.safetensors")
    rl = save_model(tiny_amnet(1), tmp_path / "b" / "model.safetensors")
    images = smooth_images(tmp_path / "set", n=2, size=48)
    out = tmp_path / "match"
    assert script.main(["--model", str(renderer), "--predictor", str(renderer), "--predictor",
                        str(rl), "--data", str(images), "--sigmas", "1.0", "--state", "4",
                        "--context", "2", "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert len(rows) == 1 and rows[0]["images"] == 2
    assert list(rows[0]["psnr"]) == [f"{p} / {m}" for p in ("a", "b")
                                     for m in ("whole", "tile-mean", "per-tile")]
    assert set(rows[0]["sigma_used"]) == {"a / whole", "a / tile-mean", "b / whole",
                                          "b / tile-mean"}
    assert "| set | sigma | true code |" in capsys.readouterr().out
    assert script.main(["--model", str(renderer), "--predictor", str(renderer), "--data",
                        str(images), "--state", "2"]) == 1
