"""EATS overhead: training-step time of the `eats` strategy against `plain`, in one run.

A step is what the loop does with a batch after loading it: the strategy's forward pass(es) and
loss, backward, and an Adam step (channels-last, as the CPU configs). The cases alternate step by
step, and every eligible layer is erased once per round, so each EATS figure is the exact
average over layers of the strategy's uniform layer choice. The candidates for the erased pass:

- ``replay``: the strategy's default: the layers before the erased one run once (hooks replay
  their recorded outputs), the erased pass costs the layers from it on;
- ``subbatch``: ``replay`` with ``erased_batch`` (``--erased-batch``, default 4): the erased pass
  on the first samples of the batch only;
- ``full``: ``torch.func.functional_call`` with the erased weights: a second complete pass;
- ``batched``: one forward of the batch twice (2N), a forward hook on the erased layer replacing
  the channel in the second half (everything before the layer is computed twice too).

The "loop" ratio adds the random second-order degradation of the batch (which the loop also runs
every step, on the training device) to both sides.

    python benchmarks/eats_overhead.py                 # SRResNet 32x8, batch 16, HR patch 96
    python benchmarks/eats_overhead.py --arch rrdbnet --feat 32 --blocks 4
    python benchmarks/eats_overhead.py --quick         # batch 2, patch 64, 1 thread: seconds
    python benchmarks/eats_overhead.py --erased-batch 2   # the subbatch case on 2 of 16
    python benchmarks/eats_overhead.py --flops-only    # the conv-work model only, instant
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from blindsr import archs
from blindsr.allocator import keep_freed_memory
from blindsr.degrade import second_order
from blindsr.losses.pixel import l1_loss
from blindsr.ops import imresize
from blindsr.strategies.eats import (
    EATS,
    Erasure,
    eligible_layers,
    sample_erasure,
    select_channels,
)
from blindsr.strategies.plain import Plain

Step = Callable[[Erasure], Tensor]


def batched_loss(model: nn.Module, lr: Tensor, hr: Tensor, bicubic: Tensor,
                 erasure: Erasure) -> Tensor:
    """The EATS loss by one 2N forward, the erasure applied to the second half by a hook."""
    n = lr.shape[0]
    conv = model.get_submodule(erasure.layer)
    src = erasure.source(conv.out_channels, lr.device)

    def hook(module: nn.Module, args: tuple, out: Tensor) -> Tensor:
        return torch.cat([out[:n], select_channels(out[n:], src)])

    handle = conv.register_forward_hook(hook)
    try:
        out = model(torch.cat([lr, lr]).contiguous(memory_format=torch.channels_last))
    finally:
        handle.remove()
    return l1_loss(out[:n], hr) + l1_loss(out[n:], bicubic)


def make_steps(model: nn.Module, lr: Tensor, hr: Tensor, scale: int,
               erased_batch: int) -> dict[str, Step]:
    """One loss function per case (plain ignores the erasure)."""
    batch = {"lr": lr, "hr": hr, "has_hr": torch.ones(len(lr), dtype=torch.bool),
             "has_lr": torch.ones(len(lr), dtype=torch.bool)}
    plain = Plain(model, Plain.parse_params({}), scale, lr.device)
    replay = EATS(model, EATS.parse_params({"branch": "replay"}), scale, lr.device)
    full = EATS(model, EATS.parse_params({"branch": "full"}), scale, lr.device)
    sub = EATS(model, EATS.parse_params({"erased_batch": erased_batch}), scale, lr.device)
    bicubic = imresize(lr, scale=scale)
    return {
        "plain": lambda e: next(iter(plain.training_step(batch, 0))).loss,
        "replay": lambda e: replay.loss(lr, hr, e)[0],
        "subbatch": lambda e: sub.loss(lr, hr, e)[0],
        "full": lambda e: full.loss(lr, hr, e)[0],
        "batched": lambda e: batched_loss(model, lr, hr, bicubic, e),
    }


def time_step(loss_fn: Step, erasure: Erasure, optimizer: torch.optim.Optimizer) -> float:
    """Seconds of one forward + backward + Adam step."""
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss_fn(erasure).backward()
    optimizer.step()
    return time.perf_counter() - start


def conv_macs(model: nn.Module, x: Tensor) -> list[tuple[str, float]]:
    """(conv name, multiply-accumulates) of every conv call of ``model(x)``, in call order."""
    names = {id(m): n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    calls: list[tuple[str, float]] = []

    def hook(module: nn.Conv2d, args: tuple, out: Tensor) -> None:
        k = module.weight[0].numel()  # in_channels / groups * kh * kw
        calls.append((names[id(module)], float(out.numel() * k)))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return calls


def flop_model(model: nn.Module, x: Tensor, layers: list[str]) -> float:
    """Predicted replay/plain ratio from conv work alone: 1 + the mean over ``layers`` of the
    share of conv MACs from the layer's first call on (forward and backward scale alike)."""
    calls = conv_macs(model, x)
    total = sum(m for _, m in calls)
    first = {}
    for i, (name, _) in enumerate(calls):
        first.setdefault(name, i)
    shares = [sum(m for _, m in calls[first[n]:]) / total for n in layers]
    return 1 + statistics.fmean(shares)


