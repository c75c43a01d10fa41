"""DRN compression table (the layout of DRC's Tables 1 and 3): a trained DRN and its prunings at
30 / 50 / 70% by dual regression (channel search + DR channel selection + fine-tuning) and by
the uniform L1-norm filter baseline (same fine-tuning budget; by default it keeps exactly as
many channels as the dr model of the same ratio, which ``--decode argmax`` or width rounding can
make fewer than ``1 - r``: the two are compared at the same size).

Columns: prunable channels removed, #params (and the reduction), #MACs of one forward pass of a
96x96 LR input (forward-hook counter, :func:`blindsr.compress.measure.count_macs`), CPU latency
(median of ``--latency-repeats`` forward passes of that input, after one warm-up, with
``--threads`` torch threads), PSNR / SSIM on the Y channel (border = scale) on Set5 and Set14
(``blindsr.evaluate``, the given bicubic LR), and the compression time.

    python benchmarks/drn_compress.py --model runs/drn_s_cpu/model.safetensors \\
        --duals runs/drn_s_cpu --search-steps 200 --finetune-steps 1000
    python benchmarks/drn_compress.py --model M.safetensors --quick   # tiny budgets: minutes

Writes ``benchmarks/results/drn_compress.{json,md}`` (``--out`` changes the stem) after every
model and, with ``--save-models DIR``, every pruned model as ``DIR/<name>.safetensors``. A long run
cut short goes on with ``--resume``: the models already in the JSON (same model, duals and
budgets; the model and duals are matched by a digest of their weights, so their files may move)
are kept and skipped. Runs of different ``--ratios`` can go side by side (one core each, separate
``--out``) and be joined with ``--resume --merge OTHER.json``, which keeps the other file's
models too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from blindsr.checkpoint import load_model, save_model, weights_digest
from blindsr.compress.dr import REFIT_MODES
from blindsr.compress.measure import count_macs, count_params, latency
from blindsr.compress.objective import load_duals
from blindsr.compress.pipeline import CompressSettings, checkpoint_summary, compress
from blindsr.compress.prune import require_drn
from blindsr.compress.search import DECODE_RULES
from blindsr.evaluate import evaluate
from blindsr.inference import pick_device
from blindsr.machine import machine_description

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "drn_compress"


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def measure(name: str, model: nn.Module, args: argparse.Namespace) -> dict:
    """Params, MACs, CPU latency and PSNR/SSIM of one model."""
    size = (args.macs_size, args.macs_size)
    cpu = model.to("cpu").eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        seconds = latency(cpu, size, repeats=args.latency_repeats)
    finally:
        torch.set_num_threads(threads)
    row = {"model": name, "params": count_params(cpu), "macs_g": count_macs(cpu, size) / 1e9,
           "latency_ms": 1000 * seconds}
    results = evaluate(models={name: cpu}, datasets=args.sets, metrics=["psnr", "ssim"],
                       scale=cpu.scale, device=args.device, max_images=args.max_images)
    for r in results:
        row[f"{r.dataset}/{r.metric}"] = r.value
    return row


def _settings(args: argparse.Namespace, ratio: float, method: str) -> CompressSettings:
    return CompressSettings(
        ratio=ratio, method=method, search_steps=args.search_steps, alpha_lr=args.alpha_lr,
        decode=args.decode,
        finetune_steps=args.finetune_steps, batch=args.batch, patch=args.patch, seed=args.seed,
        multiple=args.multiple, dual_steps=args.dual_steps, select_batches=args.select_batches,
        tune_steps=args.tune_steps, per_round=args.per_round, refit=args.refit,
        device=args.device)


def _markdown(rows: list[dict], meta: dict) -> str:
    sets = [k.split("/")[0] for k in rows[0] if k.endswith("/psnr")]
    head = ["model", "method", "channels removed", "#params", "params removed",
            f"#MACs (G, {meta['macs_size']}x{meta['macs_size']} LR)", "CPU latency (ms)"]
    head += [f"{s} PSNR / SSIM" for s in sets] + ["compress time (s)"]
    lines = [f"# DRN compression (x{meta['scale']})", "",
             *[f"Command: `{c}`" for c in meta["commands"][:1]],
             *[f"Resumed with: `{c}`" for c in meta["commands"][1:]],
             *[f"Merged from `{m['file']}`, made by: `{c}`" for m in meta.get("merged", [])
               for c in m["commands"]], "",
             f"Machine: {meta['machine']}; compression on {meta['device']}; latency with "
             f"{meta['threads']} thread(s). Budgets: {meta['budgets']}.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], r.get("method", "-"),
                 f"{100 * r['channels_removed']:.1f}%" if "channels_removed" in r else "-",
                 f"{r['params'] / 1e6:.3f}M",
                 f"{100 * r['params_removed']:.1f}%" if "params_removed" in r else "-",
                 f"{r['macs_g']:.2f}", f"{r['latency_ms']:.1f}"]
        for s in sets:
            p, q = r.get(f"{s}/psnr"), r.get(f"{s}/ssim")
            cells.append(f"{p:.2f} / {q:.4f}" if p is not None and q is not None else "-")
        cells.append(f"{r['time_s']:.0f}" if "time_s" in r else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="trained DRN checkpoint")
    p.add_argument("--name", default="DRN-S", help="row label of the unpruned model")
    p.add_argument("--duals", default=None, help="dual training run/checkpoint folder")
    p.add_argument("--data", default="T91,BSD200")
    p.add_argument("--ratios", default="0.3,0.5,0.7")
    p.add_argument("--methods", default="dr,l1")
    p.add_argument("--sets", default="Set5,Set14")
    p.add_argument("--search-steps", type=int, default=200)
    p.add_argument("--alpha-lr", type=float, default=3e-4)
    p.add_argument("--decode", choices=DECODE_RULES, default="budget",
                   help="searched widths: scaled to the ratio (budget) or the paper's argmax")
    p.add_argument("--finetune-steps", type=int, default=1000)
    p.add_argument("--dual-steps", type=int, default=200)
    p.add_argument("--select-batches", type=int, default=1)
    p.add_argument("--tune-steps", type=int, default=1)
    p.add_argument("--per-round", type=int, default=1)
    p.add_argument("--refit", choices=REFIT_MODES, default="each",
                   help="dr: least-squares consumer weights after every selection round "
                        "(each), after the last (last), or none")
    p.add_argument("--multiple", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="compression / evaluation device")
    p.add_argument("--macs-size", type=int, default=96, help="LR size of the MAC / latency input")
    p.add_argument("--latency-repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--save-models", default=None, help="folder for the pruned models")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output stem (.json and .md)")
    p.add_argument("--l1-match", choices=["dr", "ratio"], default="dr",
                   help="the l1 baseline removes the channel fraction that the dr model of the "
                        "same ratio removed (dr: equal size; needs dr first in --methods) or the "
                        "nominal ratio (ratio)")
    p.add_argument("--reference", action="store_true",
                   help="also fine-tune the unpruned model with the same budget (row NAME+ft): "
                        "what the extra training alone gives")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows already in the output JSON and compress only the rest")
    p.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                   help="also keep the models of these results files (made with the same setup, "
                        "e.g. by runs of other --ratios side by side) and compress only the rest")
    p.add_argument("--quick", action="store_true",
                   help="tiny budgets (search 5, fine-tune 5, duals 5, 16 channels per round)")
    args = p.parse_args(argv)
    if args.quick:
        args.search_steps = args.finetune_steps = args.dual_steps = 5
        args.per_round = 16
    args.sets = _split(args.sets)
    return args


SETUP_KEYS = ("name", "data", "sets", "search_steps", "alpha_lr", "decode", "finetune_steps",
              "dual_steps", "select_batches", "tune_steps", "per_round", "refit", "multiple",
              "batch", "patch", "seed", "device", "macs_size", "latency_repeats", "threads",
              "max_images", "l1_match")


LEGACY = {"decode": "argmax", "refit": "none"}  # what runs made before these settings did
OLD_REFIT = {True: "last", False: "none"}  # --refit was a switch before "each" existed


def _meta(args: argparse.Namespace, argv: list[str] | None, model: nn.Module,
          duals: nn.Module | None) -> dict:
    """The run's description; ``setup`` holds everything the rows depend on, so that a resume
    only keeps rows made the same way (the ratios and methods may differ)."""
    setup = {k: getattr(args, k) for k in SETUP_KEYS}
    # the weights' digests, so that a resume or merge knows them wherever their files lie
    setup.update(model=weights_digest(model),
                 duals=None if duals is None else weights_digest(duals),
                 machine=machine_description(), torch=torch.__version__)
    return {"commands": [" ".join(["python", "benchmarks/drn_compress.py",
                                   *(sys.argv[1:] if argv is None else argv)])],
            "machine": setup["machine"], "device": str(pick_device(args.device)),
            "threads": args.threads, "scale": model.scale, "macs_size": args.macs_size,
            "torch": torch.__version__, "setup": setup,
            "budgets": f"search {args.search_steps}, fine-tune {args.finetune_steps}, duals "
                       f"{args.dual_steps} steps; batch {args.batch}, patch {args.patch}; "
                       f"selection {args.select_batches} batch(es) + {args.tune_steps} tuning "
                       f"step(s) per {args.per_round} channel(s); alpha lr {args.alpha_lr}, "
                       f"{args.decode} decoding, refit {args.refit}, "
                       f"widths x{args.multiple}, seed {args.seed}"}


def _previous(out: Path, meta: dict, must_exist: bool = False) -> tuple[list[dict], dict]:
    """Rows and reports of an earlier run with the same setup (for ``--resume`` and
    ``--merge``); the earlier commands are prepended to ``meta``'s (``--merge``: listed under
    ``meta["merged"]`` with their file instead)."""
    path = out.with_suffix(".json")
    if not path.exists():
        if must_exist:
            raise SystemExit(f"error: cannot merge {path}: no such file")
        return [], {}
    try:
        old = json.loads(path.read_text())
        before, rows, reports = old["meta"], old["rows"], old.get("reports", {})
        setup = before.get("setup") or {}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise SystemExit(f"error: cannot resume from {path}: {exc}") from None
    setup = {**LEGACY, **setup}  # files from before a setting existed ran its old behaviour
    setup["refit"] = OLD_REFIT.get(setup["refit"], setup["refit"])
    differ = [k for k in meta["setup"] if setup.get(k) != meta["setup"][k]]
    if differ:
        k = differ[0]
        raise SystemExit(f"error: cannot resume from {path}: made with another {k} "
                         f"({setup.get(k)!r}, now {meta['setup'][k]!r}); use another --out")
    if must_exist:  # merged
        meta.setdefault("merged", []).append(
            {"file": str(path), "commands": before.get("commands", [])})
    else:
        meta["commands"] = [*before.get("commands", []), *meta["commands"]]
    return rows, reports


def _write(out: Path, meta: dict, rows: list[dict], reports: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "rows": rows, "reports": reports}, indent=2) + "\n")
    out.with_suffix(".md").write_text(_markdown(rows, meta))


def _dr_removed(reports: dict, name: str, ratio: float) -> float:
    """The channel fraction the dr model of ``ratio`` removed (exact, from its report), so that
    the l1 baseline is compared at the same size."""
    r = reports.get(f"{name}{round(100 * ratio)}-dr")
    if r is None:
        raise SystemExit(f"error: --l1-match dr needs the dr model of ratio {ratio} first (put dr "
                         "before l1 in --methods) or use --l1-match ratio")
    return 1 - r["channels_after"] / r["channels_before"]


def _ordered(rows: list[dict], names: list[str]) -> list[dict]:
    """The unpruned row first, then ``names``' rows in that order, then any others."""
    rank = {n: i for i, n in enumerate(names)}
    return sorted(rows, key=lambda r: (0 if "method" not in r else 1,
                                       rank.get(r["model"], len(rank))))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = require_drn(load_model(args.model))
    duals = load_duals(args.duals, model.scale) if args.duals else None
    out = Path(args.out)
    meta = _meta(args, argv, model, duals)
    rows, reports = _previous(out, meta) if args.resume else ([], {})
    for other in args.merge:
        more, more_reports = _previous(Path(other), meta, must_exist=True)
        have = {r["model"] for r in rows}
        rows += [r for r in more if r["model"] not in have]
        reports = {**more_reports, **reports}
    done = {r["model"] for r in rows}
    if args.name not in done:
        rows.insert(0, measure(args.name, model, args))
    plan = [(float(r), m) for r in _split(args.ratios) for m in _split(args.methods)]
    names = [f"{args.name}{round(100 * ratio)}-{method}" for ratio, method in plan]
    if args.reference:  # the unpruned model with the same fine-tuning, first
        plan, names = [(0.0, "none"), *plan], [f"{args.name}+ft", *names]
    rows = _ordered(rows, names)
    _write(out, meta, rows, reports)  # what there is so far (all of it, when merged)
    for (ratio, method), name in zip(plan, names, strict=True):
        if name in done:
            print(f"== {name}: kept from {out.with_suffix('.json')}", file=sys.stderr)
            continue
        target = ratio
        if method == "l1" and args.l1_match == "dr":
            target = _dr_removed(reports, args.name, ratio)
        print(f"== {name}" + (f" (removing {target:.4f}, as the dr model)" if target != ratio
                              else ""), file=sys.stderr, flush=True)
        start = time.perf_counter()
        result = compress(model, _split(args.data), _settings(args, target, method),
                          duals=duals, log=lambda line: print(line, file=sys.stderr))
        seconds = time.perf_counter() - start
        r = result.report
        reports[name] = r
        if args.save_models:
            r.update(source=args.model, duals=args.duals or "fresh")
            save_model(result.model.cpu(), Path(args.save_models) / f"{name}.safetensors",
                       checkpoint_summary(r))
        row = measure(name, result.model, args)
        row.update(method=method, ratio=ratio, channels_removed=r["channels_removed"],
                   params_removed=r["params_removed"], time_s=seconds)
        rows = _ordered([*rows, row], names)
        _write(out, meta, rows, reports)
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
