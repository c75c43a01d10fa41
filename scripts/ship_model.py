"""Ship a trained model: copy a run's weights into the package and write its model card.

    python scripts/ship_model.py runs/default_x4_blind --name blindsr-x4 \
        --summary "Blind x4 SRResNet for real-world photos (the default)" \
        [--eval benchmarks/results/default_x4_eval.md --eval-command "blindsr eval ..."]

A pruned checkpoint (``blindsr compress`` or ``benchmarks/drn_compress.py --save-models``) ships
from its file instead of a run folder; its card says how it was compressed, from which model, and
gives that model's training summary.

The card is built from the checkpoint's own metadata (architecture, arguments, training summary)
and the run's resolved config, plus an evaluation table written by `blindsr eval --out`. Run it
once to ship the weights, evaluate the shipped name, then run it again with ``--eval``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from blindsr.checkpoint import checkpoint_file, load_model, read_checkpoint, save_model
from blindsr.zoo import WEIGHTS_DIR


def init_stage(run: Path) -> dict | None:
    """The training summary of the checkpoint that started this run (``model.init``), if any."""
    config = run / "config.yaml"
    if not config.is_file():
        return None
    init = (yaml.safe_load(config.read_text()) or {}).get("model", {}).get("init")
    if not init:
        return None
    _, meta = read_checkpoint(checkpoint_file(init))
    return {"path": init, **json.loads(meta.get("summary", "{}"))}


def config_path(run_name: str | None) -> str:
    """The committed config that names this run (``name: RUN`` in ``configs/**.yaml``)."""
    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "configs").rglob("*.yaml"), key=lambda p: (len(p.parts), p)):
        if (yaml.safe_load(path.read_text()) or {}).get("name") == run_name:
            return str(path.relative_to(root))
    return f"configs/{run_name}.yaml"


def degradation_text(info: dict) -> str:
    """The training summary's degradation; strategies that make their own LR (amnet, amgan)
    train with degradation ``none``, which would read as clean pairs."""
    degradation = info.get("degradation")
    if degradation in (None, "none"):
        return f"made by the strategy itself (`{info.get('strategy')}`; see below)"
    return str(degradation)


def training_rows(info: dict, hours: float) -> list[str]:
    """Card rows of a checkpoint's training summary."""
    return [
        f"| training config | `{config_path(info.get('config'))}` |",
        f"| strategy | `{info.get('strategy')}` |",
        f"| degradation | {degradation_text(info)} |",
        f"| data | {', '.join(info.get('data', []))} |",
        f"| iterations | {info.get('iterations')} (batch {info.get('effective_batch')}, "
        f"HR patch {info.get('patch')}, EMA {info.get('ema')}, seed {info.get('seed')}) |",
        f"| wall time | {hours:.2f} h on {info.get('device')} ({info.get('machine')}) |",
        f"| software | blindsr {info.get('blindsr')}, torch {info.get('torch')} |",
    ]


def compress_rows(info: dict) -> tuple[list[str], dict]:
    """Card rows of a pruned checkpoint's ``compress`` summary, and the training summary of the
    model it was pruned from (empty when that file is not there)."""
    c = info["compress"]
    how = {"dr": "channel number search + dual regression channel pruning (DRC)",
           "l1": "uniform L1-norm filter pruning"}.get(c.get("method"), c.get("method"))
    rows = [f"| compressed by | {how}, then fine-tuned with the dual regression loss |",
            f"| pruning ratio | {c.get('ratio', 0):.3g} ({100 * c.get('channels_removed', 0):.1f}% "
            f"of the prunable channels removed) |"]
    if "params_before" in c:
        rows.append(f"| parameters before | {c['params_before']:,} "
                    f"({100 * c.get('params_removed', 0):.1f}% removed) |")
    rows.append(f"| widths | blocks {c.get('block_widths')}, upsamplers {c.get('up_widths')} |")
    source = c.get("source")
    if not source or not Path(source).is_file():
        return rows, {}
    rows.append(f"| compressed from | `{source}` (dual models: {c.get('duals', 'fresh')}) |")
    _, meta = read_checkpoint(source)
    return rows, json.loads(meta.get("summary", "{}"))


def usage_lines(name: str, arch: str | None = None) -> list[str]:
    """The card's "Using it" section: the commands that run, ensemble and deploy the model
    (``arch``: its architecture; AMNet graphs cannot be quantised and predict their code per
    call, so their export line says so)."""
    export = ("# ONNX: estimates the blur per tile, so upscale it with --tile as large as the "
              "image; no --int8" if arch == "amnet" else "# ONNX; --int8: a third of the size")
    blur = ([f"blindsr upscale photo.jpg --model {name} --blur 2.0  # a blur width by hand "
             "(higher: sharper)"] if arch == "amnet" else [])
    return [
        "## Using it", "", "```",
        f"blindsr upscale photo.jpg --model {name}      # tiled: any image size",
        f"blindsr upscale photo.jpg --model {name}+     # x8 self-ensemble: 8x the compute",
        *blur,
        f"blindsr export --model {name} -o {name}.onnx  {export}",
        "```", "",
    ]


def card(name: str, summary: str, meta: dict, run: Path | None, eval_md: str | None,
         eval_command: str | None, path: Path, notes: str | None = None) -> str:
    """The Markdown model card (``run``: the run folder; None for a pruned checkpoint;
    ``notes``: Markdown placed before the evaluation, e.g. the design choices of a method)."""
    info = json.loads(meta.get("summary", "{}"))
    kwargs = json.loads(meta.get("kwargs", "{}"))
    model = load_model(path)
    params = sum(p.numel() for p in model.parameters())
    lines = [
        f"# {name}", "", summary, "",
        "| | |", "|---|---|",
        f"| architecture | `{meta.get('arch')}` {json.dumps(kwargs)} |",
        f"| scale | x{meta.get('scale')} |",
        f"| parameters | {params:,} ({path.stat().st_size / 1e6:.1f} MB file) |",
    ]
    if "compress" in info:
        rows, info = compress_rows(info)
        lines += rows + (["| **source model** | |"] if info else [])
    hours = info.get("wall_time_s", 0) / 3600
    if info:
        lines += training_rows(info, hours)
    stage = init_stage(run) if run is not None else None
    if stage:
        total_h = hours + stage.get("wall_time_s", 0) / 3600
        lines += [
            f"| initialised from | `{stage['path']}`: `{config_path(stage.get('config'))}`, "
            f"{stage.get('iterations')} iterations, degradation "
            f"{degradation_text(stage).split(' (')[0]}, "
            f"{stage.get('wall_time_s', 0) / 3600:.2f} h |",
            f"| total | {stage.get('iterations', 0) + (info.get('iterations') or 0)} iterations, "
            f"{total_h:.2f} h |",
        ]
    lines.append("")
    lines += usage_lines(name, meta.get("arch"))
    if notes:
        lines += [notes.strip(), ""]
    if eval_md:
        lines += ["## Evaluation", ""]
        if eval_command:
            lines += ["Produced by:", "", "```", eval_command, "```", ""]
        lines += [eval_md.strip(), ""]
    config = run / "config.yaml" if run is not None else None
    if config is not None and config.is_file():
        lines += ["## Training config (resolved)", "", "```yaml", config.read_text().strip(),
                  "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path,
                        help="run folder with model.safetensors, or a pruned .safetensors file")
    parser.add_argument("--name", required=True)
    parser.add_argument("--summary", required=True, help="one line for `blindsr models`")
    parser.add_argument("--eval", type=Path, default=None, help="Markdown from blindsr eval --out")
    parser.add_argument("--eval-command", default=None)
    parser.add_argument("--notes", type=Path, default=None,
                        help="Markdown file placed in the card before the evaluation")
    args = parser.parse_args()
    run = None if args.run.suffix == ".safetensors" else args.run
    source = args.run if run is None else run / "model.safetensors"
    if not source.is_file():
        raise SystemExit(f"error: {source} not found")
    target = WEIGHTS_DIR / f"{args.name}.safetensors"
    if not target.exists() or source.stat().st_mtime > target.stat().st_mtime:
        _, meta = read_checkpoint(source)
        save_model(load_model(source), target, json.loads(meta.get("summary", "{}")))
    _, meta = read_checkpoint(target)
    eval_md = args.eval.read_text() if args.eval else None
    notes = args.notes.read_text() if args.notes else None
    text = card(args.name, args.summary, meta, run, eval_md, args.eval_command, target, notes)
    target.with_suffix(".md").write_text(text)
    print(f"shipped {target} and {target.with_suffix('.md')}")


if __name__ == "__main__":
    main()
