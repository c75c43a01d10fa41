"""Model files: save as safetensors with metadata, read safetensors or plain ``.pth`` state dicts
(never unpickling objects), and load a ready model from a path with no config."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as to_safetensors_bytes
from torch import Tensor, nn

from . import archs
from .atomic import write_atomic
from .errors import BlindSRError, first_line
from .paths import require_file, user_path
from .train_state import GENERATOR, GENERATOR_EMA, WEIGHTS_FORMAT

FORMAT = "blindsr"
WRAPPER_KEYS = ("params_ema", "params", "state_dict")  # first one present wins


def _unwrap(model: nn.Module) -> nn.Module:
    """The registered architecture inside DataParallel / DDP / torch.compile wrappers."""
    while not hasattr(model, "arch_name"):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            raise BlindSRError(
                f"cannot save {type(model).__name__}: not a registered blindsr architecture"
            )
        model = inner
    return model


def weights_digest(module: nn.Module) -> str:
    """A short digest of ``module``'s weights (names, shapes, dtypes, values): the same model
    wherever its file lies, or however it was loaded."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def save_model(model: nn.Module, path: str | os.PathLike, summary: dict | None = None) -> Path:
    """Write ``model``'s weights and metadata to a ``.safetensors`` file, atomically.

    Metadata (all strings): format, arch, kwargs (JSON), scale, summary (JSON; values that are
    not JSON types are stored as their ``str``). One set of weights per file: to ship EMA
    weights, pass the EMA model.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise BlindSRError(f"{path}: model files must end in .safetensors")
    model = _unwrap(model)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "arch": model.arch_name,
        "kwargs": json.dumps(model.arch_kwargs, sort_keys=True),
        "scale": str(model.scale),
        "summary": json.dumps(summary or {}, sort_keys=True, default=str),
    }
    data = to_safetensors_bytes(tensors, metadata=metadata)
    # Not safetensors' save_file: it makes files mode 0600 and is not atomic.
    return write_atomic(path, data, durable=True)


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = dict(f.metadata() or {})
        sd = {k: f.get_tensor(k) for k in f.keys()}
    return sd, meta


def _read_torch(path: Path) -> dict[str, Tensor]:
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing
            warnings.simplefilter("ignore", UserWarning)
            obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():
            raise
        raise BlindSRError(
            f"{path}: refused: it holds pickled Python objects, not only tensors "
            "(blindsr never unpickles objects; convert it to a plain state dict)"
        ) from None
    if isinstance(obj, dict):
        wrapper = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if wrapper is not None:
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj:
        raise BlindSRError(f"{path}: not a state dict (found {type(obj).__name__})")
    bad = next((k for k, v in obj.items() if not (isinstance(k, str) and torch.is_tensor(v))), None)
    if bad is not None:
        raise BlindSRError(f"{path}: not a plain state dict (entry {bad!r} is not a tensor)")
    return obj


def _is_torch_file(path: Path) -> bool:
    """torch.save output (zip or legacy pickle) rather than safetensors, by magic bytes.

    A safetensors file starts with an 8-byte header length followed by ``{``.
    """
    with open(path, "rb") as f:
        head = f.read(9)
    if head[8:9] == b"{":
        return False
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read ``(state_dict, metadata)`` from a ``.safetensors`` or ``.pth``/``.pt`` file.

    Torch files are read with ``weights_only=True`` (no arbitrary objects) and must hold a plain
    state dict, optionally wrapped as ``{"params_ema": ...}``, ``{"params": ...}`` or
    ``{"state_dict": ...}`` (``params_ema`` preferred); ``module.`` prefixes are stripped.
    Their metadata is empty; so is that of foreign safetensors files without metadata.
    A training checkpoint's ``weights.safetensors`` gives its generator (the EMA when kept).
    """
    path = Path(path)
    if not path.exists() and path.name.endswith("+"):
        raise BlindSRError(f"{path}: self-ensemble ('+') is for upscale and eval; this needs "
                           "the checkpoint itself")
    path = require_file(path, "checkpoint")
    if path.suffix.lower() == ".onnx":
        raise BlindSRError(f"{path}: an ONNX file, not a checkpoint (ONNX files run in upscale "
                           "and eval; this needs the .safetensors it was exported from)")
    try:
        if _is_torch_file(path):
            sd, meta = _read_torch(path), {}
        else:
            sd, meta = _read_safetensors(path)
    except BlindSRError:
        raise
    except Exception as e:  # corrupt files raise many kinds of errors
        from blindsr.io import READ_EXTENSIONS

        suffix = path.suffix.lower()
        if suffix in READ_EXTENSIONS:
            raise BlindSRError(f"{path}: an image, not a model file") from None
        why = first_line(e) if suffix == ".safetensors" else "neither safetensors nor torch.save"
        raise BlindSRError(f"{path}: unreadable checkpoint ({why})") from None
    if meta.get("format") == WEIGHTS_FORMAT:
        sd = _generator_of_training_checkpoint(sd, path)
    return archs.strip_wrapper_prefixes(sd), meta


def _generator_of_training_checkpoint(sd: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """The generator of a training checkpoint's weights file: its EMA when the run kept one
    (as the run's model.safetensors), else the raw weights."""
    for prefix in (f"{GENERATOR_EMA}.", f"{GENERATOR}."):
        picked = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if picked:
            return picked
    raise BlindSRError(f"{path}: a training checkpoint without generator weights")


def _kwargs_from_meta(path: Path, meta: dict[str, str]) -> tuple[str | None, dict | None]:
    """(arch, kwargs) recorded by save_model, or (None, None) for foreign files."""
    if meta.get("format") != FORMAT:
        return None, None
    try:
        kwargs = json.loads(meta["kwargs"])
        arch = meta["arch"]
    except (KeyError, json.JSONDecodeError) as e:
        raise BlindSRError(f"{path}: damaged blindsr metadata ({e})") from None
    if not isinstance(kwargs, dict):
        raise BlindSRError(f"{path}: damaged blindsr metadata (kwargs is not an object)")
    return arch, kwargs


def model_from_checkpoint(sd: dict[str, Tensor], meta: dict[str, str],
                          path: str | os.PathLike) -> nn.Module:
    """The model that :func:`read_checkpoint`'s ``(sd, meta)`` of ``path`` describe (on the
    CPU, in training mode): the recorded architecture, else the one its tensors fit."""
    arch, kwargs = _kwargs_from_meta(Path(path), meta)
    try:
        return archs.from_state_dict(sd, arch=arch, kwargs=kwargs)
    except BlindSRError as e:
        raise BlindSRError(f"{path}: {e}") from None


def checkpoint_file(name: str | os.PathLike) -> Path:
    """The file ``name`` stands for: a file at that path (``~`` expanded) when there is one,
    else the weights of the shipped model of that name (e.g. ``blindsr-x4``), else the path
    (for the caller's 'not found' error)."""
    path = user_path(name)
    if path.is_file():
        return path
    from blindsr.shipped import shipped_models

    shipped = shipped_models().get(str(name))
    if shipped is not None:
        return Path(shipped.weights)
    if str(name) == "bicubic":
        raise BlindSRError("bicubic has no checkpoint: use blindsr.zoo.load('bicubic', "
                           "scale=4) for it as a model")
    return path


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Model from a checkpoint file (or a shipped model's name, e.g. ``blindsr-x4``, when no
    such file exists), in eval mode on ``device``; no config needed."""
    path = checkpoint_file(path)
    model = model_from_checkpoint(*read_checkpoint(path), path)
    try:
        return model.to(device).eval()
    except (RuntimeError, AssertionError, ValueError) as e:
        raise BlindSRError(f"cannot move model to device {device!r}: {first_line(e)}") from None
