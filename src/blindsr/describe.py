"""What a model file is (``blindsr models PATH``): architecture and its arguments, scale,
parameter count, and what its metadata says about how it was made (training summary, or the two
models it interpolates), for any checkpoint blindsr reads or an exported ``.onnx`` file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from blindsr.errors import BlindSRError
from blindsr.paths import require_file

if TYPE_CHECKING:  # torch is imported on use, so that `blindsr --help` stays light
    from torch import nn


def _size(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.1f} MiB"


def _metadata_lines(meta: dict[str, object]) -> list[str]:
    lines = []
    for key, value in meta.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        lines.append(f"  {key}: {text}")
    return lines


def architecture(net: nn.Module) -> str:
    """``arch(key=value, ...)``: the registered architecture and its arguments."""
    kwargs = ", ".join(f"{k}={v}" for k, v in sorted(net.arch_kwargs.items()))
    return f"{net.arch_name}({kwargs})"


def _describe_checkpoint(path: Path) -> list[str]:
    from blindsr.checkpoint import FORMAT, model_from_checkpoint, read_checkpoint
    from blindsr.train_state import WEIGHTS_FORMAT

    sd, meta = read_checkpoint(path)
    net = model_from_checkpoint(sd, meta, path)
    params = sum(p.numel() for p in net.parameters())
    lines = [f"{path} ({_size(path)})",
             f"architecture: {architecture(net)}",
             f"scale: x{net.scale}",
             f"parameters: {params:,}"]
    if meta.get("format") == WEIGHTS_FORMAT:
        step = meta.get("step", "?")
        return [*lines, f"a training checkpoint at step {step} (its generator, the EMA when "
                        "kept); the run folder's config.yaml says how it was made"]
    if meta.get("format") != FORMAT:
        foreign = "not written by blindsr: architecture read from its tensors"
        if not meta:
            return [*lines, f"metadata: none ({foreign})"]
        return [*lines, f"metadata ({foreign}):", *_metadata_lines(meta)]
    try:
        summary = json.loads(meta.get("summary", "{}"))
    except json.JSONDecodeError:
        summary = meta["summary"]
    if not isinstance(summary, dict):  # written by hand or another tool: shown as it is
        summary = {"summary": summary}
    if summary:
        lines += ["summary:", *_metadata_lines(summary)]
    return lines


def _describe_onnx(path: Path) -> list[str]:
    from blindsr.onnx_model import OnnxModel

    model = OnnxModel(path)
    meta = model.session.get_modelmeta().custom_metadata_map
    inputs = ", ".join(f"{i.name} {i.type} {i.shape}" for i in model.session.get_inputs())
    outputs = ", ".join(f"{o.name} {o.type} {o.shape}" for o in model.session.get_outputs())
    lines = [f"{path} ({_size(path)}, ONNX)", f"input: {inputs}", f"output: {outputs}"]
    return [*lines, "metadata:", *_metadata_lines(dict(meta))] if meta else lines


def describe(path: str | os.PathLike[str]) -> str:
    """A few lines on the model file ``path``: what it computes and how it was made."""
    from blindsr.onnx_model import is_onnx

    path = require_file(path, "model file")
    if is_onnx(path):
        return "\n".join(_describe_onnx(path))
    try:
        return "\n".join(_describe_checkpoint(path))
    except BlindSRError as err:
        raise BlindSRError(str(err) if str(path) in str(err) else f"{path}: {err}") from None


__all__ = ["architecture", "describe"]
