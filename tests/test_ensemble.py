import pytest
import torch
from PIL import Image

from blindsr import archs, inference, zoo
from blindsr.checkpoint import save_model
from blindsr.cli import main
from blindsr.ensemble import SYMMETRIES, SelfEnsemble, invert, split_name, transform
from blindsr.errors import BlindSRError
from blindsr.evaluate import evaluate
from blindsr.inference import Settings, Upscaler, bytes_per_pixel
from tests.conftest import make_code_matter, smooth_images


def lopsided(seed: int = 0) -> torch.nn.Module:
    """A tiny x2 SRResNet with random weights: far from flip- or transpose-equivariant."""
    torch.manual_seed(seed)
    model = archs.build("srresnet", scale=2, num_feat=8, num_block=1).eval()
    with torch.no_grad():  # a fresh one is nearly bilinear: symmetric
        for p in model.parameters():
            if p.ndim == 4:
                p.normal_(0, (1 / p[0].numel()) ** 0.5)
    return model


def test_the_eight_symmetries_are_distinct_and_inverted_exactly():
    x = torch.rand(2, 3, 5, 7)
    square = torch.arange(4.0).view(1, 1, 2, 2)
    assert len({tuple(transform(square, s).flatten().tolist()) for s in SYMMETRIES}) == 8
    for s in SYMMETRIES:
        assert torch.equal(invert(transform(x, s), s), x)


@pytest.mark.parametrize("size", [(12, 12), (10, 14)])
def test_the_ensemble_is_equivariant_though_the_model_is_not(size):
    model = lopsided()
    x = torch.rand(2, 3, *size)
    flipped = transform(x, (True, True, False))
    assert not torch.allclose(model(flipped), transform(model(x), (True, True, False)), atol=1e-3)
    ensemble = SelfEnsemble(model)
    with torch.no_grad():
        for s in SYMMETRIES:
            assert torch.allclose(ensemble(transform(x, s)), transform(ensemble(x), s), atol=1e-5)


def test_the_ensemble_is_the_mean_of_the_eight_passes():
    model, x = lopsided(), torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        expected = torch.stack([invert(model(transform(x, s)), s) for s in SYMMETRIES]).mean(0)
        assert torch.allclose(SelfEnsemble(model)(x), expected, atol=1e-6)


def test_per_sample_codes_follow_their_samples():
    torch.manual_seed(0)
    model = make_code_matter(archs.build("amnet", num_feat=8, num_block=2, predictor_feat=4,
                                         am_hidden=6).eval())
    ensemble = SelfEnsemble(model)
    x, code = torch.rand(2, 3, 8, 10), torch.tensor([[0.1], [0.9]])
    with torch.no_grad():
        both = ensemble(x, code)
        one = [ensemble(x[i:i + 1], code[i:i + 1]) for i in range(2)]
    assert torch.allclose(both, torch.cat(one), atol=1e-5)
    assert not torch.allclose(one[0], ensemble(x[:1], code[1:]), atol=1e-3)
    assert ensemble.image_code.__self__ is model  # the wrapped model's whole-image code


def test_names_with_a_plus_load_the_ensemble(tmp_path):
    assert split_name("blindsr-x4+") == ("blindsr-x4", True)
    assert split_name("+") == ("+", False)
    model = zoo.load("blindsr-x4+")
    assert isinstance(model, SelfEnsemble) and model.scale == 4
    with pytest.raises(BlindSRError, match="no-such-model"):
        zoo.load("no-such-model+")
    for pointless in ("blindsr-x4++", "bicubic+"):  # 64 passes, or 8 of a symmetric resize
        with pytest.raises(BlindSRError, match="one '\\+' after a model that is not bicubic"):
            zoo.load(pointless)
    odd = tmp_path / "odd+"  # a real file whose name ends in '+' is that file
    save_model(lopsided(), tmp_path / "odd.safetensors").rename(odd)
    assert not isinstance(zoo.load(str(odd)), SelfEnsemble)
    assert isinstance(zoo.load(str(odd) + "+"), SelfEnsemble)


def test_the_automatic_tile_makes_room_for_eight_passes(monkeypatch):
    model = lopsided()
    single = bytes_per_pixel(model, torch.float32, torch.device("cpu"))
    assert bytes_per_pixel(SelfEnsemble(model), torch.float32, torch.device("cpu")) == 8 * single
    monkeypatch.setattr(inference, "free_memory", lambda device: 64 << 20)
    plain = Upscaler(model, Settings(tile=None)).tile
    ensembled = Upscaler(SelfEnsemble(model), Settings(tile=None)).tile
    assert plain / 3.2 <= ensembled <= plain / 2.5  # sqrt(8) = 2.83 times smaller, in 16s


def test_upscale_and_eval_take_plus_names(tmp_path, capsys):
    checkpoint = tmp_path / "net.safetensors"
    save_model(lopsided(), checkpoint)
    folder = smooth_images(tmp_path / "hr", n=2, size=(24, 20))
    results = evaluate([str(checkpoint), f"{checkpoint}+"], [str(folder)], ["noise"], ["psnr"],
                       scale=2)
    values = {r.model: r.value for r in results}
    assert set(values) == {str(checkpoint), f"{checkpoint}+"}
    assert values[str(checkpoint)] != values[f"{checkpoint}+"]
    src = folder / "img0.png"
    assert main(["upscale", str(src), "-o", str(tmp_path / "out.png"), "--model",
                 f"{checkpoint}+", "-q"]) == 0
    assert Image.open(tmp_path / "out.png").size == (48, 40)
