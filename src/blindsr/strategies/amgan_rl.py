"""``amrl``: the kernel predictor of a frozen AMNet / AMGAN trained as an actor with
reinforcement learning on any reward (AMNet-RL / AMGAN-RL: Hui, Li, Wang, Gao, "Learning the
Non-differentiable Optimization for Blind Super-Resolution", CVPR 2021).

The generator is an AMNet with its predictor (``model.init``: the renderer + supervised
predictor of an ``amnet`` / ``amgan`` run). Only ``generator.predictor`` (the actor mu(s)) is
trained: every other generator parameter gets ``requires_grad=False`` in ``__init__``, so the
loop's optimiser never sees it (``make_optimizer`` keeps trainable parameters only) and the EMA
of the renderer stays equal to it. The environment is the frozen renderer plus a reward
(:mod:`blindsr.rewards`: ``neg_niqe``, ``psnr``, ``neg_lpips`` or ``module:function``).

One iteration (the strategy makes LR itself):

1. sigma ~ U(the model's sigma range); ``s`` = LR = ``blur_downsample(HR, sigma)`` rounded to
   8-bit levels (so the state stored as uint8 is exactly what the actor saw). LR-only samples
   of the data (unpaired real images, e.g. ``lr:RealSRSet[0::2]``) are states as they are, scored
   without an HR: they need a no-reference reward (``neg_niqe`` or a callable; a one-line error
   otherwise), and let a no-reference actor learn on the domain it will serve;
2. ``a`` = the actor's code ``mu(s)`` explored in sigma (below); ``SR = render(s, a)`` and
   ``r = reward(SR, HR, s)`` under no_grad; the transition (s, a, r) goes into the replay
   buffer (non-finite rewards, e.g. NIQE of a flat image, are dropped and counted in
   ``dropped``). Degradation, rendering and rewards run in float32 with autocast off, whatever
   ``train.amp`` says (the 8-bit states and the rewards must not depend on it);
3. ``updates`` times: a minibatch from the buffer; critic loss ``(Q(s, a) - y)^2`` ->
   ``Update(l_critic, ("critic",))``; then (after ``warmup`` iterations) the deterministic
   policy gradient ``-Q(s, project(mu(s)))`` through the critic with detached weights
   (``functional_call``), so only the predictor gets gradients -> ``Update(l_actor,
   ("generator",))``.

The code units come FROM THE MODEL: its ``sigma_range`` / ``code_box`` buffers, recorded by the
``amnet`` / ``amgan`` run that trained it (:mod:`blindsr.archs.amnet`); the kind follows from
``code_dim`` (1: sigma, >= 2: PCA). ``code`` (``auto``, ``sigma``, ``pca``) and ``sigma_range``
(null: the model's) are checks only: a value other than the model's is a one-line error. A
model whose units were never recorded (a fresh one, no ``model.init``) is refused: its
renderer has not learnt any code.

Choices where the paper is silent (its supplementary's Algorithm 1 could not be consulted; the
structure is DDPG's, which the paper names):

- Episodes are one step long: the action (a kernel code) ends the episode, the image does not
  change. The target is therefore ``y = r`` (``gamma: 0``, the default). With ``gamma > 0`` the
  DDPG target ``y = r + gamma Q'(s', clip(mu'(s')))`` is used with target networks mu', Q'
  (soft updates, rate ``tau``), and ``s' = s`` (the same LR: the action does not move the
  state); the targets are non-trained state, checkpointed by :meth:`AMRL.state_dict`.
- Baseline (``baseline``): the stored reward is ``r(s, a) - r(s, b(s))``, the gain of the
  explored action over a baseline action for the same state. It costs one more render and
  reward per sample, and removes the image-content part of the reward (PSNR varies by several
  dB between crops, the action by tenths). The baseline does not depend on the explored action
  given s, so ``grad_a Q`` and the policy gradient are unchanged while the critic's target
  variance drops.

  - ``reference`` (default): ``b(s)`` is the code of the frozen initial (supervised) predictor
    (the critic's reference, so ``critic_reference`` must be on), projected onto the family. With
    ``gamma: 0`` the targets are stationary: a transition's target never depends on when it was
    collected, and the logged ``gain`` is how far the explored actions beat the supervised
    predictor (for PCA codes, its projection onto the family rather than the box-clamped code
    inference uses).
  - ``actor``: ``b(s) = project(mu(s))``, the actor's own code at collection time. Its targets
    move with the actor: for the critic, which cannot see the actor that collected a transition,
    old and new transitions of similar states disagree by the change in the actor's reward. With
    it, the AMNet-RL runs of ``benchmarks/RESULTS.md`` drifted below the supervised codes and a
    run on 256-pixel states collapsed to the smallest sigma within 75 actor iterations.
  - ``none``: the raw reward. ``reward_scale`` multiplies what is stored.
- Action box: the model's ``code_box``, the per-dimension min/max of the kernel codes of 256
  sigmas over the range (``[0, 1]`` for ``sigma`` codes); the model clamps its predictor's
  codes into it at inference, and every action here is clipped to it.
- Exploration is in sigma, so that every explored action is the code of a Gaussian kernel of
  the family the renderer was trained on (a PCA code perturbed per dimension is not):
  ``a = clip(encode(clamp(decode(mu) + noise * (hi - lo) * eps, lo, hi)))``, eps ~ N(0, 1), [lo,
  hi] the sigma range, ``decode`` the nearest sigma of the family; ``noise`` decays linearly
  from ``noise_start`` to ``noise_end`` over ``noise_steps`` iterations. For sigma codes this
  is ``clip(mu + noise * eps, 0, 1)``.
- Actor update: the critic has only seen actions on the kernel family, so it is evaluated at
  mu's projection onto the family, ``project(mu) = clip(encode(decode(mu)))`` (for sigma codes
  ``clip(mu)``), with a straight-through estimator ``mu + (project(mu) - mu).detach()``: the
  value at the projection, the gradient of the identity. The loss adds ``box_weight * sum_d
  ((mu_d - project(mu)_d) / w_d)^2`` (logged as ``off_family`` without the weight), w_d the
  box width of dimension d, floored at 1e-3 of the largest width: it pulls a predictor that
  leaves the box, or the family, back in every dimension (PCA widths go from ~1 down to ~1e-4
  at 10 dimensions and ~1e-9 at 20; without the floor the narrowest dimensions, which hardly
  change the kernel, would dominate the loss by many orders of magnitude). So the model's
  inference clamp to the box sees codes close to the projection the critic judged. The
  critic's input keeps one scale W (the largest width), so tiny dimensions are not magnified
  there. Why the projection and not the box clip: with exploration on the family, Q at a
  clipped off-family code is the critic's extrapolation, and in a toy where the reward is a
  function of the first PCA component (3-D codes, 400 iterations, 3 seeds, target sigma 3.0)
  the actor's decoded sigma then stayed at 1.31 / 1.30 / 1.32, against 2.43 / 3.56 / 3.75
  with the projection (``box_weight`` 100 there; at 1 both drifted far out of the box under
  that toy's large reward scale; a noisy toy: a hint, not a proof).
- Anchor (``anchor_weight``, default 0: off): the actor loss may add ``anchor_weight * sum_d
  ((mu_d - ref_d) / w_d)^2``, ref the frozen supervised predictor's code for s projected onto
  the family (logged as ``anchor``), as TD3+BC (Fujimoto and Gu, 2021) adds a behaviour-cloning
  term: the critic only knows the rewards of codes near those explored around the supervised
  ones, and the deterministic policy gradient follows its extrapolation anywhere. Without it, a
  -NIQE run on 80x80 states (``configs/amgan/amgan_rl_niqe_real80.yaml``) drove every code to
  the smallest sigma within 50 actor iterations. At equilibrium the actor moves from the
  supervised code by about the critic's slope / (2 anchor_weight) in box-width units.
- Critic Q(s, a): a 4-conv CNN (LeakyReLU 0.2, two stride-2) on the LR, global average pooled,
  concatenated with an MLP embedding of the action centred on the box and divided by W/2 (the
  sigma code maps to [-1, 1]), then a 2-layer MLP to one value. Adam, lr 1e-3 by default
  (``optim.critic``). With ``critic_reference`` (default) the action MLP also gets the code
  that a frozen copy of the *initial* (supervised) predictor gives for s (clipped to the box,
  as the model clamps it): a function of the state only, so still a critic Q(s, a), but one
  that need not rediscover blur estimation from scratch. The reward peaks near the true code,
  which the supervised predictor estimates; without this input the critic's CNN learns the
  state dependence slowly and a pilot actor (300 iterations) collapsed to one code for every
  image. The copy is a frozen submodule of the critic (``critic.reference.*``), so it travels
  with the critic's checkpoint weights; the optimiser skips it (no trainable parameters).
- Replay buffer: a ring of ``buffer_size`` transitions on the CPU, states as uint8 (2000 LR
  crops of 24x24: 3.5 MB), sampled uniformly with the strategy's own CPU generator (seeded from
  ``seed`` and the process rank); buffer, generator state and target networks are checkpointed,
  so a resumed run continues bit-identically.
- Target networks (``gamma > 0``) are soft-updated only after an update the loop applied: the
  loop skips an update whose loss is non-finite on any process, and so does the soft update
  (the same all-process check). A step skipped for a non-finite gradient norm with a finite
  loss (``train.grad_clip``) still soft-updates, toward the unchanged network: harmless.
- Logs: the loop only takes logs with an update, and an update steps an optimiser, so the
  iterations before the buffer holds ``minibatch`` transitions yield nothing; their collection
  logs are held (the last 100; not checkpointed) and their means, together with this
  iteration's, go out with the first update.

Logs: ``reward`` (mean raw reward of the explored actions), ``gain`` (mean explored minus
baseline reward; ``gain_real``: over the LR-only states), ``q`` (critic on the minibatch),
``l_critic``, ``l_actor``, ``q_actor`` (Q(s, project(mu(s)))), ``off_family``, ``code`` (mean
predicted code), ``sigma_err`` (mean |decoded sigma of mu(s) - true sigma| over the synthetic
states), ``noise``, ``buffer`` (transitions held), ``dropped`` (non-finite rewards, when any).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from blindsr.degrade.kernel_code import KernelCoder, coder_of_model
from blindsr.errors import BlindSRError
from blindsr.schema import SEED_LIMIT, bounded, fail
from blindsr.strategies.and_ import frozen_call
from blindsr.strategies.base import Strategy, Update, process_generator

WIDTH_FLOOR = 1e-3  # box-penalty widths are at least this fraction of the largest width
HELD_LOGS = 100  # collection logs held at most while no update can carry them


@dataclass
class AMRLParams:
    reward: str = "neg_niqe"  # neg_niqe | psnr | neg_lpips | module.path:function
    reward_scale: float = bounded(1.0, gt=0)
    baseline: Literal["reference", "actor", "none"] = "reference"  # stored: r(a) - r(b(s))
    code: Literal["auto", "sigma", "pca"] = "auto"  # a check: must be the model's (auto: it)
    sigma_range: list[float] | None = None  # a check: [lo, hi] must be the model's (null: it)
    gamma: float = bounded(0.0, ge=0, lt=1)  # 0: one-step episodes, y = r
    tau: float = bounded(0.005, gt=0, le=1)  # target networks' soft update (gamma > 0)
    buffer_size: int = bounded(2000, ge=1)
    minibatch: int = bounded(32, ge=1)
    updates: int = bounded(1, ge=1)  # critic + actor updates per iteration
    warmup: int = bounded(50, ge=0)  # iterations that fill the buffer before the actor learns
    noise_start: float = bounded(0.1, ge=0)  # exploration std, fraction of the sigma range
    noise_end: float = bounded(0.02, ge=0)
    noise_steps: int = bounded(1000, ge=1)
    box_weight: float = bounded(1.0, ge=0)
    anchor_weight: float = bounded(0.0, ge=0)  # pull toward the supervised code (TD3+BC-like)
    critic_feat: int = bounded(32, ge=1)
    critic_hidden: int = bounded(64, ge=1)
    critic_reference: bool = True  # the critic also sees the initial predictor's code for s
    seed: int = bounded(0, ge=0, lt=SEED_LIMIT)

    def check(self, path: str) -> None:
        from blindsr.rewards import get_reward

        r = self.sigma_range
        if r is not None and (len(r) != 2 or not 0 < r[0] < r[1]):
            raise fail(f"{path}.sigma_range", f"must be [lo, hi] with 0 < lo < hi, got {r}")
        if self.baseline == "reference" and not self.critic_reference:
            raise fail(f"{path}.baseline", "reference needs critic_reference: true (the "
                       "frozen initial predictor lives in the critic)")
        if self.anchor_weight > 0 and not self.critic_reference:
            raise fail(f"{path}.anchor_weight", "needs critic_reference: true (the anchor is "
                       "the frozen initial predictor's code, which lives in the critic)")
        if self.minibatch > self.buffer_size:
            raise fail(f"{path}.minibatch", f"{self.minibatch} is larger than buffer_size "
                       f"{self.buffer_size}: the buffer could never fill a minibatch")

        try:
            get_reward(self.reward)
        except BlindSRError as e:
            raise fail(f"{path}.reward", str(e)) from None


class Critic(nn.Module):
    """Q(s, a): CNN features of the LR image + an embedding of the action (and, with a
    ``reference`` predictor, of its frozen estimate for s) -> one value per sample."""

    def __init__(self, code_dim: int, lo: Tensor, hi: Tensor, num_feat: int = 32,
                 hidden: int = 64, in_ch: int = 3, reference: nn.Module | None = None) -> None:
        super().__init__()
        f = num_feat
        act = nn.LeakyReLU(0.2, inplace=True)
        self.features = nn.Sequential(
            nn.Conv2d(in_ch, f, 3, 1, 1), act, nn.Conv2d(f, f, 4, 2, 1), act,
            nn.Conv2d(f, 2 * f, 4, 2, 1), act, nn.Conv2d(2 * f, 2 * f, 3, 1, 1), act)
        self.reference = reference
        if reference is not None:
            reference.requires_grad_(False)
        inputs = code_dim * (2 if reference is not None else 1)
        self.action = nn.Sequential(nn.Linear(inputs, hidden), nn.LeakyReLU(0.2, inplace=True))
        self.head = nn.Sequential(nn.Linear(2 * f + hidden, hidden),
                                  nn.LeakyReLU(0.2, inplace=True), nn.Linear(hidden, 1))
        self.register_buffer("lo", lo.detach().clone().float().reshape(code_dim))
        self.register_buffer("hi", hi.detach().clone().float().reshape(code_dim))

    def _unit(self, code: Tensor) -> Tensor:
        width = (self.hi - self.lo).max()
        return (2 * code.to(self.lo.dtype) - self.lo - self.hi) / width

    def forward(self, s: Tensor, a: Tensor) -> Tensor:
        """(N, C, h, w) states, (N, code_dim) actions -> (N,) values."""
        z = self._unit(a)
        if self.reference is not None:
            ref = self.reference(s).detach().float()
            ref = torch.maximum(torch.minimum(ref, self.hi), self.lo)  # as the model clamps it
            z = torch.cat([z, self._unit(ref)], dim=1)
        feat = self.features(s).mean(dim=(2, 3))
        return self.head(torch.cat([feat, self.action(z.to(feat.dtype))], dim=1)).squeeze(1)


class ReplayBuffer:
    """A ring of (state uint8, action, reward) transitions kept on the CPU."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self.states: Tensor | None = None
        self.actions: Tensor | None = None
        self.rewards: Tensor | None = None
        self.pos = 0
        self.filled = 0

    def __len__(self) -> int:
        return self.filled

    def _allocate(self, state_shape: tuple[int, ...], code_dim: int) -> None:
        self.states = torch.zeros(self.capacity, *state_shape, dtype=torch.uint8)
        self.actions = torch.zeros(self.capacity, code_dim)
        self.rewards = torch.zeros(self.capacity)

    def push(self, states: Tensor, actions: Tensor, rewards: Tensor) -> None:
        """Add N transitions (states float in [0, 1]), overwriting the oldest when full."""
        n = states.shape[0]
        if n == 0:
            return
        if self.states is None:
            self._allocate(tuple(states.shape[1:]), actions.shape[1])
        if tuple(states.shape[1:]) != tuple(self.states.shape[1:]):
            raise BlindSRError(f"replay buffer holds states of shape {tuple(self.states.shape[1:])}"
                               f", got {tuple(states.shape[1:])} (train.patch changed?)")
        states, actions, rewards = states[-self.capacity:], actions[-self.capacity:], \
            rewards[-self.capacity:]
        n = states.shape[0]
        idx = (self.pos + torch.arange(n)) % self.capacity
        self.states[idx] = (states.detach().float().clamp(0, 1) * 255).round().to("cpu",
                                                                                  torch.uint8)
        self.actions[idx] = actions.detach().float().cpu()
        self.rewards[idx] = rewards.detach().float().cpu()
        self.pos = int((self.pos + n) % self.capacity)
        self.filled = min(self.capacity, self.filled + n)

    def sample(self, n: int, generator: torch.Generator,
               device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """``n`` transitions drawn uniformly with replacement: (states float, actions, rewards)."""
        if self.filled == 0:
            raise BlindSRError("replay buffer is empty")
        idx = torch.randint(self.filled, (n,), generator=generator)
        s = self.states[idx].to(device).float() / 255
        return s, self.actions[idx].to(device), self.rewards[idx].to(device)

    def state_dict(self) -> dict:
        """The filled part, position and count (tensors and ints)."""
        if self.states is None:
            return {"pos": 0, "filled": 0}
        k = self.filled
        return {"states": self.states[:k].clone(), "actions": self.actions[:k].clone(),
                "rewards": self.rewards[:k].clone(), "pos": self.pos, "filled": k}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output."""
        filled, pos = int(state["filled"]), int(state["pos"])
        if filled > self.capacity:
            raise BlindSRError(f"replay buffer state holds {filled} transitions, more than "
                               f"buffer_size {self.capacity}")
        self.states = self.actions = self.rewards = None
        self.pos, self.filled = pos % self.capacity, filled
        if filled:
            s = state["states"]
            self._allocate(tuple(s.shape[1:]), state["actions"].shape[1])
            self.states[:filled] = s
            self.actions[:filled] = state["actions"]
            self.rewards[:filled] = state["rewards"]


def check_generator(generator: nn.Module) -> nn.Module:
    """The generator's predictor (the actor); a clear error when it has none or cannot render."""
    predictor = getattr(generator, "predictor", None)
    if not isinstance(predictor, nn.Module) or not callable(getattr(generator, "render", None)):
        raise BlindSRError(f"strategy amrl: the generator ({type(generator).__name__}) must be an "
                           "AMNet with a kernel predictor (model.arch amnet, predictor on)")
    return predictor


def make_coder(generator: nn.Module, code: str = "auto",
               sigma_range: list[float] | None = None) -> KernelCoder:
    """The generator's :class:`~blindsr.degrade.kernel_code.KernelCoder`, read from its recorded
    units; a one-line error when it has none, or when ``code`` / ``sigma_range`` (checks) differ
    from them."""
    try:
        coder = coder_of_model(generator)
    except BlindSRError as e:
        raise BlindSRError(f"strategy amrl: {e} (set model.init to such a model)") from None
    if code != "auto" and code != coder.kind:
        raise BlindSRError(f"strategy amrl: code {code} asked for, but the model takes "
                           f"{coder.kind} codes (code_dim={coder.code_dim}); use code: auto")
    if sigma_range is not None and not all(
            math.isclose(a, b, rel_tol=1e-5)
            for a, b in zip(sigma_range, coder.sigma_range, strict=True)):
        raise BlindSRError(f"strategy amrl: sigma_range {list(sigma_range)} asked for, but the "
                           f"model was trained on {list(coder.sigma_range)}; leave it null")
    return coder


def code_box(generator: nn.Module) -> tuple[Tensor, Tensor]:
    """The generator's recorded code box: per-dimension (min, max), float32."""
    box = getattr(generator, "code_box", None)
    dim = getattr(generator, "code_dim", None)
    if not isinstance(box, Tensor) or box.shape != (2, dim) or not bool(torch.isfinite(box).all()):
        raise BlindSRError("strategy amrl: the model has no recorded code_box (2, code_dim)")
    box = box.detach().float()
    return box[0].clone(), box[1].clone()


def noise_level(p: AMRLParams, step: int) -> float:
    """Exploration std (fraction of the sigma range) at iteration ``step``: linear decay."""
    t = min(1.0, max(0, step) / p.noise_steps)
    return p.noise_start + (p.noise_end - p.noise_start) * t


def update_applied(loss: Tensor, device: torch.device) -> bool:
    """Whether the loop applied the update of ``loss``: the loop's own first check (a finite loss
    on every process)."""
    from blindsr import distributed

    return not distributed.any_flag(not bool(torch.isfinite(loss.detach()).all()), device)


def mean_logs(rows: list[dict[str, Tensor | float]]) -> dict[str, float]:
    """Per key, the mean of the values the rows hold for it."""
    out: dict[str, list[float]] = {}
    for row in rows:
        for k, v in row.items():
            out.setdefault(k, []).append(float(v))
    return {k: sum(v) / len(v) for k, v in out.items()}


def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``target = (1 - tau) * target + tau * source`` over parameters (no gradients)."""
    with torch.no_grad():
        for t, s in zip(target.parameters(), source.parameters(), strict=True):
            t.lerp_(s.detach(), tau)


def _frozen_copy(module: nn.Module) -> nn.Module:
    out = copy.deepcopy(module)
    for p in out.parameters():
        p.requires_grad_(False)
    return out


class AMRL(Strategy):
    """Actor-critic training of an AMNet's kernel predictor (see the module docstring)."""

    name = "amrl"
    learns_from_lr_only = True
    Params = AMRLParams

    def __init__(self, generator: nn.Module, params: AMRLParams, scale: int,
                 device: torch.device) -> None:
        from blindsr.rewards import get_reward

        super().__init__(generator, params, scale, device)
        p = params
        self.actor = check_generator(generator)
        actor_ids = {id(q) for q in self.actor.parameters()}
        for q in generator.parameters():  # the renderer is the frozen environment
            q.requires_grad_(id(q) in actor_ids)
        self.reward = get_reward(p.reward)
        self.coder = make_coder(generator, p.code, p.sigma_range)
        lo, hi = code_box(generator)
        self.lo, self.hi = lo.to(self.device), hi.to(self.device)
        self.held: list[dict[str, Tensor | float]] = []  # logs of update-less iterations
        self.dropped = 0  # non-finite rewards dropped by this process
        reference = _frozen_copy(self.actor) if p.critic_reference else None
        self.critic = Critic(self.coder.code_dim, lo, hi, p.critic_feat, p.critic_hidden,
                             reference=reference)
        self.critic.to(self.device)
        self.rng = process_generator(p.seed)
        self.buffer = ReplayBuffer(p.buffer_size)
        self.target_critic = self.target_actor = None
        if p.gamma > 0:
            self.target_critic = _frozen_copy(self.critic)
            self.target_actor = _frozen_copy(self.actor)

    # -- the Strategy interface --------------------------------------------------------------

    def networks(self) -> dict[str, nn.Module]:
        return {"critic": self.critic}

    def default_optim(self) -> dict[str, dict]:
        return {"critic": {"type": "adam", "lr": 1e-3, "betas": [0.9, 0.999]}}

    def degrades_itself(self) -> bool:
        return True

    def training_step(self, batch: dict[str, Tensor], step: int) -> Iterator[Update]:
        hr, real = self.split_batch(batch)
        if hr is None and real is None:
            return
        logs = self.collect(hr, real, step)
        p = self.params
        if len(self.buffer) < p.minibatch:
            self.held = [*self.held[-HELD_LOGS + 1:], logs]  # no update to carry them yet
            return
        if self.held:
            logs, self.held = mean_logs([*self.held, logs]), []
        for _ in range(p.updates):
            s, a, r = self.buffer.sample(p.minibatch, self.rng, self.device)
            update = self.critic_update(s, a, r, logs)
            yield update
            logs = {}
            if self.target_critic is not None and update_applied(update.loss, self.device):
                soft_update(self.target_critic, self.critic, p.tau)
            if step >= p.warmup:
                update = self.actor_update(s)
                yield update
                if self.target_actor is not None and update_applied(update.loss, self.device):
                    soft_update(self.target_actor, self.actor, p.tau)

    def idle_reason(self) -> str | None:
        p = self.params
        if len(self.buffer) >= p.minibatch:
            return None
        dropped = (f"; {self.dropped} non-finite reward(s) were dropped (reward "
                   f"{self.reward.name})" if self.dropped else "")
        return (f"the replay buffer holds {len(self.buffer)} transition(s), fewer than "
                f"strategy.params.minibatch={p.minibatch}{dropped}")

    def check_data(self, shares: Mapping[str, float]) -> None:
        if "lr" in shares and self.reward.needs_hr:
            raise fail("strategy.params.reward", f"{self.reward.name} needs HR, but data.train has "
                       "LR-only images: use a no-reference reward (neg_niqe or a callable) or "
                       "HR / paired data only")

    def split_batch(self, batch: dict[str, Tensor]) -> tuple[Tensor | None, Tensor | None]:
        """(HR images to degrade, LR-only images used as states as they are); None for an empty
        part. LR-only samples need a no-reference reward (a one-line error otherwise)."""
        has_hr = batch["has_hr"].bool()
        lr_only = batch.get("has_lr", torch.zeros_like(has_hr)).bool() & ~has_hr
        hr = batch["hr"][has_hr].float() if bool(has_hr.any()) else None
        real = None
        if bool(lr_only.any()):
            if self.reward.needs_hr:
                raise BlindSRError(f"strategy amrl: reward {self.reward.name!r} needs HR, but the "
                                   "data has LR-only images: use a no-reference reward (neg_niqe "
                                   "or a callable) or HR / paired data only")
            real = batch["lr"][lr_only].float()
        return hr, real

    def state_dict(self) -> dict:
        state = {"rng": self.rng.get_state(), "buffer": self.buffer.state_dict()}
        if self.target_critic is not None:
            state["target_critic"] = {k: v.cpu() for k, v in
                                      self.target_critic.state_dict().items()}
            state["target_actor"] = {k: v.cpu() for k, v in
                                     self.target_actor.state_dict().items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        want = {"rng", "buffer"} | ({"target_critic", "target_actor"}
                                    if self.target_critic is not None else set())
        if set(state) != want:
            raise BlindSRError(f"strategy 'amrl': expected state with keys {sorted(want)}, got "
                               f"{sorted(state)} (was gamma changed?)")
        self.rng.set_state(state["rng"])
        self.buffer.load_state_dict(state["buffer"])
        if self.target_critic is not None:
            self.target_critic.load_state_dict(state["target_critic"])
            self.target_actor.load_state_dict(state["target_actor"])

    # -- acting ------------------------------------------------------------------------------

    def degrade(self, hr: Tensor) -> tuple[Tensor, Tensor]:
        """(LR at 8-bit levels, sigmas) for an HR batch, sigmas from the strategy's generator."""
        from blindsr.degrade.kernel_code import blur_downsample, sample_sigma

        sigma = sample_sigma(hr.shape[0], self.rng, hr.device, self.coder.sigma_range)
        with torch.no_grad(), torch.autocast(hr.device.type, enabled=False):
            lr = blur_downsample(hr.float(), sigma, self.scale, quantize=True)
        return lr, sigma

    def clip(self, code: Tensor) -> Tensor:
        """Codes clipped to the action box."""
        return torch.maximum(torch.minimum(code, self.hi.to(code)), self.lo.to(code))

    def project(self, code: Tensor) -> Tensor:
        """The nearest code of the kernel family, ``clip(encode(decode(code)))`` (no gradients;
        for sigma codes ``clip(code)``)."""
        if self.coder.kind == "sigma":
            return self.clip(code.detach())
        with torch.no_grad():
            return self.clip(self.coder.encode(self.coder.decode(code.float())).to(code))

    def explore(self, mu: Tensor, step: int) -> Tensor:
        """The code of ``decode(mu)`` plus Gaussian noise in sigma (std: ``noise`` x the sigma
        range, clamped to it; the strategy's RNG), clipped to the box: always a kernel of the
        family."""
        lo, hi = self.coder.sigma_range
        with torch.no_grad():
            sigma = self.coder.decode(mu.float())
            eps = torch.randn(sigma.shape, generator=self.rng).to(sigma)
            sigma = (sigma + noise_level(self.params, step) * (hi - lo) * eps).clamp(lo, hi)
            return self.clip(self.coder.encode(sigma).to(mu))

    def render(self, lr: Tensor, code: Tensor) -> Tensor:
        """The frozen renderer's SR for ``code`` (no gradients, float32, autocast off)."""
        with torch.no_grad(), torch.autocast(lr.device.type, enabled=False):
            return self.generator.render(lr.float(), code.float()).float().clamp(0, 1)

    def score(self, sr: Tensor, hr: Tensor | None, lr: Tensor) -> Tensor:
        """The reward of each sample (``hr`` None for LR-only states), in float32 with autocast
        off."""
        with torch.autocast(sr.device.type, enabled=False):
            return self.reward(sr.float(), None if hr is None else hr.float(), lr.float())

    def baseline_code(self, lr: Tensor, mu: Tensor) -> Tensor:
        """The baseline action for each state: the frozen initial predictor's code (``reference``)
        or the actor's own (``actor``), projected onto the family."""
        return self.reference_code(lr) if self.params.baseline == "reference" else self.project(mu)

    def reference_code(self, lr: Tensor) -> Tensor:
        """The frozen initial (supervised) predictor's code for each state, on the family."""
        with torch.no_grad():
            return self.project(self.critic.reference(lr).float())

    def rewards(self, sr: Tensor, hr: Tensor | None, lr: Tensor) -> Tensor:
        """The reward of each sample: the first ``len(hr)`` against their HR, the rest (LR-only
        states) without one."""
        n = 0 if hr is None else hr.shape[0]
        parts = []
        if n:
            parts.append(self.score(sr[:n], hr[..., : sr.shape[-2], : sr.shape[-1]], lr[:n]))
        if n < sr.shape[0]:
            parts.append(self.score(sr[n:], None, lr[n:]))
        return torch.cat(parts)

    def collect(self, hr: Tensor | None, real: Tensor | None,
                step: int) -> dict[str, Tensor | float]:
        """Act on one batch (HR images degraded here, then LR-only states as given) and push its
        transitions; returns scalars to log."""
        p = self.params
        states, sigma = [], None
        self.sample_pair = None  # an all-LR-only batch: the loop shows the loader's batch
        if hr is not None:
            lr, sigma = self.degrade(hr)
            self.sample_pair = (lr.detach(), hr.detach())
            states.append(lr)
        if real is not None:
            states.append(real)
        lr = torch.cat(states)
        with torch.no_grad():
            mu = self.actor(lr).float()
        a = self.explore(mu, step)
        r = self.rewards(self.render(lr, a), hr, lr)
        stored = r
        logs: dict[str, Tensor | float] = {"noise": noise_level(p, step)}
        if p.baseline != "none":
            stored = r - self.rewards(self.render(lr, self.baseline_code(lr, mu)), hr, lr)
        keep = torch.isfinite(stored)
        dropped = int((~keep).sum())
        if dropped:
            logs["dropped"] = float(dropped)
            self.dropped += dropped
        self.buffer.push(lr[keep], a[keep], p.reward_scale * stored[keep])
        if bool(keep.any()):
            logs["reward"] = r[keep].mean()
            if p.baseline != "none":
                logs["gain"] = stored[keep].mean()
        n = 0 if hr is None else hr.shape[0]
        if real is not None and p.baseline != "none" and bool(keep[n:].any()):
            logs["gain_real"] = stored[n:][keep[n:]].mean()
        logs["code"] = mu.mean()
        if sigma is not None:
            logs["sigma_err"] = (self.coder.decode(mu[:n]).float() - sigma.float()).abs().mean()
        logs["buffer"] = float(len(self.buffer))
        return logs

    # -- learning ----------------------------------------------------------------------------

    def critic_target(self, s: Tensor, r: Tensor) -> Tensor:
        """``y = r`` (gamma 0), else ``r + gamma Q'(s, project(mu'(s)))`` with s' = s."""
        if self.target_critic is None:
            return r
        with torch.no_grad():
            a_next = self.project(self.target_actor(s).float())
            return r + self.params.gamma * self.target_critic(s, a_next).float()

    def critic_update(self, s: Tensor, a: Tensor, r: Tensor,
                      logs: dict[str, Tensor | float]) -> Update:
        """The critic's regression of Q(s, a) on its target."""
        y = self.critic_target(s, r)
        q = self.critic(s, a).float()
        loss = F.mse_loss(q, y)
        return Update(loss, ("critic",), {**logs, "l_critic": loss.detach(),
                                          "q": q.detach().mean()})

    def actor_update(self, s: Tensor) -> Update:
        """Deterministic policy gradient: maximise Q(s, project(mu(s))) through the frozen
        critic (straight-through projection), plus the per-dimension penalty on mu's distance
        to its projection and, with ``anchor_weight``, on its distance to the supervised code."""
        mu = self.actor(s).float()
        proj = self.project(mu)
        q = frozen_call(self.critic, s, mu + (proj - mu).detach()).float()
        width = (self.hi - self.lo).to(mu)
        width = torch.maximum(width, WIDTH_FLOOR * width.max())
        off = ((mu - proj) / width).square().sum(dim=1).mean()
        loss = -q.mean() + self.params.box_weight * off
        logs = {"q_actor": q.detach().mean(), "off_family": off.detach()}
        if self.params.anchor_weight > 0:
            anchor = ((mu - self.reference_code(s)) / width).square().sum(dim=1).mean()
            loss = loss + self.params.anchor_weight * anchor
            logs["anchor"] = anchor.detach()
        return Update(loss, ("generator",), {"l_actor": loss.detach(), **logs})


__all__ = ["AMRL", "AMRLParams", "Critic", "ReplayBuffer", "check_generator", "code_box",
           "make_coder", "mean_logs", "noise_level", "soft_update", "update_applied"]
