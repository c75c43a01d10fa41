"""The `and` strategy: ANDNet / ANDGAN steps, the attack's isolation from the networks' gradients,
the ablations, exact resume, and a run through the training loop."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import check_keeps_the_lr_it_made, smooth_images

from blindsr import archs, degrade
from blindsr.config import load_config
from blindsr.errors import BlindSRError
from blindsr.ops.blurpool import blurpool
from blindsr.strategies import Update, get_strategy
from blindsr.strategies.and_ import AND, frozen_call
from blindsr.train import train
from blindsr.train_state import load_checkpoint

SMALL = {"channels": 8, "epsilon": 1.0, "alpha": 0.3, "steps": 3}


def make(params=None, seed=0):
    torch.manual_seed(seed)
    g = archs.build("srresnet", num_feat=4, num_block=1, scale=4)
    return AND(g, AND.parse_params({**SMALL, **(params or {})}), 4, torch.device("cpu"))


def batch(rand_image, n=2, has_hr=None):
    hr = rand_image(n, 3, 32, 32, seed=1)
    has = torch.tensor(has_hr) if has_hr is not None else torch.ones(n, dtype=torch.bool)
    return {"hr": hr, "lr": torch.zeros(n, 3, 8, 8), "has_hr": has,
            "has_lr": torch.zeros(n, dtype=torch.bool)}


def l1_of(s, lr, hr):
    with torch.no_grad():
        return float((s.generator(lr) - hr).abs().mean())


def test_registered_and_self_degrading():
    assert get_strategy("and") is AND
    s = make()
    assert s.degrades_itself() and s.networks() == {} and s.default_optim() == {}
    assert not any(p.requires_grad for p in s.degradation.parameters())


def test_andnet_step_yields_one_l1_generator_update(rand_image):
    s = make()
    (u,) = list(s.training_step(batch(rand_image), 0))
    assert isinstance(u, Update) and u.optimizers == ("generator",)
    assert {"l_l1", "attack_first", "attack_last", "share_conv", "share_noise",
            "share_slope"} <= set(u.logs)
    assert sum(float(u.logs[f"share_{k}"]) for k in ("conv", "noise", "slope")) == \
        pytest.approx(1.0)
    assert u.loss.item() == pytest.approx(float(u.logs["l_l1"]))
    u.loss.backward()
    assert s.generator.conv_first.weight.grad is not None


def test_lr_is_clamped_detached_and_sized(rand_image):
    s = make()
    lr, _ = s.degrade(rand_image(3, 3, 32, 32))
    assert lr.shape == (3, 3, 8, 8) and not lr.requires_grad
    assert lr.min() >= 0 and lr.max() <= 1


def test_attack_leaves_every_network_gradient_alone(rand_image):
    s = make({"gan_weight": 0.1, "gan_type": "ragan", "discriminator_kwargs": {"num_feat": 4}})
    nets = [s.generator, s.discriminator]
    for p in s.generator.parameters():
        p.grad = None
    marked = next(s.discriminator.parameters())
    marked.grad = torch.ones_like(marked)
    hr = rand_image(2, 3, 32, 32)
    with torch.no_grad():
        real = s.discriminator(hr)
    s.degrade(hr, real)
    assert all(p.grad is None for p in s.generator.parameters())
    assert torch.equal(marked.grad, torch.ones_like(marked))
    assert all(p.grad is None for net in nets for p in net.parameters() if p is not marked)


def test_frozen_call_is_differentiable_in_the_input_only():
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    frozen_call(net, x).sum().backward()
    assert x.grad is not None and net.weight.grad is None


def test_attack_raises_the_loss_over_the_identity_on_average(rand_image):
    s = make()
    hr = rand_image(2, 3, 32, 32, seed=4)
    identity = l1_of(s, blurpool(hr, 4), hr)
    attacked = [l1_of(s, s.degrade(hr)[0], hr) for _ in range(3)]
    assert sum(attacked) / 3 > identity * 1.1


def test_attack_batch_runs_the_generator_on_the_first_samples(rand_image):
    s = make({"attack_batch": 1})
    sizes = []
    handle = s.generator.register_forward_hook(lambda m, a, o: sizes.append(a[0].shape[0]))
    try:
        lr, _ = s.degrade(rand_image(3, 3, 32, 32))
    finally:
        handle.remove()
    assert sizes == [1] * SMALL["steps"] and lr.shape[0] == 3


@pytest.mark.parametrize("identity_init,expected", [(True, [2, 2, 3]), (False, [2, 2, 2, 3])])
def test_the_attack_runs_the_degradation_network_once_per_step_after_the_identity(
        rand_image, identity_init, expected):
    # K = 3 on 2 of 3 samples: from the identity the first step's LR is BlurPool and its gradient
    # is analytic (no pass through the network); then one pass per remaining step and the final
    # LR of the whole batch. Without identity initialisation every step needs the network.
    s = make({"attack_batch": 2, "identity_init": identity_init})
    sizes = []
    handle = s.degradation.head[0].conv.register_forward_hook(
        lambda m, a, o: sizes.append(a[0].shape[0]))
    try:
        s.degrade(rand_image(3, 3, 32, 32))
    finally:
        handle.remove()
    assert sizes == expected


@pytest.mark.parametrize("identity_init", [True, False])
def test_the_degradation_network_is_drawn_afresh_at_every_step(rand_image, identity_init):
    from blindsr.degrade.neural import at_identity

    s = make({"identity_init": identity_init})
    hr = rand_image(2, 3, 32, 32)
    seen = []
    for _ in range(3):
        s.degrade(hr)
        # the perturbation is applied functionally: the network keeps its drawn centre point
        assert at_identity(s.degradation) is identity_init
        seen.append(torch.cat([p.detach().flatten() for p in s.degradation.parameters()]))
    assert not torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])


def test_random_ablation_never_runs_the_restorer(rand_image):
    s = make({"perturbation": "random"})
    calls = []
    handle = s.generator.register_forward_hook(lambda *a: calls.append(1))
    try:
        hr = rand_image(2, 3, 32, 32)
        lr, logs = s.degrade(hr)
    finally:
        handle.remove()
    assert calls == [] and logs == {}
    assert 1e-4 < (lr - blurpool(hr, 4)).abs().max()


def test_noise_ablation_is_bicubic_plus_bounded_adversarial_noise(rand_image):
    s = make({"perturbation": "noise", "noise_rms": 0.03})
    hr = rand_image(2, 3, 32, 32, seed=2)
    lr, logs = s.degrade(hr)
    clean = degrade.apply(hr, "bicubic", 4)
    rms = (lr - clean).flatten(1).square().mean(dim=1).sqrt()
    assert torch.all(rms <= 0.03 + 1e-5) and torch.all(rms > 0.01)
    assert l1_of(s, lr, hr) > l1_of(s, clean, hr)
    assert float(logs["attack_last"]) > float(logs["attack_first"])


def test_no_identity_ablation_starts_far_from_blurpool(rand_image):
    hr = rand_image(1, 3, 32, 32)
    lr, _ = make({"identity_init": False, "steps": 0}).degrade(hr)
    assert (lr - blurpool(hr, 4)).abs().mean() > 0.05
    lr, _ = make({"steps": 0}).degrade(hr)
    assert (lr - blurpool(hr, 4).clamp(0, 1)).abs().max() < 1e-4


def test_state_dict_resumes_the_randomness_exactly(rand_image):
    hr = rand_image(2, 3, 32, 32)
    a = make()
    a.degrade(hr)
    state = a.state_dict()
    want, _ = a.degrade(hr)
    b = make()
    assert not torch.equal(b.degrade(hr)[0], want)
    b.load_state_dict(state)
    assert torch.equal(b.degrade(hr)[0], want)
    with pytest.raises(BlindSRError, match="expected state with key 'rng'"):
        b.load_state_dict({})


def test_samples_without_hr_are_left_out(rand_image):
    s = make()
    (u,) = list(s.training_step(batch(rand_image, 3, has_hr=[True, False, True]), 0))
    assert torch.isfinite(u.loss)
    assert list(s.training_step(batch(rand_image, 2, has_hr=[False, False]), 0)) == []


@pytest.mark.parametrize(("gan_type", "disc", "kwargs"), [
    ("vanilla", "unet", {"num_feat": 4}),
    ("ragan", "vgg", {"num_feat": 4, "input_size": 32}),
])
def test_andgan_updates_generator_then_discriminator(rand_image, gan_type, disc, kwargs):
    s = make({"gan_weight": 0.1, "gan_type": gan_type, "discriminator": disc,
              "discriminator_kwargs": kwargs})
    d = s.discriminator
    assert s.networks() == {"discriminator": d}
    assert s.default_optim()["discriminator"]["lr"] == 1e-4
    steps = s.training_step(batch(rand_image), 0)
    g_update = next(steps)
    assert g_update.optimizers == ("generator",) and "l_gan" in g_update.logs
    g_update.loss.backward()
    assert s.generator.conv_first.weight.grad is not None
    assert all(p.grad is None for p in d.parameters())  # G's loss sees D frozen
    for p in s.generator.parameters():
        p.grad = None
    d_update = next(steps)
    assert d_update.optimizers == ("discriminator",)
    assert {"l_d", "d_real", "d_fake"} <= set(d_update.logs)
    d_update.loss.backward()
    assert all(p.grad is not None for p in d.parameters() if p.requires_grad)
    assert all(p.grad is None for p in s.generator.parameters())  # D's loss sees SR detached
    assert next(steps, None) is None


def test_perceptual_term_uses_the_layer_weights(rand_image):
    from blindsr.assets import IndexUnreachableError, fetch

    try:
        fetch(["vgg16"])
    except IndexUnreachableError as err:
        pytest.skip(f"no VGG16 weights: {err}")
    s = make({"perceptual_weight": 2.0, "perceptual_layers": {"conv2_2": 1.0},
              "attack_loss": "pixel"})
    sr, hr = rand_image(1, 3, 32, 32, seed=5), rand_image(1, 3, 32, 32, seed=6)
    parts = s.generator_losses(sr, hr)
    assert set(parts) == {"l_l1", "l_percep"}
    assert parts["l_percep"].item() == pytest.approx(2 * s.perceptual(sr, hr).item())


def test_params_are_validated():
    with pytest.raises(BlindSRError, match="strategy.params.gan_type: must be one of vanilla"):
        AND.parse_params({"gan_type": "wgan"})
    with pytest.raises(BlindSRError, match="strategy.params.discriminator: must be one of"):
        AND.parse_params({"discriminator": "patch"})
    with pytest.raises(BlindSRError, match="weights are all 0"):
        AND.parse_params({"pixel_weight": 0})
    with pytest.raises(BlindSRError, match="strategy.params.epsilon: must be > 0"):
        AND.parse_params({"epsilon": 0})
    with pytest.raises(BlindSRError, match="must be one of neural, noise, random"):
        AND.parse_params({"perturbation": "blur"})
    p = AND.parse_params({})  # the paper's numbers
    assert (p.epsilon, p.alpha, p.steps, p.channels) == (20.0, 6.0, 5, 64)
    assert (p.conv_factor, p.noise_factor, p.slope_factor) == (1.0, 10.0, 50.0)


ROOT = Path(__file__).resolve().parents[1]



def test_trains_through_the_loop_and_resumes_bit_identically(tmp_path):
    data = smooth_images(tmp_path / "data")
    params = {**SMALL, "channels": 4, "steps": 2, "gan_weight": 0.1,
              "discriminator_kwargs": {"num_feat": 4}}
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [
        f"output_dir={json.dumps(str(tmp_path / 'runs'))}",
        f"data.train=[{{path: {json.dumps(str(data))}}}]", "degradation.kind=none",
        "train.iterations=2", "train.checkpoint_every=1",
        "strategy.name=and", f"strategy.params={json.dumps(params)}"])
    result = train(cfg, progress=False)
    assert set(result.networks) == {"generator", "discriminator"}
    last = tmp_path / "runs" / "tiny" / "checkpoints" / "step_0000002"
    reference, state = load_checkpoint(last)
    assert set(state["strategy"]) == {"rng"} and "discriminator" in reference
    shutil.rmtree(last)
    train(cfg, progress=False)  # resumes from step 1
    again, _ = load_checkpoint(last)
    for net in reference:
        assert all(torch.equal(v, again[net][k]) for k, v in reference[net].items()), net


def test_the_step_keeps_the_lr_it_made_for_image_samples(rand_image):
    s = make()
    assert s.sample_pair is None
    check_keeps_the_lr_it_made(s, batch(rand_image))
    assert not s.sample_pair[0].requires_grad


def test_the_discriminator_sees_the_unsharpened_hr_when_there_is_one(rand_image):
    s = make({"gan_weight": 0.1, "discriminator_kwargs": {"num_feat": 4}})
    b = batch(rand_image, n=3, has_hr=[True, False, True])
    b["hr_plain"] = rand_image(3, 3, 32, 32, seed=7)
    seen = []
    s.discriminator.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    steps = s.training_step(b, 0)
    next(steps)
    assert torch.equal(seen[0], b["hr_plain"][[0, 2]])  # D(real): the plain HR of HR samples
    assert all(not torch.equal(x, b["hr"][[0, 2]]) for x in seen)


@pytest.mark.parametrize(("disc", "kwargs", "message"), [
    ("unet", {"num_feat": 0}, "num_feat must be a positive integer, got 0"),
    ("unet", {"num_feat": 2.5}, "num_feat must be a positive integer, got 2.5"),
    ("unet", {"skip_connection": 1}, "skip_connection must be true or false"),
    ("vgg", {"num_in_ch": 1}, "num_in_ch must be 3"),
    ("realness", {}, "set num_outcomes: 1"),
])
def test_bad_discriminator_kwargs_are_one_config_error(disc, kwargs, message):
    with pytest.raises(BlindSRError, match=f"discriminator_kwargs: .*{message}"):
        AND.parse_params({"gan_weight": 0.1, "discriminator": disc,
                          "discriminator_kwargs": kwargs})


def test_a_one_logit_realness_discriminator_serves_the_vanilla_loss(rand_image):
    s = make({"gan_weight": 0.1, "discriminator": "realness",
              "discriminator_kwargs": {"num_outcomes": 1, "num_feat": 4, "num_down": 2}})
    assert next(s.training_step(batch(rand_image), 0)).logs["l_gan"].isfinite()
