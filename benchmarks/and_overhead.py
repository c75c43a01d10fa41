"""AND overhead: training-step time of the `and` strategy against `plain`, same model and batch, in
one run.

A step is what the loop does with an HR batch: make LR (plain: MATLAB bicubic, as the classical
config's preset; and: identity init + K PGD steps + the degradation network), the strategy's
forward and loss, backward and an Adam step (channels-last, as the CPU configs). The cases
alternate step by step. A conv-work model (multiply-accumulates of every conv call, counted with
hooks) predicts the ratio independently of the machine:

    plain = 3 G                   (forward, input gradients, weight gradients)
    and   = 3 G + K 2 G + (K - 1) 3 F + F   (per PGD step: G forward + input gradients only;
                                       F forward + input and weight gradients on every step but
                                       the first, whose point is the identity: its LR is BlurPool
                                       and its gradient analytic; then F once more)

where G and F are the forward MACs of the generator and of the degradation network (without
identity initialisation, ``identity_init: false``, every step pays ``3 F``: ``K`` for
``K - 1``). The
ablations (`--params '{"perturbation": "noise"}'` or `"random"`) need no attack through F
(noise: ``3 G + 2 K G``, PGD on the LR noise of every sample) or no attack at all (random:
``3 G + F``).

    python benchmarks/and_overhead.py                     # SRResNet 32x8, batch 16, patch 96
    python benchmarks/and_overhead.py --attack-batch 4    # the attack on 4 of the 16 samples
    python benchmarks/and_overhead.py --arch rrdbnet --feat 64 --blocks 23 --patch 128 --flops-only
    python benchmarks/and_overhead.py --quick             # batch 4, patch 48, 1 thread: seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch import Tensor, nn

from blindsr import archs, degrade
from blindsr.allocator import keep_freed_memory
from blindsr.degrade.neural import NeuralDegradation
from blindsr.strategies.and_ import AND
from blindsr.strategies.base import Strategy
from blindsr.strategies.plain import Plain


def conv_macs(model: nn.Module, *args: object) -> float:
    """Multiply-accumulates of every conv call of ``model(*args)``."""
    total = [0.0]

    def hook(module: nn.Conv2d, inputs: tuple, out: Tensor) -> None:
        total[0] += float(out.numel() * module.weight[0].numel())

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(*args)
    finally:
        for h in handles:
            h.remove()
    return total[0]


def predicted_ratio(g_macs: float, f_macs: float, steps: int, attack_share: float,
                    perturbation: str = "neural", identity_init: bool = True) -> float:
    """The conv-work model of the module docstring (``attack_share``: attacked fraction)."""
    plain = 3 * g_macs
    if perturbation == "noise":
        return (plain + steps * 2 * g_macs) / plain
    if perturbation == "random":
        return (plain + f_macs) / plain
    f_steps = max(steps - 1, 0) if identity_init else steps
    attack = attack_share * (steps * 2 * g_macs + f_steps * 3 * f_macs)
    return (plain + attack + f_macs) / plain


def smooth_batch(n: int, size: int, generator: torch.Generator) -> Tensor:
    """Smooth random images (so the degradations see image-like content)."""
    small = torch.rand(n, 3, max(size // 8, 2), max(size // 8, 2), generator=generator)
    return torch.nn.functional.interpolate(small, size=(size, size), mode="bicubic",
                                           align_corners=False).clamp(0, 1)


def time_step(strategy: Strategy, hr: Tensor, scale: int, optimizer: torch.optim.Optimizer,
              step: int) -> float:
    """Seconds of one full training step on HR batch ``hr`` (LR made inside the timing)."""
    sync = torch.cuda.synchronize if hr.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    ones = torch.ones(len(hr), dtype=torch.bool, device=hr.device)
    lr = hr.new_zeros(len(hr), 3, hr.shape[-2] // scale, hr.shape[-1] // scale)
    if not strategy.degrades_itself():
        lr = degrade.apply(hr, "bicubic", scale).contiguous(memory_format=torch.channels_last)
    batch = {"hr": hr, "lr": lr, "has_hr": ones, "has_lr": ~ones}
    for update in strategy.training_step(batch, step):
        optimizer.zero_grad(set_to_none=True)
        update.loss.backward()
        optimizer.step()
    sync()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="srresnet", choices=["srresnet", "rrdbnet"])
    parser.add_argument("--feat", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=96, help="HR patch")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per case")
    parser.add_argument("--attack-batch", type=int, default=0,
                        help="also time the attack on this many samples (0: only the full batch)")
    parser.add_argument("--params", default="{}", help="JSON of extra `and` params")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--flops-only", action="store_true", help="the conv-work model only")
    parser.add_argument("--quick", action="store_true",
                        help="seconds: the given model at batch 4, HR patch 48, 1 thread, "
                             "attack batch 1 too")
    args = parser.parse_args()
    keep_freed_memory()  # as the blindsr command does
    if args.quick:
        args.batch, args.patch, args.threads, args.steps = 4, 48, 1, 2
        args.attack_batch = args.attack_batch or 1
    if args.threads:
        torch.set_num_threads(args.threads)
    scale, device = 4, torch.device(args.device)
    kwargs = {"num_feat": args.feat, "num_block": args.blocks}
    if args.arch == "rrdbnet":
        kwargs["num_grow_ch"] = max(args.feat // 2, 2)
    torch.manual_seed(0)
    model = archs.build(args.arch, scale=scale, **kwargs).to(device,
                                                            memory_format=torch.channels_last)
    extra = json.loads(args.params)
    cases: dict[str, Strategy] = {"plain": Plain(model, Plain.parse_params({}), scale, device)}
    shares = {"plain": 0.0, "and": 1.0}
    cases["and"] = AND(model, AND.parse_params(extra), scale, device)
    if args.attack_batch:
        name = f"and, attack on {args.attack_batch}"
        cases[name] = AND(model, AND.parse_params({**extra, "attack_batch": args.attack_batch}),
                          scale, device)
        shares[name] = min(args.attack_batch / args.batch, 1.0)
    hr = smooth_batch(args.batch, args.patch, torch.Generator().manual_seed(0)).to(device)
    hr = hr.contiguous(memory_format=torch.channels_last)
    k, kind = cases["and"].params.steps, cases["and"].params.perturbation
    identity = cases["and"].params.identity_init
    g_macs = conv_macs(model, hr[:1, :, ::scale, ::scale].contiguous())
    f_macs = conv_macs(NeuralDegradation(scale, cases["and"].params.channels).to(device), hr[:1])
    print(f"machine: {platform.machine()} {platform.processor() or ''}, device {device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{args.arch} {kwargs}, batch {args.batch}, HR patch {args.patch}, x{scale}, K={k}, "
          f"degradation net {cases['and'].params.channels} channels, params {extra}")
    print(f"conv work per sample: generator {g_macs / 1e9:.3f} GMAC, degradation net "
          f"{f_macs / 1e9:.3f} GMAC")
    if args.flops_only:
        for name, share in shares.items():
            if name != "plain":
                ratio = predicted_ratio(g_macs, f_macs, k, share, kind, identity)
                print(f"conv-work model, {name}: {ratio:.2f}x")
        return
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-6)
    for strategy in cases.values():  # warm-up
        time_step(strategy, hr, scale, optimizer, 0)
    times: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for i in range(args.steps):
        order = names[i % len(names):] + names[:i % len(names)]  # rotate the order
        for name in order:
            times[name].append(time_step(cases[name], hr, scale, optimizer, i + 1))
    base = statistics.median(times["plain"])
    print("\n| case | ms per step | ratio to plain | conv-work model |")
    print("|---|---|---|---|")
    for name in names:
        t = statistics.median(times[name])
        model_ratio = (predicted_ratio(g_macs, f_macs, k, shares[name], kind, identity)
                       if name != "plain" else 1)
        print(f"| {name} | {t * 1e3:.0f} | {t / base:.2f}x | {model_ratio:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
