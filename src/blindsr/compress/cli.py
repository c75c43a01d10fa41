"""``blindsr compress``: prune a trained DRN by dual regression (DRC) or by the L1 baseline.

Writes ``OUT.safetensors`` (an ordinary DRN checkpoint with per-layer widths; its summary holds
the ratio, widths and parameter counts) and ``OUT.json`` (widths, search result, losses, times).
"""

from __future__ import annotations

import argparse
import sys

from blindsr.errors import BlindSRError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``blindsr compress``."""
    p = sub.add_parser(
        "compress", help="prune a DRN model (channel search + dual regression pruning, or L1)",
        description="Compress a trained DRN: search per-layer channel numbers, prune channels by "
                    "dual regression and fine-tune (--method dr), or prune uniformly by filter L1 "
                    "norm and fine-tune (--method l1). Ratio = fraction of prunable channels "
                    "removed.")
    p.add_argument("--model", required=True, help="trained DRN checkpoint (.safetensors/.pth)")
    p.add_argument("--data", default="T91,BSD200",
                   help="comma-separated shared names or folders of HR images (default T91,BSD200)")
    p.add_argument("--ratio", type=float, required=True, help="pruning ratio in (0, 1), e.g. 0.5")
    p.add_argument("--method", choices=["dr", "l1"], default="dr")
    p.add_argument("--search-steps", type=int, default=200,
                   help="channel search steps (0: uniform widths; dr only)")
    p.add_argument("--alpha-lr", type=float, default=3e-4,
                   help="Adam lr of the search's architecture weights (DRC: 3e-4)")
    p.add_argument("--decode", choices=["budget", "argmax"], default="budget",  # = DECODE_RULES
                   help="searched widths: budget = the search's per-layer preferences scaled to "
                        "remove --ratio (to the width multiple); argmax = each layer's most "
                        "likely candidate (the paper's rule; usually removes more than --ratio)")
    p.add_argument("--finetune-steps", type=int, default=1000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=96, help="HR patch size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duals", default=None,
                   help="run or checkpoint folder of a 'dual' training whose dual models to use "
                        "(default: fresh dual models, warmed up for --dual-steps)")
    p.add_argument("--dual-steps", type=int, default=200)
    p.add_argument("--lam", type=float, default=0.1, help="dual loss weight (0: primal only)")
    p.add_argument("--gamma", type=float, default=1.0, help="weight of L_DR in the selection")
    p.add_argument("--multiple", type=int, default=4, help="widths are multiples of this")
    p.add_argument("--select-batches", type=int, default=1,
                   help="batches per channel-selection gradient")
    p.add_argument("--tune-steps", type=int, default=1,
                   help="fine-tuning steps after each channel selection")
    p.add_argument("--per-round", type=int, default=1, help="channels selected per gradient")
    p.add_argument("--refit", choices=["each", "last", "none"], default="each",  # = REFIT_MODES
                   help="the selected channels' consumer weights: solved by least squares "
                        "against the original features after every selection round (each), "
                        "after the last one (last), or the original ones (none)")
    p.add_argument("--finetune-lr", type=float, default=1e-4)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: best)")
    p.add_argument("-o", "--output", required=True,
                   help="output .safetensors file; its report (widths, search, losses, times) "
                        "goes to the same name with .json")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``blindsr compress``."""
    from blindsr.compress.pipeline import CompressSettings, compress_file

    settings = CompressSettings(
        ratio=args.ratio, method=args.method, search_steps=args.search_steps,
        alpha_lr=args.alpha_lr, decode=args.decode, finetune_steps=args.finetune_steps,
        batch=args.batch, patch=args.patch, seed=args.seed,
        lam=args.lam, gamma=args.gamma, multiple=args.multiple, dual_steps=args.dual_steps,
        select_batches=args.select_batches, tune_steps=args.tune_steps,
        per_round=args.per_round, refit=args.refit,
        finetune_lr=args.finetune_lr, device=args.device)
    data = [d for d in args.data.split(",") if d.strip()]
    if not data:
        raise BlindSRError("--data: no dataset given")
    log = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    result = compress_file(args.model, args.output, data, settings, duals=args.duals, log=log)
    r = result.report
    print(f"{args.output}: {r['method']} ratio {r['ratio']:g}: channels "
          f"{r['channels_before']} -> {r['channels_after']} "
          f"({100 * r['channels_removed']:.1f}% removed), params {r['params_before']:,} -> "
          f"{r['params_after']:,} ({100 * r['params_removed']:.1f}% removed)", file=sys.stderr)
    return 0
