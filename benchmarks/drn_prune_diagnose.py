"""Which half of dual regression channel pruning costs PSNR: the channels it keeps, or the
weights it hands to the fine-tuning (issue 7).

At one ratio every prunable layer keeps the same number of channels (uniform widths, no search:
what the search gives at 50 % on DRN-S-cpu anyway), chosen and initialised by each variant:

- ``l1``: the largest producer filters (L1 norm), original weights: the baseline;
- ``random``: random channels, original weights: what any choice gives;
- ``l1-refit``: L1's channels, each consumer's kept weights refitted by least squares against
  the original layer's output, layer by layer (the refit ``dr`` uses);
- ``dr-select``: dual regression's greedy selection with neither tuning steps nor refit: DR's
  channels with their original weights;
- ``dr-last``: DR's selection warm-started from the original weights, refitted once after the
  last round (``--refit last``, the first compression tables' rule);
- ``dr``: dual regression pruning as ``blindsr compress`` runs it (``--refit each``: the
  selected weights and bias refitted after every round);
- ``dr-feature``: ``dr`` with gamma = 0 (the feature term alone, no L_DR in the selection);
- ``dr-newton``: ``dr`` scoring channels by the loss decrease of a Newton step on their weights
  (``criterion="newton"``) instead of the gradient's norm.

Every variant is measured before and after the same fine-tuning (``blindsr.compress``'s: Adam,
cosine from 1e-4, the dual regression loss, the trained dual models loaded afresh), on the same
batches in the same order; the selection and the refit draw from a stream of their own.
``--also-at 100,300`` fine-tunes the same pruned network again with those budgets (each its own
cosine schedule, from the same start, on the same first batches): where the curves cross.
Results: ``OUT.json`` and ``OUT.md``; ``--resume`` keeps the variants already there, ``--merge``
those of other results files (runs side by side, one core each).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from blindsr.checkpoint import load_model, weights_digest
from blindsr.compress.dr import dr_prune, refit_consumer
from blindsr.compress.l1 import l1_keep
from blindsr.compress.measure import count_params
from blindsr.compress.objective import Batches, DualObjective, load_duals
from blindsr.compress.pipeline import finetune, make_batches
from blindsr.compress.prune import frozen_copy, prunable_layers, prune_channels, require_drn
from blindsr.compress.search import uniform_widths
from blindsr.evaluate import evaluate
from blindsr.machine import machine_description

VARIANTS = ("l1", "random", "l1-refit", "dr-select", "dr-last", "dr", "dr-feature",
            "dr-newton")
SETUP_KEYS = ("ratio", "data", "sets", "finetune_steps", "select_batches", "per_round", "batch",
              "patch", "seed", "max_images")


def random_keep(model: nn.Module, widths: dict[str, int], seed: int) -> dict[str, list[int]]:
    """Per layer, ``widths[layer]`` channels drawn at random (sorted indices)."""
    gen = torch.Generator().manual_seed(seed)
    return {layer.name: sorted(torch.randperm(layer.width, generator=gen)[:widths[layer.name]]
                               .tolist())
            for layer in prunable_layers(require_drn(model))}


def refit_keep(model: nn.Module, keep: dict[str, list[int]], batches: Batches,
               n_batches: int) -> nn.Module:
    """``model`` pruned to ``keep``, each consumer's kept weights refitted by least squares in
    forward order (every later layer sees the pruned, refitted features)."""
    original, work = frozen_copy(model), frozen_copy(model)
    for layer in prunable_layers(require_drn(work)):
        idx = torch.as_tensor(keep[layer.name])
        conv = work.get_submodule(layer.consumer)
        dropped = torch.ones(layer.width, dtype=torch.bool)
        dropped[idx] = False
        with torch.no_grad():
            conv.weight[:, dropped] = 0
        refit_consumer(work, original, layer, idx, batches, n_batches)
    return prune_channels(work, keep)


def build(variant: str, model: nn.Module, widths: dict[str, int], select: Batches,
          objective: DualObjective, args: argparse.Namespace) -> nn.Module:
    """The pruned network of one variant (module docstring), before fine-tuning."""
    if variant == "l1":
        return prune_channels(model, l1_keep(model, widths))
    if variant == "random":
        return prune_channels(model, random_keep(model, widths, args.seed))
    if variant == "l1-refit":
        return refit_keep(model, l1_keep(model, widths), select, args.select_batches)
    options = {"dr-select": {"tune_steps": 0, "refit": "none"}, "dr-last": {"refit": "last"},
               "dr": {}, "dr-feature": {"gamma": 0.0},
               "dr-newton": {"criterion": "newton"}}[variant]
    pruned, _ = dr_prune(model, widths, select, objective, select_batches=args.select_batches,
                         per_round=args.per_round, **options)
    return pruned


def scores(name: str, model: nn.Module, args: argparse.Namespace) -> dict[str, float]:
    """PSNR / SSIM-Y per set."""
    results = evaluate(models={name: model.eval()}, datasets=args.sets,
                       metrics=["psnr", "ssim"], scale=model.scale, max_images=args.max_images)
    return {f"{r.dataset}/{r.metric}": r.value for r in results}


def run_variant(variant: str, model: nn.Module, duals: nn.Module,
                args: argparse.Namespace, log: Callable[[str], None]) -> dict:
    """Prune, measure, fine-tune, measure again: one row."""
    torch.manual_seed(args.seed)
    data = args.data.split(",")
    select, _ = make_batches(data, model.scale, args.patch, args.batch, args.seed + 1,
                             torch.device("cpu"))
    train, _ = make_batches(data, model.scale, args.patch, args.batch, args.seed,
                            torch.device("cpu"))
    objective = DualObjective(copy.deepcopy(duals).train().requires_grad_(True), 0.1)
    widths = uniform_widths(model, args.ratio, 1)
    start = time.perf_counter()
    pruned = build(variant, model, widths, select, objective, args).train()
    prune_s = time.perf_counter() - start
    row = {"variant": variant, "params": count_params(pruned),
           "before": scores(variant, pruned, args)}
    log(f"{variant}: before fine-tuning {row['before']}")
    at = {}
    for steps in args.also_at:  # the same start, the same first batches, a budget of its own
        short = copy.deepcopy(pruned).train().requires_grad_(True)
        batches, _ = make_batches(data, model.scale, args.patch, args.batch, args.seed,
                                  torch.device("cpu"))
        finetune(short, DualObjective(copy.deepcopy(duals).train().requires_grad_(True), 0.1),
                 batches, steps)
        at[str(steps)] = scores(variant, short, args)
        log(f"{variant}: after {steps} fine-tuning steps {at[str(steps)]}")
    if at:
        row["after_at"] = at
    start = time.perf_counter()
    losses = finetune(pruned.train().requires_grad_(True), objective, train,
                      args.finetune_steps)
    row.update(after=scores(variant, pruned, args), prune_s=round(prune_s, 1),
               finetune_s=round(time.perf_counter() - start, 1),
               loss_first=sum(losses[:20]) / max(1, len(losses[:20])),
               loss_last=sum(losses[-20:]) / max(1, len(losses[-20:])))
    log(f"{variant}: after fine-tuning {row['after']}")
    return row


def markdown(rows: list[dict], meta: dict) -> str:
    sets = [k.split("/")[0] for k in rows[0]["before"] if k.endswith("/psnr")] if rows else []
    budgets = meta["setup"].get("also_at", [])
    head = ["variant", "#params", *[f"before: {s}" for s in sets],
            *[f"after {n}: {s}" for n in budgets for s in sets],
            *[f"after{' ' + str(meta['setup']['finetune_steps']) if budgets else ''}: {s}"
              for s in sets], "fine-tuning loss first / last 20"]
    lines = [f"# Where DR pruning loses (x{meta['scale']}, {100 * meta['setup']['ratio']:.0f} %"
             " of the channels, uniform widths)", "",
             *[f"Command: `{c}`" for c in meta["commands"]], "",
             f"Machine: {meta['machine']}; torch {meta['torch']}; fine-tuning "
             f"{meta['setup']['finetune_steps']} steps. PSNR / SSIM on Y.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["variant"], f"{r['params'] / 1e6:.3f}M"]
        parts = [r["before"], *[r["after_at"][str(n)] for n in budgets], r["after"]]
        for part in parts:
            cells += [f"{part[f'{s}/psnr']:.2f} / {part[f'{s}/ssim']:.4f}" for s in sets]
        cells.append(f"{r['loss_first']:.4f} / {r['loss_last']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="trained DRN checkpoint")
    p.add_argument("--duals", required=True, help="its dual training run/checkpoint folder")
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--data", default="T91,BSD200")
    p.add_argument("--sets", default="Set5,Set14")
    p.add_argument("--finetune-steps", type=int, default=1000)
    p.add_argument("--also-at", default="",
                   help="comma-separated shorter fine-tuning budgets, each run from the same "
                        "pruned network (e.g. 100,300)")
    p.add_argument("--select-batches", type=int, default=4)
    p.add_argument("--per-round", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True, help="output stem (.json and .md)")
    p.add_argument("--resume", action="store_true",
                   help="keep the variants already in OUT.json (same model, duals and setup)")
    p.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                   help="also keep the variants of these results files (same model, duals and "
                        "setup; e.g. runs of other --variants side by side)")
    args = p.parse_args(argv)
    args.sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    try:
        args.also_at = sorted({int(n) for n in args.also_at.split(",") if n.strip()})
    except ValueError:
        p.error(f"--also-at {args.also_at!r}: give whole numbers, e.g. 100,300")
    if any(n < 1 or n >= args.finetune_steps for n in args.also_at):
        p.error("--also-at budgets must be between 1 and --finetune-steps")
    bad = [v for v in args.variants.split(",") if v not in VARIANTS]
    if bad:
        p.error(f"unknown variant {bad[0]} (known: {', '.join(VARIANTS)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = require_drn(load_model(args.model))
    duals = load_duals(args.duals, model.scale)
    setup = {k: getattr(args, k) for k in SETUP_KEYS}
    if args.also_at:  # (absent otherwise, so that earlier results files still resume)
        setup["also_at"] = args.also_at
    setup.update(model=weights_digest(model), duals=weights_digest(duals))
    command = " ".join(["python", "benchmarks/drn_prune_diagnose.py",
                        *(sys.argv[1:] if argv is None else argv)])
    meta = {"commands": [command], "machine": machine_description(), "scale": model.scale,
            "torch": torch.__version__, "setup": setup}
    out = Path(args.out)
    rows: list[dict] = []
    previous = [out.with_suffix(".json")] if args.resume else []
    for path in [p for p in previous if p.exists()] + [Path(m) for m in args.merge]:
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"error: cannot read {path}: {exc}") from None
        if old["meta"]["setup"] != setup:
            raise SystemExit(f"error: cannot resume from {path}: another model or setup")
        rows += [r for r in old["rows"] if r["variant"] not in {x["variant"] for x in rows}]
        meta["commands"] = [*old["meta"]["commands"], *meta["commands"]]
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2)
                                            + "\n")
        out.with_suffix(".md").write_text(markdown(rows, meta))

    if rows:
        save()  # what there is so far (all of it, when merged)
    for variant in args.variants.split(","):
        if any(r["variant"] == variant for r in rows):
            continue
        rows.append(run_variant(variant, model, duals, args,
                                lambda line: print(line, file=sys.stderr, flush=True)))
        save()
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