def degradation_s(hr: Tensor, scale: int, repeats: int) -> float:
    """Median seconds of one random second-order degradation of ``hr``."""
    times = []
    for seed in range(repeats):
        start = time.perf_counter()
        second_order(hr, scale, generator=torch.Generator().manual_seed(seed))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="srresnet", choices=["srresnet", "rrdbnet"])
    parser.add_argument("--feat", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=96, help="HR patch")
    parser.add_argument("--rounds", type=int, default=1, help="steps per layer and case")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--cases", default="plain,replay,subbatch,full,batched")
    parser.add_argument("--erased-batch", type=int, default=4,
                        help="samples in the erased pass of the subbatch case")
    parser.add_argument("--flops-only", action="store_true",
                        help="print the conv-work model of the replay ratio only (no timing)")
    parser.add_argument("--quick", action="store_true",
                        help="seconds: the given model at batch 2, HR patch 64, 1 thread")
    args = parser.parse_args()
    keep_freed_memory()  # as the blindsr command does
    if args.quick:
        args.batch, args.patch, args.threads = 2, 64, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    scale = 4
    kwargs = {"num_feat": args.feat, "num_block": args.blocks}
    if args.arch == "rrdbnet":
        kwargs["num_grow_ch"] = max(args.feat // 2, 2)
    torch.manual_seed(0)
    model = archs.build(args.arch, scale=scale, **kwargs).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5, betas=(0.9, 0.999))
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(args.batch, 3, args.patch, args.patch, generator=g)
    lr = imresize(hr, scale=1 / scale).clamp(0, 1).contiguous(memory_format=torch.channels_last)
    hr = hr.contiguous(memory_format=torch.channels_last)
    steps = make_steps(model, lr, hr, scale, args.erased_batch)
    cases = args.cases.split(",")
    layers = eligible_layers(model, lr[:1])
    erasures = [sample_erasure(model, [name], 1, g) for name in layers]
    print(f"machine: {platform.machine()} {platform.processor() or ''}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{args.arch} {kwargs}, batch {args.batch}, HR patch {args.patch}, x{scale}, "
          f"{len(layers)} eligible layers x {args.rounds} round(s)")
    replay_model = flop_model(model, lr[:1], layers)
    sub_share = min(args.erased_batch, args.batch) / args.batch
    print(f"conv-work model: replay {replay_model:.2f}x, subbatch "
          f"{1 + sub_share * (replay_model - 1):.2f}x, full and batched 2.00x plain")
    if args.flops_only:
        return
    for case in cases:  # warm-up
        time_step(steps[case], erasures[0], optimizer)
    times: dict[str, list[float]] = {c: [] for c in cases}
    for r in range(args.rounds):
        for i, erasure in enumerate(erasures):
            shift = (r * len(erasures) + i) % len(cases)  # rotate the order within a step
            for case in cases[shift:] + cases[:shift]:
                times[case].append(time_step(steps[case], erasure, optimizer))
    deg = degradation_s(hr, scale, repeats=3)
    base = statistics.fmean(times["plain"]) if "plain" in times else None
    print(f"random second-order degradation: {deg * 1e3:.0f} ms per batch\n")
    print("| case | ms per step | ratio to plain | ratio incl. degradation |")
    print("|---|---|---|---|")
    for case in cases:
        t = statistics.fmean(times[case])
        ratio = f"{t / base:.2f}x" if base else "-"
        loop = f"{(t + deg) / (base + deg):.2f}x" if base else "-"
        label = f"replay, erased_batch {args.erased_batch}" if case == "subbatch" else case
        print(f"| {label} | {t * 1e3:.1f} | {ratio} | {loop} |", flush=True)


if __name__ == "__main__":
    main()
