"""Training checkpoints: atomic folders of safetensors weights + a tensors-only state file.

Layout of one checkpoint, ``RUN/checkpoints/step_0001000/``:

- ``weights.safetensors``: every network's raw weights with its name as key prefix
  (``generator.conv_first.weight``, ``generator_ema.…``, ``discriminator.…``);
- ``state.safetensors``: the rest of the training state (optimisers, schedulers, GradScaler,
  strategy state, step, RNG states, data position): plain containers of tensors and primitives,
  the tensors stored as safetensors and the containers around them as JSON in the file's
  metadata (:func:`encode_tree` / :func:`decode_tree`). Nothing is ever unpickled. Checkpoints
  written before this format hold ``state.pt`` (``torch.save``), still read, with
  ``torch.load(weights_only=True)`` only.

A checkpoint is written into ``step_XXXXXXX.tmp/`` (files fsynced), then renamed to
``step_XXXXXXX``: a folder with that exact name is always complete. Old ones are renamed to
``*.del`` before deletion. Resuming picks the newest complete folder and ignores the rest.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from blindsr.errors import BlindSRError, first_line

CHECKPOINTS = "checkpoints"
WEIGHTS = "weights.safetensors"
WEIGHTS_FORMAT = "blindsr-train-state"  # the format metadata of WEIGHTS files
GENERATOR, GENERATOR_EMA = "generator", "generator_ema"  # their inference networks' prefixes
STATE = "state.safetensors"
LEGACY_STATE = "state.pt"  # torch.save state of checkpoints written before state.safetensors
STATE_FORMAT = "blindsr-train-state-tree"  # the format metadata of STATE files
FORMAT_VERSION = 1
STATE_KEYS = ("optimizers", "schedulers", "scaler", "strategy", "rng", "data", "pool",
              "wall_time", "bad_steps", "best_psnr", "step")  # what a resumed run reads
_NAME = re.compile(r"step_(\d{7,})")


def step_dir(run_dir: str | os.PathLike, step: int) -> Path:
    """The folder of the checkpoint taken after ``step`` iterations."""
    return Path(run_dir) / CHECKPOINTS / f"step_{step:07d}"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints ``(step, folder)`` of a run, oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.fullmatch(p.name)
        if m and p.is_dir() and (p / WEIGHTS).is_file() and _state_file(p) is not None:
            found.append((int(m.group(1)), p))
    return sorted(found)


def _state_file(folder: Path) -> Path | None:
    """The state file of a checkpoint folder (the legacy ``state.pt`` too), or None."""
    for name in (STATE, LEGACY_STATE):
        if (folder / name).is_file():
            return folder / name
    return None


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def unfinished_run(run_dir: str | os.PathLike) -> str | None:
    """Why a run folder's ``model.safetensors`` is not its final model yet (None: it is).

    A run rewrites ``model.safetensors`` at every checkpoint, so the file alone does not mean
    the run is done: its newest checkpoint must have reached ``train.iterations`` of its
    ``config.yaml``. A folder holding weights but no config is taken as final."""
    import yaml

    run_dir = Path(run_dir)
    if not (run_dir / "model.safetensors").is_file():
        return f"no {run_dir / 'model.safetensors'}"
    config = run_dir / "config.yaml"
    if not config.is_file():
        return None
    try:
        total = (yaml.safe_load(config.read_text()) or {}).get("train", {}).get("iterations")
    except (OSError, yaml.YAMLError, AttributeError):
        return None  # not a run's config: nothing to compare with
    done = max((step for step, _ in list_checkpoints(run_dir)), default=0)
    return None if total is None or done >= total else f"unfinished: step {done} of {total}"


def remove_partial(run_dir: str | os.PathLike) -> None:
    """Delete leftovers of interrupted saves or prunes (``*.tmp`` / ``*.del`` folders)."""
    folder = Path(run_dir) / CHECKPOINTS
    if folder.is_dir():
        for p in folder.iterdir():
            if p.suffix in (".tmp", ".del") and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def flatten_weights(networks: dict[str, dict[str, Tensor]]) -> dict[str, Tensor]:
    """``{net: state_dict}`` -> one dict with ``net.`` key prefixes (CPU, contiguous copies)."""
    flat = {}
    for net, sd in networks.items():
        if "." in net:
            raise BlindSRError(f"network name {net!r} must not contain '.'")
        for key, value in sd.items():
            flat[f"{net}.{key}"] = value.detach().to("cpu").contiguous().clone()
    return flat


def unflatten_weights(flat: dict[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """Inverse of :func:`flatten_weights`."""
    nets: dict[str, dict[str, Tensor]] = {}
    for key, value in flat.items():
        net, _, rest = key.partition(".")
        nets.setdefault(net, {})[rest] = value
    return nets


def save_checkpoint(run_dir: str | os.PathLike, step: int,
                    weights: dict[str, dict[str, Tensor]], state: dict[str, Any],
                    keep: int) -> Path:
    """Write checkpoint ``step`` atomically, then keep only the newest ``keep``.

    A complete checkpoint of the same step is left as it is.
    """
    final = step_dir(run_dir, step)
    if final.is_dir() and (final / WEIGHTS).is_file() and _state_file(final) is not None:
        return final
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    meta = {"format": WEIGHTS_FORMAT, "version": str(FORMAT_VERSION), "step": str(step)}
    _write(tmp / WEIGHTS, safetensors_bytes(flatten_weights(weights), metadata=meta))
    tensors, skeleton = encode_tree({**state, "step": step})
    meta = {"format": STATE_FORMAT, "version": str(FORMAT_VERSION), "tree": skeleton}
    _write(tmp / STATE, safetensors_bytes(tensors, metadata=meta))
    _fsync_dir(tmp)
    if final.exists():  # an incomplete folder of that name (not written by this module)
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(final.parent)
    prune(run_dir, keep)
    return final


def prune(run_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints (renamed away first)."""
    for _, path in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        doomed = path.with_name(path.name + ".del")
        os.rename(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def load_network(path: str | os.PathLike, net: str) -> dict[str, Tensor]:
    """One network's weights from a checkpoint folder, without reading the training state;
    empty when the file cannot be read (:func:`load_checkpoint` says why)."""
    prefix = f"{net}."
    try:
        with safe_open(str(Path(path) / WEIGHTS), framework="pt", device="cpu") as f:
            return {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    except (OSError, RuntimeError, ValueError, SafetensorError):
        return {}


def load_checkpoint(path: str | os.PathLike, need: tuple[str, ...] = ()
                    ) -> tuple[dict[str, dict[str, Tensor]], dict]:
    """``(weights by network, state)`` of one checkpoint folder; never unpickles objects.
    ``need``: state keys that must be present (:data:`STATE_KEYS` for a resume)."""
    path = Path(path)
    state_file = _state_file(path) or path / STATE
    try:
        with safe_open(str(path / WEIGHTS), framework="pt", device="cpu") as f:
            flat = {k: f.get_tensor(k) for k in f.keys()}
        if state_file.name == LEGACY_STATE:
            state = torch.load(state_file, map_location="cpu", weights_only=True)
            version = state.get("format_version") if isinstance(state, dict) else None
        else:
            state, version = _read_state(state_file)
    except (OSError, RuntimeError, pickle.UnpicklingError, ValueError, EOFError,
            SafetensorError) as e:
        why = first_line(e).split(" (", 1)[0].rstrip(":. ")
        raise BlindSRError(f"checkpoint {path} is unreadable ({why}); delete it to resume "
                           "from the one before") from None
    if version != FORMAT_VERSION:
        raise BlindSRError(f"checkpoint {path}: not a blindsr training state of format "
                           f"{FORMAT_VERSION} (found {version})")
    missing = [k for k in need if k not in state]
    if missing:
        raise BlindSRError(f"checkpoint {path} is incomplete (no {', '.join(missing)}); delete "
                           "it to resume from the one before")
    return unflatten_weights(flat), state


def _read_state(path: Path) -> tuple[dict, int | None]:
    """The state tree of a ``state.safetensors`` file and its format version."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != STATE_FORMAT or "tree" not in meta:
        raise ValueError("not a blindsr training state")
    state = decode_tree(meta["tree"], tensors)
    if not isinstance(state, dict):
        raise ValueError("not a blindsr training state")
    return state, int(meta["version"]) if str(meta.get("version", "")).isdigit() else None


# ---------------------------------------------------------------------------------------------
# Nested state as safetensors + JSON

_TENSOR, _TUPLE, _DICT = "$tensor", "$tuple", "$dict"  # markers of the JSON skeleton
Tree = Any  # dicts, lists, tuples, tensors, str, int, float, bool and None, nested


def encode_tree(tree: Tree) -> tuple[dict[str, Tensor], str]:
    """``(tensors, skeleton)``: the tensors of a nested state under keys ``t0``, ``t1``, ...
    (CPU, contiguous copies) and the rest as JSON, a tensor's place holding
    ``{"$tensor": key}``. Tuples and dicts with keys other than plain strings (an optimiser's
    int parameter ids) are marked so that :func:`decode_tree` gives them back as they were."""
    tensors: dict[str, Tensor] = {}

    def enc(x: Tree) -> Any:
        if isinstance(x, Tensor):
            key = f"t{len(tensors)}"
            tensors[key] = x.detach().to("cpu").contiguous().clone()
            return {_TENSOR: key}
        if isinstance(x, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in x):
                return {k: enc(v) for k, v in x.items()}
            return {_DICT: [[enc(k), enc(v)] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {_TUPLE: [enc(v) for v in x]}
        if isinstance(x, list):
            return [enc(v) for v in x]
        if x is None or isinstance(x, (str, bool, int, float)):
            return x
        if isinstance(x, np.generic):
            return x.item()
        raise BlindSRError(f"training state holds a {type(x).__name__}; only tensors, "
                           "containers and primitives can be checkpointed")

    return tensors, json.dumps(enc(tree))


def decode_tree(skeleton: str, tensors: dict[str, Tensor]) -> Tree:
    """Inverse of :func:`encode_tree`."""

    def dec(x: Any) -> Tree:
        if isinstance(x, list):
            return [dec(v) for v in x]
        if not isinstance(x, dict):
            return x
        if set(x) == {_TENSOR}:
            return tensors[x[_TENSOR]]
        if set(x) == {_TUPLE}:
            return tuple(dec(v) for v in x[_TUPLE])
        if set(x) == {_DICT}:
            return {dec(k): dec(v) for k, v in x[_DICT]}
        return {k: dec(v) for k, v in x.items()}

    try:
        return dec(json.loads(skeleton))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"damaged state skeleton: {first_line(e)}") from None


# ---------------------------------------------------------------------------------------------
# RNG states as tensors / primitives (loadable with weights_only=True)


def rng_state() -> dict[str, Any]:
    """The global RNG states of torch (CPU and CUDA), Python and NumPy."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
