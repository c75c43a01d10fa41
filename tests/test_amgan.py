"""AMGAN / AMGAN*: the RealnessGAN loss against its formulas, the realness discriminator, the
`amgan` strategy's updates and losses, and loop steps with resume for both GAN variants."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import check_keeps_the_lr_it_made, smooth_images

from blindsr import archs
from blindsr.archs.discriminators import RealnessDiscriminator, build_discriminator
from blindsr.config import load_config
from blindsr.errors import BlindSRError
from blindsr.losses.gan import RealnessGAN, RelativisticAverageGAN, realness_anchor
from blindsr.strategies import get_strategy
from blindsr.strategies.amgan import AMGAN, VGG_LAYERS
from blindsr.train import train
from blindsr.train_state import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
N = 51


def kl(p, q):
    """KL(p || q) per row, float64, by the textbook formula."""
    p, q = p.double(), q.double()
    return (p * (p / q).log()).sum(dim=1)


def logits(seed, n=4, k=N):
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed))


# -- RealnessGAN --------------------------------------------------------------------------------


def test_anchors_are_gaussian_and_uniform_distributions():
    gauss, unif = realness_anchor("gaussian", N), realness_anchor("uniform", N)
    assert gauss.sum().item() == pytest.approx(1) and unif.sum().item() == pytest.approx(1)
    assert torch.allclose(unif, torch.full((N,), 1 / N, dtype=torch.float64))
    assert gauss.argmax() == N // 2 and torch.allclose(gauss, gauss.flip(0))
    assert gauss[0] < 0.02 * gauss[N // 2]  # +-3 sigma at the ends
    loss = RealnessGAN()
    assert torch.allclose(loss.a1.double(), gauss) and torch.allclose(loss.a0.double(), unif)
    swapped = RealnessGAN(real_anchor="uniform")
    assert torch.allclose(swapped.a1.double(), unif)
    with pytest.raises(BlindSRError, match="real_anchor must be gaussian or uniform"):
        RealnessGAN(real_anchor="skewed")


def test_discriminator_loss_is_zero_at_the_anchors_and_kl_otherwise():
    loss = RealnessGAN()
    at_a1 = loss.a1.log().expand(3, -1)  # log-probabilities are valid logits
    at_a0 = loss.a0.log().expand(3, -1) + 5.0  # softmax ignores a constant shift
    assert loss.discriminator(at_a1, at_a0).item() == pytest.approx(0, abs=1e-6)
    real, fake = logits(0), logits(1)
    want = kl(loss.a1[None], real.softmax(1)).mean() + kl(loss.a0[None], fake.softmax(1)).mean()
    got = loss.discriminator(real, fake)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    assert got.item() > 0.1
    # gradient descent on the logits moves D toward the anchors
    real.requires_grad_(True)
    loss.discriminator(real, at_a0).backward()
    assert loss.discriminator(real.detach() - 0.5 * real.grad, at_a0) < loss.discriminator(
        real.detach(), at_a0)


@pytest.mark.parametrize("objective", ["paper", "relative", "anchor"])
def test_generator_objectives_by_hand(objective):
    loss = RealnessGAN(generator_objective=objective)
    real, fake = logits(2), logits(3).requires_grad_(True)
    p_real, q_fake = real.softmax(1), fake.detach().softmax(1)
    away = kl(loss.a0[None], q_fake).mean()
    want = {"paper": kl(p_real, q_fake).mean() - away,
            "relative": kl(p_real, q_fake).mean(),
            "anchor": kl(loss.a1[None], q_fake).mean() - away}[objective]
    real_arg = None if objective == "anchor" else real.requires_grad_(True)
    got = loss.generator(fake, real_arg)
    assert got.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-6)
    assert loss.needs_real == (objective != "anchor")
    got.backward()
    assert fake.grad is not None and (real_arg is None or real_arg.grad is None)


def test_realness_handles_per_pixel_outputs_and_errors():
    loss = RealnessGAN(num_outcomes=5)
    real, fake = torch.randn(2, 5, 3, 3), torch.randn(2, 5, 3, 3)
    flat = loss.discriminator(real.permute(0, 2, 3, 1).reshape(-1, 5),
                              fake.permute(0, 2, 3, 1).reshape(-1, 5))
    assert loss.discriminator(real, fake).item() == pytest.approx(flat.item(), rel=1e-5)
    with pytest.raises(BlindSRError, match=r"D\(fake\) must have 5 outcomes"):
        loss.generator(torch.randn(2, 4), real)
    with pytest.raises(BlindSRError, match=r"needs D\(real\)"):
        loss.generator(fake)
    with pytest.raises(BlindSRError, match="num_outcomes must be an integer >= 2"):
        RealnessGAN(num_outcomes=1)
    with pytest.raises(BlindSRError, match="generator_objective must be one of"):
        RealnessGAN(generator_objective="hinge")


# -- the discriminator ---------------------------------------------------------------------------


def test_realness_discriminator_outputs_pooled_outcomes():
    torch.manual_seed(0)
    d = build_discriminator("realness", num_outcomes=N, num_feat=4)
    assert isinstance(d, RealnessDiscriminator)
    assert d(torch.rand(2, 3, 32, 48)).shape == (2, N)
    one = build_discriminator("realness", num_outcomes=1, num_feat=4, num_down=2)
    assert one(torch.rand(3, 3, 4, 4)).shape == (3, 1)
    assert sum("parametrizations" in n for n, _ in d.named_parameters()) == 4
    with pytest.raises(BlindSRError, match="needs inputs of at least 16 pixels"):
        d(torch.rand(1, 3, 8, 32))
    with pytest.raises(BlindSRError, match="num_outcomes must be a positive integer"):
        build_discriminator("realness", num_outcomes=0)


# -- the amgan strategy --------------------------------------------------------------------------


def make(params=None):
    torch.manual_seed(0)
    g = archs.build("amnet", num_feat=4, num_block=1, predictor_feat=4, am_hidden=4)
    base = {"vgg_weight": 0, "dists_weight": 0, "discriminator_kwargs": {"num_feat": 4}}
    return AMGAN(g, AMGAN.parse_params({**base, **(params or {})}), 4, torch.device("cpu"))


def batch(rand_image, n=2):
    return {"hr": rand_image(n, 3, 32, 32, seed=1), "lr": torch.zeros(n, 3, 8, 8),
            "has_hr": torch.ones(n, dtype=torch.bool), "has_lr": torch.zeros(n, dtype=torch.bool)}


def test_registered_with_the_papers_weights():
    assert get_strategy("amgan") is AMGAN
    p = AMGAN.parse_params({})
    assert (p.pixel_weight, p.vgg_weight, p.gan_weight, p.dists_weight) == (1, 15, 0.01, 10)
    assert (p.gan, p.num_outcomes, p.predictor_weight) == ("realness", 51, 0)
    assert VGG_LAYERS == pytest.approx({"relu1_1": 1e3 / 64**2, "relu2_1": 1e3 / 128**2,
                                        "relu3_1": 1e3 / 256**2, "relu4_1": 1e3 / 512**2,
                                        "relu5_1": 1e3 / 512**2})
    s = make()
    assert s.degrades_itself() and s.networks() == {"discriminator": s.discriminator}
    assert s.default_optim()["discriminator"]["lr"] == 1e-4
    assert s.discriminator.num_outcomes == 51 and isinstance(s.gan, RealnessGAN)
    star = make({"gan": "relativistic"})
    assert star.discriminator.num_outcomes == 1
    assert isinstance(star.gan, RelativisticAverageGAN)


def test_vgg16_by_default_vgg19_with_a_weight_file():
    s = make({"vgg_weight": 15})
    assert s.perceptual.arch == "vgg16" and s.perceptual.layer_weights == VGG_LAYERS
    assert s.perceptual.criterion == "l1"
    s = make({"vgg_weight": 15, "vgg_weights": "my_vgg19.pth"})  # read at the first step
    assert s.perceptual.arch == "vgg19" and s.perceptual.weights == "my_vgg19.pth"


@pytest.mark.parametrize("gan", ["realness", "relativistic"])
def test_generator_then_discriminator_updates(rand_image, gan):
    s = make({"gan": gan})
    d, g = s.discriminator, s.generator
    b = batch(rand_image)
    state = s.state_dict()
    steps = s.training_step(b, 0)
    g_update = next(steps)
    assert g_update.optimizers == ("generator",)
    assert set(g_update.logs) == {"l_l1", "l_gan"}
    # the renderer ran on the true code of the drawn sigmas; the GAN term as the loss says
    s.load_state_dict(state)
    lr, _, code = s.degrade(b["hr"])
    with torch.no_grad():
        sr = g(lr, code)
        l1 = (sr - b["hr"]).abs().mean()
        l_gan = 0.01 * s.gan.generator(d(sr), d(b["hr"]))
    assert float(g_update.logs["l_l1"]) == pytest.approx(float(l1), rel=1e-5)
    # at initialisation the realness KL is a difference of near-equal terms (~1e-6): its last
    # digits depend on the CPU's summation order (AVX2 and AVX-512 differ by 1.5e-9)
    assert float(g_update.logs["l_gan"]) == pytest.approx(float(l_gan), rel=1e-4, abs=1e-8)
    g_update.loss.backward()
    assert g.blocks[0].am1.fc2.weight.grad is not None
    assert all(p.grad is None for p in d.parameters())  # G's loss sees D frozen
    assert g.predictor.head.weight.grad is None  # predictor_weight 0: not trained
    for p in g.parameters():
        p.grad = None
    d_update = next(steps)
    assert d_update.optimizers == ("discriminator",) and "l_d" in d_update.logs
    d_update.loss.backward()
    assert all(p.grad is not None for p in d.parameters() if p.requires_grad)
    assert all(p.grad is None for p in g.parameters())  # D's loss sees SR detached
    assert next(steps, None) is None


def sn_buffers(d):
    return {k: v.clone() for k, v in d.state_dict().items() if k.endswith(("._u", "._v"))}


@pytest.mark.parametrize("gan", ["realness", "relativistic"])
def test_discriminator_loss_and_one_spectral_norm_estimate_per_step(rand_image, gan):
    import copy

    s = make({"gan": gan})
    d, b = s.discriminator, batch(rand_image)
    once = copy.deepcopy(d)
    state = s.state_dict()
    steps = s.training_step(b, 0)
    next(steps)
    d_update = next(steps)
    assert d.training  # the eval-mode passes restored the mode
    # only D(HR) advanced the power iteration: as one train-mode call on a copy
    once(b["hr"])
    after, want = sn_buffers(d), sn_buffers(once)
    assert after and all(torch.equal(after[k], want[k]) for k in want)
    # l_d = gan.discriminator(D(HR), D(SR)) with that one estimate, arguments in that order
    s.load_state_dict(state)
    lr, _, code = s.degrade(b["hr"])
    d.eval()
    with torch.no_grad():
        sr = s.generator(lr, code)
        real, fake = d(b["hr"]), d(sr)
        want_ld = s.gan.discriminator(real, fake).item()
        swapped = s.gan.discriminator(fake, real).item()
    assert float(d_update.logs["l_d"]) == pytest.approx(want_ld, rel=1e-5, abs=1e-7)
    assert abs(swapped - want_ld) > 1e-4


def test_predictor_can_keep_training(rand_image):
    s = make({"predictor_weight": 1.0})
    g_update = next(s.training_step(batch(rand_image), 0))
    assert {"l_code", "sigma_err"} <= set(g_update.logs)


def test_perceptual_terms_use_vgg_and_dists(rand_image):
    from blindsr.assets import IndexUnreachableError, fetch
    from blindsr.losses.perceptual import DISTSLoss, PerceptualLoss

    try:
        fetch(["vgg16", "dists"])
    except IndexUnreachableError as err:
        pytest.skip(f"no VGG16 / DISTS weights: {err}")
    s = make({"vgg_weight": 15, "dists_weight": 10, "gan_weight": 0})
    sr, hr = rand_image(1, 3, 32, 32, seed=5), rand_image(1, 3, 32, 32, seed=6)
    parts = s.generator_losses(sr, hr, None)
    assert set(parts) == {"l_l1", "l_vgg", "l_dists"}
    assert parts["l_vgg"].item() == pytest.approx(
        15 * PerceptualLoss(VGG_LAYERS, "vgg16").forward(sr, hr).item(), rel=1e-5)
    assert parts["l_dists"].item() == pytest.approx(10 * DISTSLoss()(sr, hr).item(), rel=1e-5)
    assert parts["l_vgg"].item() > 0 and parts["l_dists"].item() > 0


def test_params_are_validated():
    with pytest.raises(BlindSRError, match="weights are all 0"):
        AMGAN.parse_params({"pixel_weight": 0, "vgg_weight": 0, "dists_weight": 0,
                            "gan_weight": 0})
    with pytest.raises(BlindSRError, match="set num_outcomes as a strategy param"):
        AMGAN.parse_params({"discriminator_kwargs": {"num_outcomes": 3}})
    with pytest.raises(BlindSRError, match="gan: must be one of realness, relativistic"):
        AMGAN.parse_params({"gan": "vanilla"})
    with pytest.raises(BlindSRError, match="num_outcomes: must be >= 2"):
        AMGAN.parse_params({"num_outcomes": 1})



@pytest.mark.parametrize("gan", ["realness", "relativistic"])
def test_amgan_trains_through_the_loop_and_resumes(tmp_path, gan):
    data = smooth_images(tmp_path / "data")
    params = {"gan": gan, "vgg_weight": 0, "dists_weight": 0,
              "discriminator_kwargs": {"num_feat": 4}}
    kw = {"num_feat": 4, "num_block": 1, "predictor_feat": 4, "am_hidden": 4}
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [
        f"output_dir={json.dumps(str(tmp_path / 'runs'))}",
        f"data.train=[{{path: {json.dumps(str(data))}}}]", "degradation.kind=none",
        "model.arch=amnet", f"model.kwargs={json.dumps(kw)}",
        "train.iterations=2", "train.checkpoint_every=1",
        "strategy.name=amgan", f"strategy.params={json.dumps(params)}"])
    result = train(cfg, progress=False)
    assert set(result.networks) == {"generator", "discriminator"}
    rows = [json.loads(r) for r in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"train/l_l1", "train/l_gan", "train/l_d"} <= set(rows[-1])
    last = result.run_dir / "checkpoints" / "step_0000002"
    reference, state = load_checkpoint(last)
    assert "discriminator" in reference and set(state["strategy"]) == {"rng"}
    shutil.rmtree(last)
    train(cfg, progress=False)  # resumes from step 1
    again, _ = load_checkpoint(last)
    for net in reference:
        assert all(torch.equal(v, again[net][k]) for k, v in reference[net].items()), net


def test_the_step_keeps_the_lr_it_made_for_image_samples(rand_image):
    check_keeps_the_lr_it_made(make(), batch(rand_image))


def test_the_discriminator_sees_the_unsharpened_hr_when_there_is_one(rand_image):
    s = make()
    b = batch(rand_image, n=2)
    b["hr_plain"] = rand_image(2, 3, 32, 32, seed=7)
    seen = []
    s.discriminator.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    next(s.training_step(b, 0))
    assert torch.equal(seen[0], b["hr_plain"])
    assert not any(torch.equal(x, b["hr"]) for x in seen)


def test_bad_discriminator_kwargs_are_one_config_error():
    with pytest.raises(BlindSRError, match="discriminator_kwargs: .*num_in_ch must be 3"):
        AMGAN.parse_params({"discriminator_kwargs": {"num_in_ch": 1}})
    with pytest.raises(BlindSRError, match="discriminator_kwargs: .*num_feat must be a positive"):
        AMGAN.parse_params({"discriminator_kwargs": {"num_feat": 0}})
