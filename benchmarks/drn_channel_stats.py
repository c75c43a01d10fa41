"""Which channels dual regression selection keeps, against the L1 baseline's (issue 7).

At one ratio with uniform widths (as ``drn_prune_diagnose.py``, from the same stream of
selection batches), per prunable layer: how many channels
the two sets share, and how dense the kept channels' activations are in the original network
(the consumer conv's inputs on a batch of training crops): the fraction of positions where a
channel is non-zero, and its std / mean. A channel active everywhere with a small std / mean
is close to a linear, bias-like signal; a sparse one responds to some structures only.
Results: ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from blindsr.checkpoint import load_model
from blindsr.compress.dr import CRITERIA, REFIT_MODES, consumer_input, dr_prune
from blindsr.compress.l1 import l1_keep
from blindsr.compress.objective import DualObjective, load_duals
from blindsr.compress.pipeline import make_batches
from blindsr.compress.prune import prunable_layers, require_drn
from blindsr.compress.search import uniform_widths
from blindsr.machine import machine_description


@torch.no_grad()
def activation_stats(model: torch.nn.Module, x: torch.Tensor) -> dict[str, dict[str, list]]:
    """Per prunable layer and input channel of its consumer: active fraction, std / mean."""
    out = {}
    for layer in prunable_layers(require_drn(model)):
        a = consumer_input(model, layer.consumer, x).float()
        mean = a.mean(dim=(0, 2, 3))
        out[layer.name] = {"active": (a > 0).float().mean(dim=(0, 2, 3)).tolist(),
                           "cv": (a.std(dim=(0, 2, 3)) / mean.clamp_min(1e-8)).tolist()}
    return out


def _median(values: list[float], idx: list[int]) -> float:
    return float(torch.tensor([values[i] for i in idx]).median())


def markdown(rows: list[dict], meta: dict) -> str:
    lines = ["# Channels kept by DR selection and by L1 norm "
             f"({100 * meta['ratio']:.0f} %, uniform widths)", "",
             f"Command: `{meta['command']}`", "", f"Machine: {meta['machine']}. Medians over "
             "the kept channels of each layer; activations of the original network.", "",
             "| layer | kept | shared | active: dr / l1 / all | std/mean: dr / l1 / all |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['layer']} | {r['kept']} | {r['shared']} | "
                     f"{r['active_dr']:.2f} / {r['active_l1']:.2f} / {r['active_all']:.2f} | "
                     f"{r['cv_dr']:.2f} / {r['cv_l1']:.2f} / {r['cv_all']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--duals", required=True)
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--data", default="T91,BSD200")
    p.add_argument("--select-batches", type=int, default=4)
    p.add_argument("--per-round", type=int, default=4)
    p.add_argument("--refit", choices=REFIT_MODES, default="each")
    p.add_argument("--criterion", choices=CRITERIA, default="gradient")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output stem (.json and .md)")
    args = p.parse_args(argv)
    model = require_drn(load_model(args.model))
    objective = DualObjective(load_duals(args.duals, model.scale), 0.1)
    data = args.data.split(",")
    cpu = torch.device("cpu")
    torch.manual_seed(args.seed)
    select, _ = make_batches(data, model.scale, args.patch, args.batch, args.seed + 1, cpu)
    probe, _ = make_batches(data, model.scale, args.patch, args.batch, args.seed + 2, cpu)
    widths = uniform_widths(model, args.ratio, 1)
    _, dr_kept = dr_prune(model, widths, select, objective, select_batches=args.select_batches,
                          per_round=args.per_round, refit=args.refit, criterion=args.criterion)
    l1_kept = l1_keep(model, widths)
    stats = activation_stats(model.eval(), next(probe)[0])
    rows = []
    for name, s in stats.items():
        every = list(range(len(s["active"])))
        d, l1 = dr_kept[name], l1_kept[name]
        rows.append({"layer": name, "kept": len(d), "shared": len(set(d) & set(l1)),
                     "dr": d, "l1": l1,
                     **{f"{k}_{who}": _median(s[k], idx) for k in ("active", "cv")
                        for who, idx in (("dr", d), ("l1", l1), ("all", every))}})
    command = " ".join(["python", "benchmarks/drn_channel_stats.py",
                        *(sys.argv[1:] if argv is None else argv)])
    meta = {"command": command, "machine": machine_description(), "ratio": args.ratio,
            "settings": vars(args)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
