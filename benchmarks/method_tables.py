"""Quality tables of a method against its baseline, with the issue's pass criteria counted.

Each group evaluates the final (EMA) weights of its runs, all trained with the same architecture,
data, iterations and seed, on Set5 and Set14 x the eight EATS degradation configs (PSNR/SSIM-Y,
`blindsr.evaluate`, the same numbers as `blindsr eval`), plus NIQE of each model's outputs on
RealSRSet, and counts the PSNR cells where the method beats the baseline:

    python benchmarks/method_tables.py and     # classical, 3 ablations, ANDNet (paper Table 2)
    python benchmarks/method_tables.py eats    # Original, Dropout, EATS (paper Table 1)
                                               # (awakening weight 1 and 0.1)
    python benchmarks/method_tables.py and --runs-dir runs --max-images 2   # a smoke run

Writes benchmarks/results/<group>_table.{json,csv,md}. Runs missing their model.safetensors or not
yet trained to their config's train.iterations are reported and left out (the table says which).
With ``--merge``, a missing run's rows are taken from the table already written there (evaluation
is deterministic, so they are the numbers its model gave then); the meta names those rows and the
earlier command and machine, so a table can grow run by run although run folders do not outlive a
session.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from blindsr.evaluate import Result, evaluate, format_tables, write_results
from blindsr.machine import machine_description
from blindsr.paths import result_paths
from blindsr.train_state import unfinished_run

HERE = Path(__file__).resolve().parent
CONFIGS = ["clean", "blur", "noise", "jpeg", "b+n", "b+j", "n+j", "b+n+j"]

# group -> (baseline label, {label: run folder name}, the method whose wins are counted)
GROUPS: dict[str, tuple[str, dict[str, str], str]] = {
    "and": ("classical", {
        "classical": "default_x4_classical",  # configs/and/classical.yaml = this config
        "adv. noise": "and_noise",
        "synthetic aug.": "and_random",
        "no identity init": "and_no_identity",
        "ANDNet": "and_net",
    }, "ANDNet"),
    "eats": ("Original", {
        "Original": "eats_srresnet_original",
        "Dropout": "eats_srresnet_dropout",
        "EATS, weight 1": "eats_srresnet_eats",  # collapsed to bicubic: see eats_w0.1.yaml
        "EATS, erased_batch 4": "eats_srresnet_eats_w0.1_b4",  # the 1.2x-cost variant
        "EATS": "eats_srresnet_eats_w0.1",  # last: the Improvement row is EATS - Original
    }, "EATS"),
}


def wins(results: list[Result], method: str, baseline: str) -> dict[str, dict[str, object]]:
    """Per dataset: the PSNR configs where ``method`` beats ``baseline`` (clean included)."""
    psnr = {(r.model, r.dataset, r.degradation): r.value for r in results if r.metric == "psnr"}
    out: dict[str, dict[str, object]] = {}
    for (model, dataset, deg), value in psnr.items():
        if model != method or (baseline, dataset, deg) not in psnr:
            continue
        row = out.setdefault(dataset, {"beats": [], "loses": []})
        key = "beats" if value > psnr[(baseline, dataset, deg)] else "loses"
        row[key].append(deg)
    return out


def earlier_rows(path: Path, labels: list[str], max_images: int | None,
                 ) -> tuple[list[Result], dict[str, object]]:
    """Rows of ``labels`` in a table written earlier by this script on as many images, and where
    they came from; ValueError if the file is not such a table."""
    if not path.exists():
        return [], {}
    try:
        data = json.loads(path.read_text())
        rows = [Result(**{**r, "value": float(r["value"])})  # "inf" / "nan": strict JSON
                for r in data["results"] if r["model"] in labels]
        meta = data["meta"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a table of this script ({err})") from None
    if meta.get("max_images") != max_images:
        raise ValueError(f"{path} was made with --max-images {meta.get('max_images')}, "
                         f"not {max_images}: its rows do not compare")
    earlier = meta.get("carried", {})  # rows that table had carried from a still earlier one
    found = sorted({r.model for r in rows}, key=labels.index)
    return rows, {label: earlier.get(label) or {key: meta.get(key)
                                                for key in ("command", "machine", "torch")}
                  for label in found}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("group", choices=sorted(GROUPS))
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--max-images", type=int, default=None, help="per set (smoke runs)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: benchmarks/results/<group>_table")
    parser.add_argument("--merge", action="store_true",
                        help="take missing runs' rows from the table already at --out")
    args = parser.parse_args(argv)
    out = args.out or HERE / "results" / f"{args.group}_table"
    baseline, runs, method = GROUPS[args.group]
    models, missing = {}, {}
    for label, folder in runs.items():
        why = unfinished_run(args.runs_dir / folder)
        if why is None:
            models[label] = args.runs_dir / folder / "model.safetensors"
        else:
            missing[label] = why
    carried_rows, carried = [], {}
    if args.merge:
        try:
            carried_rows, carried = earlier_rows(result_paths(out)[0], list(missing),
                                                 args.max_images)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        for label, source in carried.items():
            del missing[label]
            print(f"carried: {label} (from {source['command']})", file=sys.stderr)
    if missing:
        print("missing (left out): " + ", ".join(f"{k} ({v})" for k, v in missing.items()),
              file=sys.stderr)
    if not {baseline, method} <= set(models) | set(carried):
        print(f"error: {baseline} and {method} are both needed", file=sys.stderr)
        return 1
    results = []
    if models:  # with --merge every row may be carried
        results = evaluate(models, ["Set5", "Set14"], CONFIGS, ("psnr", "ssim"),
                           max_images=args.max_images, progress=True)
        results += evaluate(models, ["RealSRSet"], None, ("niqe",),
                            max_images=args.max_images, progress=True)
    order = list(runs)  # rows in the group's order, whichever way they came
    results = sorted(results + carried_rows, key=lambda r: order.index(r.model))
    counted = wins(results, method, baseline)
    meta = {"group": args.group, "baseline": baseline, "method": method,
            "runs": {k: str(v) for k, v in models.items()},
            "missing": [f"{k} ({v})" for k, v in missing.items()], "carried": carried,
            "max_images": args.max_images,
            "wins_psnr": counted, "machine": machine_description(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "command": "python benchmarks/method_tables.py " + " ".join(argv or sys.argv[1:])}
    write_results(results, out, meta)
    print(format_tables(results))
    print(json.dumps({"wins_psnr": counted}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
