import pytest
import torch

from blindsr import zoo
from blindsr.errors import BlindSRError


def test_every_shipped_model_loads_with_its_card_and_upscales():
    shipped = zoo.shipped_models()
    assert "blindsr-x4-classical" in shipped
    for name, entry in shipped.items():
        assert entry.card.is_file() and entry.summary(), name
        model = zoo.load(name)
        out = model(torch.rand(1, 3, 8, 8))
        assert out.shape == (1, 3, 8 * model.scale, 8 * model.scale)


def test_default_is_bicubic_until_a_default_model_ships():
    expected = zoo.DEFAULT_MODEL if zoo.DEFAULT_MODEL in zoo.shipped_models() else "bicubic"
    assert zoo.default_model_name() == expected


def test_bicubic_takes_any_scale_and_modules_are_copied():
    assert zoo.load("bicubic", scale=3).scale == 3
    net = torch.nn.Conv2d(3, 3, 1)
    assert zoo.load(net) is not net


def test_unknown_name_lists_what_exists():
    with pytest.raises(BlindSRError, match="bicubic"):
        zoo.load("no-such-model")
