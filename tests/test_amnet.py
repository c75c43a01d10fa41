"""AMNet (kernel-modulated SR + kernel predictor) and the `amnet` strategy: modulation, code
defaults, registry detection, files, upscale, predictor pretraining and loop steps with resume."""

import importlib.util
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import check_keeps_the_lr_it_made, make_code_matter, smooth_images

from blindsr import archs
from blindsr.archs.amnet import KernelPredictor
from blindsr.checkpoint import load_model, save_model
from blindsr.config import load_config
from blindsr.degrade.kernel_code import KernelCoder, blur_downsample, coder_for
from blindsr.errors import BlindSRError
from blindsr.inference import upscale
from blindsr.strategies import Update, get_strategy
from blindsr.strategies.amnet import AMNetTraining
from blindsr.train import train
from blindsr.train_state import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def tiny(**kw):
    torch.manual_seed(0)
    args = {"num_feat": 8, "num_block": 2, "predictor_feat": 4, "am_hidden": 6, **kw}
    return archs.build("amnet", **args).eval()


def strengthen(model):
    """Make the body and the AMLayers matter (both start small), as after training."""
    return make_code_matter(model)


@pytest.mark.parametrize("kw", [
    {"scale": 4}, {"scale": 2}, {"scale": 3, "predictor_feat": 0},
    {"scale": 4, "code_dim": 10, "num_block": 1},
])
def test_shapes_and_state_dict_round_trip(kw, rand_image):
    model = tiny(**kw)
    sd = model.state_dict()
    assert archs.detect_arch(sd) == "amnet"
    assert not archs.ARCHS["srresnet"].detect(sd)
    clone = archs.from_state_dict(sd).eval()
    assert clone.arch_kwargs == model.arch_kwargs and clone.arch_name == "amnet"
    x = rand_image(2, 3, 6, 7)
    with torch.no_grad():
        y = model(x)
        assert torch.equal(y, clone(x))
    s = kw["scale"]
    assert y.shape == (2, 3, 6 * s, 7 * s)
    assert (model.predictor is None) == (kw.get("predictor_feat", 4) == 0)


def test_srresnet_weights_are_not_taken_for_amnet():
    sd = archs.build("srresnet", num_feat=4, num_block=1).state_dict()
    assert archs.detect_arch(sd) == "srresnet"


def test_the_code_modulates_the_output(rand_image):
    model = strengthen(tiny())
    x = rand_image(1, 3, 8, 8)
    with torch.no_grad():
        lo, hi = model(x, torch.tensor([[0.1]])), model(x, torch.tensor([[0.9]]))
        again = model(x, torch.tensor([[0.1]]))
    assert torch.equal(lo, again)
    assert (lo - hi).abs().mean() > 1e-2
    # one code broadcasts over the batch; per-sample codes act per sample
    xx = torch.cat([x, x])
    with torch.no_grad():
        both = model(xx, torch.tensor([[0.1], [0.9]]))
        bcast = model(xx, torch.tensor([[0.1]]))
    torch.testing.assert_close(both[:1], lo)
    torch.testing.assert_close(both[1:], hi)
    torch.testing.assert_close(bcast[1:], lo)


def test_without_code_the_predictor_or_the_default_is_used(rand_image):
    x = rand_image(2, 3, 8, 8)
    model = strengthen(tiny())
    with torch.no_grad():
        code = model.predictor(x)
        assert code.shape == (2, 1) and (code > 0).all() and (code < 1).all()
        torch.testing.assert_close(model(x), model(x, code))
        torch.testing.assert_close(model.render(x, code), model(x, code))
    plain = strengthen(tiny(predictor_feat=0))
    assert plain.default_code.tolist() == [0.5]
    with torch.no_grad():
        torch.testing.assert_close(plain(x), plain(x, torch.full((2, 1), 0.5)))
    pca = tiny(code_dim=10, predictor_feat=0)
    torch.testing.assert_close(pca.default_code, KernelCoder("pca", 10).encode(2.1)[0])
    assert KernelPredictor(10, 4)(x).shape == (2, 10)


def test_code_errors(rand_image):
    model = tiny()
    x = rand_image(2, 3, 8, 8)
    with pytest.raises(BlindSRError, match=r"code must be \(N=2, 1\)"):
        model(x, torch.zeros(3, 1))
    with pytest.raises(BlindSRError, match="render needs a code"):
        model.render(x, None)
    with pytest.raises(BlindSRError, match="predictor_feat must be >= 0"):
        archs.build("amnet", predictor_feat=-1)
    with pytest.raises(BlindSRError, match="scale must be one of"):
        archs.build("amnet", scale=5)


