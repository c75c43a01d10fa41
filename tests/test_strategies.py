import pytest
import torch

from blindsr import archs
from blindsr.errors import BlindSRError
from blindsr.strategies import STRATEGIES, Strategy, Update, get_strategy
from blindsr.strategies.plain import Plain


def make_plain(**params):
    torch.manual_seed(0)
    g = archs.build("srresnet", num_feat=4, num_block=1, scale=2)
    return Plain(g, Plain.parse_params(params), 2, torch.device("cpu"))


def batch(rand_image, has_hr=(True, True, True)):
    hr = rand_image(3, h=16, w=16, seed=1)
    return {"hr": hr, "lr": rand_image(3, h=8, w=8, seed=2),
            "has_hr": torch.tensor(has_hr), "has_lr": torch.ones(3, dtype=torch.bool)}


def test_registry():
    assert STRATEGIES["plain"] is Plain and get_strategy("plain") is Plain
    assert issubclass(Plain, Strategy)
    with pytest.raises(BlindSRError, match="unknown strategy 'plan' \\(did you mean 'plain'\\?\\)"):
        get_strategy("plan")


def test_params_are_validated_with_the_allowed_keys():
    assert Plain.parse_params({"loss": "charbonnier", "weight": 2}).weight == 2.0
    with pytest.raises(BlindSRError) as e:
        Plain.parse_params({"los": "l1"})
    assert "allowed: loss, weight, eps" in str(e.value) and len(str(e.value).splitlines()) == 1
    with pytest.raises(BlindSRError, match="strategy.params.weight: must be > 0"):
        Plain.parse_params({"weight": 0})


@pytest.mark.parametrize("loss", ["l1", "l2", "charbonnier"])
def test_plain_yields_one_generator_update(rand_image, loss):
    s = make_plain(loss=loss, weight=0.5)
    b = batch(rand_image)
    assert s.networks() == {} and not s.degrades_itself() and s.state_dict() == {}
    updates = list(s.training_step(b, 0))
    assert len(updates) == 1 and isinstance(updates[0], Update)
    u = updates[0]
    assert u.optimizers == ("generator",)
    with torch.no_grad():
        d = s.generator(b["lr"]) - b["hr"]
    expected = {"l1": d.abs().mean(), "l2": (d * d).mean(),
                "charbonnier": torch.sqrt(d * d + 1e-6).mean()}[loss]
    assert u.loss.item() == pytest.approx(0.5 * expected.item(), rel=1e-5)
    assert u.logs[f"l_{loss}"].item() == pytest.approx(u.loss.item())
    u.loss.backward()
    assert s.generator.conv_first.weight.grad is not None


def test_plain_supervises_only_samples_with_hr(rand_image):
    s = make_plain()
    b = batch(rand_image, has_hr=(True, False, True))
    (u,) = list(s.training_step(b, 0))
    with torch.no_grad():
        sr = s.generator(b["lr"][[0, 2]])
    assert u.loss.item() == pytest.approx((sr - b["hr"][[0, 2]]).abs().mean().item(), rel=1e-5)
    assert list(s.training_step(batch(rand_image, has_hr=(False,) * 3), 0)) == []


def test_lr_only_data_is_refused_by_strategies_that_need_hr():
    from blindsr.strategies.amgan_rl import AMRL
    from blindsr.strategies.dual import Dual

    s = make_plain()
    s.check_data({"hr", "paired"})
    with pytest.raises(BlindSRError, match="data.train: has LR-only images, which strategy "
                                           "plain cannot learn from"):
        s.check_data({"hr", "lr"})
    learners = {name for name, cls in STRATEGIES.items() if cls.learns_from_lr_only}
    assert learners == {Dual.name, AMRL.name}


def test_a_strategy_named_by_its_file_is_pointed_to_its_name():
    with pytest.raises(BlindSRError, match=r"did you mean 'amrl', defined in "
                                           r"strategies/amgan_rl.py\?"):
        get_strategy("amgan_rl")
