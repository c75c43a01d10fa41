"""Ship a trained model: copy a run's weights into the package and write its model card.

    python scripts/ship_model.py runs/default_x4_blind --name blindsr-x4 \
        --summary "Blind x4 SRResNet for real-world photos (the default)" \
        [--eval benchmarks/results/default_x4_eval.md --eval-command "blindsr eval ..."]

The card is built from the checkpoint's own metadata (architecture, arguments, training summary)
and the run's resolved config, plus an evaluation table written by `blindsr eval --out`. Run it
once to ship the weights, evaluate the shipped name, then run it again with ``--eval``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from blindsr.checkpoint import load_model, read_checkpoint, save_model
from blindsr.zoo import WEIGHTS_DIR


def init_stage(run: Path) -> dict | None:
    """The training summary of the checkpoint that started this run (``model.init``), if any."""
    config = run / "config.yaml"
    if not config.is_file():
        return None
    init = (yaml.safe_load(config.read_text()) or {}).get("model", {}).get("init")
    if not init:
        return None
    _, meta = read_checkpoint(init)
    return {"path": init, **json.loads(meta.get("summary", "{}"))}


def config_path(run_name: str | None) -> str:
    """The committed config that names this run (``name: RUN`` in ``configs/**.yaml``)."""
    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "configs").rglob("*.yaml"), key=lambda p: (len(p.parts), p)):
        if (yaml.safe_load(path.read_text()) or {}).get("name") == run_name:
            return str(path.relative_to(root))
    return f"configs/{run_name}.yaml"


def card(name: str, summary: str, meta: dict, run: Path, eval_md: str | None,
         eval_command: str | None, path: Path) -> str:
    """The Markdown model card."""
    info = json.loads(meta.get("summary", "{}"))
    stage = init_stage(run)
    kwargs = json.loads(meta.get("kwargs", "{}"))
    model = load_model(path)
    params = sum(p.numel() for p in model.parameters())
    hours = info.get("wall_time_s", 0) / 3600
    lines = [
        f"# {name}", "", summary, "",
        "| | |", "|---|---|",
        f"| architecture | `{meta.get('arch')}` {json.dumps(kwargs)} |",
        f"| scale | x{meta.get('scale')} |",
        f"| parameters | {params:,} ({path.stat().st_size / 1e6:.1f} MB file) |",
        f"| training config | `{config_path(info.get('config'))}` (resolved copy below) |",
        f"| strategy | `{info.get('strategy')}` |",
        f"| degradation | {info.get('degradation')} |",
        f"| data | {', '.join(info.get('data', []))} |",
        f"| iterations | {info.get('iterations')} (batch {info.get('effective_batch')}, "
        f"HR patch {info.get('patch')}, EMA {info.get('ema')}, seed {info.get('seed')}) |",
        f"| wall time | {hours:.2f} h on {info.get('device')} ({info.get('machine')}) |",
        f"| software | blindsr {info.get('blindsr')}, torch {info.get('torch')} |",
    ]
    if stage:
        total_h = hours + stage.get("wall_time_s", 0) / 3600
        lines += [
            f"| initialised from | `{stage['path']}`: `{config_path(stage.get('config'))}`, "
            f"{stage.get('iterations')} iterations on {stage.get('degradation')}, "
            f"{stage.get('wall_time_s', 0) / 3600:.2f} h |",
            f"| total | {stage.get('iterations', 0) + (info.get('iterations') or 0)} iterations, "
            f"{total_h:.2f} h |",
        ]
    lines.append("")
    if eval_md:
        lines += ["## Evaluation", ""]
        if eval_command:
            lines += ["Produced by:", "", "```", eval_command, "```", ""]
        lines += [eval_md.strip(), ""]
    config = run / "config.yaml"
    if config.is_file():
        lines += ["## Training config (resolved)", "", "```yaml", config.read_text().strip(),
                  "```", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run folder with model.safetensors")
    parser.add_argument("--name", required=True)
    parser.add_argument("--summary", required=True, help="one line for `blindsr models`")
    parser.add_argument("--eval", type=Path, default=None, help="Markdown from blindsr eval --out")
    parser.add_argument("--eval-command", default=None)
    args = parser.parse_args()
    source = args.run / "model.safetensors"
    target = WEIGHTS_DIR / f"{args.name}.safetensors"
    if not target.exists() or source.stat().st_mtime > target.stat().st_mtime:
        _, meta = read_checkpoint(source)
        save_model(load_model(source), target, json.loads(meta.get("summary", "{}")))
    _, meta = read_checkpoint(target)
    eval_md = args.eval.read_text() if args.eval else None
    text = card(args.name, args.summary, meta, args.run, eval_md, args.eval_command, target)
    target.with_suffix(".md").write_text(text)
    print(f"shipped {target} and {target.with_suffix('.md')}")


if __name__ == "__main__":
    main()