def test_code_units_are_recorded_buffers_that_travel_with_the_weights(tmp_path):
    model = tiny(code_dim=3)
    assert torch.isnan(model.sigma_range).all() and torch.isnan(model.code_box).all()
    assert model.code_box.shape == (2, 3) and not model.code_units_recorded()
    with pytest.raises(BlindSRError, match="no recorded kernel-code units"):
        model.kernel_coder()
    coder = KernelCoder("pca", 3, (0.5, 3.0))
    model.record_code_units(coder)
    assert model.code_units_recorded()
    torch.testing.assert_close(model.sigma_range, torch.tensor([0.5, 3.0]))
    torch.testing.assert_close(model.code_box, coder.box())
    torch.testing.assert_close(model.default_code, coder.encode(1.75)[0])
    back = load_model(save_model(model, tmp_path / "am.safetensors"))  # no config needed
    assert back.kernel_coder().sigma_range == (0.5, 3.0) and back.kernel_coder().kind == "pca"
    torch.testing.assert_close(back.code_box, model.code_box)
    with pytest.raises(BlindSRError, match="gives 1-D codes, the model takes code_dim=3"):
        model.record_code_units(KernelCoder("sigma"))
    old = {k: v for k, v in model.state_dict().items() if k not in ("sigma_range", "code_box")}
    with pytest.raises(BlindSRError, match="missing: sigma_range, code_box"):
        archs.from_state_dict(old)


def test_inference_clamps_pca_predictor_codes_into_the_box(rand_image):
    model = strengthen(tiny(code_dim=3))
    x = rand_image(2, 3, 8, 8)
    with torch.no_grad():
        model.predictor.head.bias.copy_(torch.tensor([5.0, -5.0, 0.0]))  # far outside
        raw = model.predictor(x)
        torch.testing.assert_close(model(x), model(x, raw))  # no units: nothing to clamp
        coder = coder_for(3)
        model.record_code_units(coder)
        box = coder.box()
        clamped = torch.minimum(torch.maximum(raw, box[0]), box[1])
        assert not torch.allclose(clamped, raw)
        assert torch.equal(clamped[:, 0], box[1, 0].expand(2))
        assert torch.equal(clamped[:, 1], box[0, 1].expand(2))
        torch.testing.assert_close(model(x), model(x, clamped))
        assert (model(x) - model(x, raw)).abs().mean() > 1e-3
        torch.testing.assert_close(model.render(x, raw), model(x, raw))  # explicit: as given


def test_save_load_and_upscale_without_a_code(tmp_path, rand_image):
    model = tiny(code_dim=10)
    path = save_model(model, tmp_path / "am.safetensors")
    back = load_model(path)
    assert back.arch_kwargs == model.arch_kwargs
    x = rand_image(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x))
    img = (rand_image(1, 3, 12, 10)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    out = upscale(img, path, tile=64, device="cpu")
    assert out.shape == (48, 40, 3) and out.dtype == np.uint8



def test_tiles_share_one_code_for_the_whole_image(rand_image):
    from blindsr.inference import Settings, Upscaler

    model = strengthen(tiny())
    with torch.no_grad():  # a predictor that reads the image: tiles alone would disagree
        for p in model.predictor.parameters():
            p.normal_(0, 0.3, generator=torch.Generator().manual_seed(3))
    smooth = torch.nn.functional.interpolate(rand_image(1, 3, 6, 6, seed=1), size=(24, 24),
                                             mode="bilinear")
    x = torch.cat([smooth, rand_image(1, 3, 24, 24, seed=2)], dim=-1)
    left, right = x[..., :24], x[..., 24:]
    with torch.no_grad():
        assert (model.predictor(left) - model.predictor(right)).abs().max() > 0.02
        whole = model(x, model.image_code(x))
    tiled = Upscaler(model, Settings(tile=16, tile_pad=12, device="cpu")).upscale_tensor(x)
    untiled = Upscaler(model, Settings(tile=64, tile_pad=0, device="cpu")).upscale_tensor(x)
    assert (tiled - untiled).abs().max() <= 1 / 255
    torch.testing.assert_close(untiled, whole.clamp(0, 1), atol=1e-5, rtol=0)
    big = rand_image(1, 3, 8, 600, seed=4)  # codes come from a centre crop of large images
    torch.testing.assert_close(model.image_code(big), model.image_code(big[..., 44:556]))


def test_blur_setting_renders_with_the_code_of_that_width(tmp_path, rand_image, capsys):
    from blindsr.cli import main
    from blindsr.ensemble import SelfEnsemble
    from blindsr.inference import Settings, Upscaler

    model = strengthen(tiny())
    model.record_code_units(coder_for(1, (0.2, 4.0)))
    x = rand_image(1, 3, 12, 12)
    with torch.no_grad():
        expected = model(x, torch.tensor([[(2.1 - 0.2) / 3.8]])).clamp(0, 1)
        own = model(x).clamp(0, 1)
    sharp = Upscaler(model, Settings(device="cpu", blur=2.1)).upscale_tensor(x)
    torch.testing.assert_close(sharp, expected, atol=1e-5, rtol=0)
    assert (sharp - own).abs().max() > 0.01  # not the model's own estimate
    ensemble = Upscaler(SelfEnsemble(model), Settings(device="cpu", blur=2.1))
    torch.testing.assert_close(ensemble.fixed_code, torch.tensor([[(2.1 - 0.2) / 3.8]]))
    with pytest.raises(BlindSRError, match=r"outside the blur widths .* sigma in \[0.2, 4\]"):
        Upscaler(model, Settings(device="cpu", blur=4.5))
    with pytest.raises(BlindSRError, match="must be a positive number"):
        Upscaler(model, Settings(device="cpu", blur=float("nan")))
    with pytest.raises(BlindSRError, match=r"this model \(srresnet\) takes no kernel code"):
        Upscaler(archs.build("srresnet", num_feat=4, num_block=1), Settings(blur=1.0))
    for number in (np.float32(2.1), np.int64(2), 2):  # any real number, not only float
        assert Upscaler(model, Settings(device="cpu", blur=number)).fixed_code.shape == (1, 1)
    for bad in (10**400, True, "2"):
        with pytest.raises(BlindSRError, match="must be a positive number"):
            Upscaler(model, Settings(device="cpu", blur=bad))
    path = save_model(model, tmp_path / "am.safetensors")
    img = tmp_path / "in.png"
    from PIL import Image
    Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(img)
    assert main(["upscale", str(img), "-o", str(tmp_path / "out.png"), "--model", str(path),
                 "--blur", "2.1", "-q"]) == 0
    assert main(["upscale", str(img), "-o", str(tmp_path / "o2.png"), "--model", "bicubic",
                 "--blur", "2.1", "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("blindsr: error: blur (--blur) is for blur-conditioned models")

def test_the_code_of_an_rgba_image_is_that_of_its_colour(rand_image):
    from blindsr import io
    from blindsr.inference import Settings, Upscaler

    model = strengthen(tiny())
    with torch.no_grad():
        for p in model.predictor.parameters():
            p.normal_(0, 0.3, generator=torch.Generator().manual_seed(3))
    color = rand_image(1, 3, 16, 16)
    alpha = torch.ones(1, 1, 16, 16)
    alpha[..., :6] = 0  # a transparent band must not count as black image content
    up = Upscaler(model, Settings(device="cpu"))
    seen = []
    up.upscale_tensor = lambda x, on_tiles=None, code=None, clamp=True: (
        seen.append(code), torch.zeros(1, 3, 64, 64))[1]
    up.upscale_image(io.ImageData(color=color, alpha=alpha, bit_depth=8))
    torch.testing.assert_close(seen[0], model.image_code(color))


@pytest.mark.skipif(not importlib.util.find_spec("onnxruntime"), reason="needs onnxruntime")
def test_an_onnx_export_warns_when_tiles_would_each_estimate_the_blur(tmp_path, rand_image):
    from blindsr.export import export_onnx
    from blindsr.inference import Settings, Upscaler

    model = strengthen(tiny())
    model.record_code_units(coder_for(1, (0.2, 4.0)))
    path = export_onnx(model, tmp_path / "am.onnx", check=False).path
    x = rand_image(1, 3, 40, 40)
    with pytest.warns(UserWarning, match=r"estimates the blur per tile, and a 40x40 image takes "
                                         r"\d+ tiles: .* pass --tile 40 to run it whole"):
        Upscaler(path, Settings(device="cpu", tile=16)).upscale_tensor(x)
    with pytest.warns(UserWarning, match="estimates the blur per tile"):  # self-ensemble too
        Upscaler(f"{path}+", Settings(device="cpu", tile=16)).upscale_tensor(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Upscaler(path, Settings(device="cpu", tile=48)).upscale_tensor(x)  # one tile: quiet
    with pytest.raises(BlindSRError, match="an ONNX export has no code input; use the "
                                           ".safetensors model"):
        Upscaler(path, Settings(device="cpu", blur=1.0))


# -- the amnet strategy -------------------------------------------------------------------------


def make(params=None, **kw):
    g = tiny(**kw).train()
    return AMNetTraining(g, AMNetTraining.parse_params(params or {}), g.scale,
                         torch.device("cpu"))


def batch(rand_image, n=2, has_hr=None):
    has = torch.tensor(has_hr) if has_hr is not None else torch.ones(n, dtype=torch.bool)
    return {"hr": rand_image(n, 3, 32, 32, seed=1), "lr": torch.zeros(n, 3, 8, 8),
            "has_hr": has, "has_lr": torch.zeros(n, dtype=torch.bool)}


def test_registered_and_self_degrading():
    assert get_strategy("amnet") is AMNetTraining
    s = make()
    assert s.degrades_itself() and s.networks() == {}
    assert s.coder.sigma_range == (0.2, 4.0)
    assert make(scale=2).coder.sigma_range == (0.2, 2.0)


def test_step_trains_renderer_on_the_true_code_and_the_predictor(rand_image):
    s = make()
    b = batch(rand_image)
    state = s.state_dict()
    (u,) = list(s.training_step(b, 0))
    assert isinstance(u, Update) and u.optimizers == ("generator",)
    assert set(u.logs) == {"l_l1", "l_code", "sigma_err"}
    # the same draw again: LR = blur_downsample(HR, sigma) and the renderer saw the true code
    s.load_state_dict(state)
    lr, sigma, code = s.degrade(b["hr"])
    torch.testing.assert_close(lr, blur_downsample(b["hr"], sigma, 4, quantize=True))
    torch.testing.assert_close(code, s.coder.encode(sigma))
    with torch.no_grad():
        l1 = (s.generator(lr, code) - b["hr"]).abs().mean()
        l_code = (s.generator.predictor(lr) - code).abs().mean()
    assert float(u.logs["l_l1"]) == pytest.approx(float(l1), rel=1e-5)
    assert float(u.logs["l_code"]) == pytest.approx(float(l_code), rel=1e-5)
    u.loss.backward()
    g = s.generator
    assert g.blocks[0].am1.fc1.weight.grad is not None and g.predictor.head.weight.grad is not None


def test_renderer_and_predictor_train_separately(rand_image):
    s = make({"train_renderer": False})
    (u,) = list(s.training_step(batch(rand_image), 0))
    assert set(u.logs) == {"l_code", "sigma_err"}
    u.loss.backward()
    assert s.generator.conv_in.weight.grad is None and s.generator.predictor.head.weight.grad \
        is not None
    s = make({"predictor_weight": 0})
    (u,) = list(s.training_step(batch(rand_image), 0))
    assert set(u.logs) == {"l_l1"}
    u.loss.backward()
    assert s.generator.predictor.head.weight.grad is None
    assert list(s.training_step(batch(rand_image, has_hr=[False, False]), 0)) == []


def test_params_and_model_are_checked():
    with pytest.raises(BlindSRError, match="train_renderer: false, and the predictor"):
        AMNetTraining.parse_params({"train_renderer": False, "predictor_weight": 0})
    with pytest.raises(BlindSRError, match="sigma_range: must be"):
        AMNetTraining.parse_params({"sigma_range": [1.0, 0.5]})
    with pytest.raises(BlindSRError, match="gives 10-D codes, the model takes code_dim=1"):
        make({"coder": "pca"})
    with pytest.raises(BlindSRError, match="code_dim: PCA codes need code_dim >= 2"):
        AMNetTraining.parse_params({"coder": "pca", "code_dim": 1})
    assert AMNetTraining.parse_params({"coder": "sigma", "code_dim": 1}).code_dim == 1
    with pytest.raises(BlindSRError, match="has no predictor"):
        make(predictor_feat=0)
    assert make({"predictor_weight": 0}, predictor_feat=0).trains_predictor() is False
    g = archs.build("srresnet", num_feat=4, num_block=1)
    with pytest.raises(BlindSRError, match="needs model.arch amnet"):
        AMNetTraining(g, AMNetTraining.parse_params({}), 4, torch.device("cpu"))


def test_the_strategy_records_its_units_and_refuses_another_range():
    s = make({"coder": "pca", "code_dim": 3, "sigma_range": [0.5, 3.0]}, code_dim=3)
    g = s.generator
    assert g.kernel_coder().sigma_range == (0.5, 3.0) == s.coder.sigma_range
    torch.testing.assert_close(g.code_box, s.coder.box())
    torch.testing.assert_close(g.default_code, s.coder.encode(1.75)[0])
    params = AMNetTraining.parse_params({"coder": "pca", "code_dim": 3})
    with pytest.raises(BlindSRError, match=r"trained on sigma range \[0.5, 3.0\], the strategy's "
                                           r"is \[0.2, 4.0\]"):
        AMNetTraining(g, params, 4, torch.device("cpu"))
    same = AMNetTraining.parse_params({"coder": "pca", "code_dim": 3, "sigma_range": [0.5, 3]})
    AMNetTraining(g, same, 4, torch.device("cpu"))  # the same range again is fine
    assert make().generator.kernel_coder().sigma_range == (0.2, 4.0)
    assert make(scale=2).generator.kernel_coder().sigma_range == (0.2, 2.0)


def test_predictor_pretraining_learns_the_blur(rand_image):
    torch.manual_seed(0)
    s = make({"train_renderer": False}, num_feat=4, num_block=1, predictor_feat=8)
    opt = torch.optim.Adam(s.generator.predictor.parameters(), lr=3e-3)
    held = rand_image(16, 3, 32, 32, seed=7)
    sigma = torch.linspace(0.2, 4.0, 16)
    lr, code = blur_downsample(held, sigma, 4, quantize=True), s.coder.encode(sigma)

    def held_error():
        with torch.no_grad():
            return float((s.generator.predictor(lr) - code).abs().mean())

    before = held_error()
    for step in range(60):
        (u,) = list(s.training_step(batch(rand_image, n=8) | {"hr": rand_image(8, 3, 32, 32,
                                                                               seed=step)}, step))
        opt.zero_grad()
        u.loss.backward()
        opt.step()
    after = held_error()
    assert after < 0.5 * before



def loop_config(tmp_path, strategy, params, kwargs=None):
    data = tmp_path / "data"
    if not data.exists():
        smooth_images(data)
    kw = {"num_feat": 4, "num_block": 1, "predictor_feat": 4, "am_hidden": 4, **(kwargs or {})}
    return load_config(ROOT / "configs" / "tiny.yaml", [
        f"output_dir={json.dumps(str(tmp_path / 'runs'))}",
        f"data.train=[{{path: {json.dumps(str(data))}}}]", "degradation.kind=none",
        "model.arch=amnet", f"model.kwargs={json.dumps(kw)}",
        "train.iterations=2", "train.checkpoint_every=1",
        f"strategy.name={strategy}", f"strategy.params={json.dumps(params)}"])


def resumes_bit_identically(tmp_path, cfg):
    first = train(cfg, progress=False)
    last = tmp_path / "runs" / "tiny" / "checkpoints" / "step_0000002"
    reference, state = load_checkpoint(last)
    shutil.rmtree(last)
    train(cfg, progress=False)  # resumes from step 1
    again, _ = load_checkpoint(last)
    for net in reference:
        assert all(torch.equal(v, again[net][k]) for k, v in reference[net].items()), net
    return first, reference, state


def test_amnet_trains_through_the_loop_and_resumes(tmp_path):
    cfg = loop_config(tmp_path, "amnet", {"coder": "pca", "code_dim": 3}, {"code_dim": 3})
    result, _, state = resumes_bit_identically(tmp_path, cfg)
    assert set(state["strategy"]) == {"rng"} and set(result.networks) == {"generator"}
    rows = [json.loads(r) for r in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"train/l_l1", "train/l_code", "train/sigma_err"} <= set(rows[-1])
    model = load_model(result.run_dir / "model.safetensors")  # the EMA, copied after recording
    assert model.arch_kwargs["code_dim"] == 3
    coder = model.kernel_coder()
    assert (coder.kind, coder.code_dim, coder.sigma_range) == ("pca", 3, (0.2, 4.0))
    torch.testing.assert_close(model.code_box, coder.box())


def test_the_step_keeps_the_lr_it_made_for_image_samples(rand_image):
    check_keeps_the_lr_it_made(make(), batch(rand_image))
