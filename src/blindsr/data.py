"""Training data: named or folder datasets, random patches, a deterministic infinite loader.

- :func:`resolve_dataset` turns a shared name (``Set5``, ``Set14``, ``T91``, ``BSD200``,
  ``RealSRSet``, any case) or a folder into a :class:`DatasetSpec`: ``"hr"`` (HR images only; the
  loop synthesises LR), ``"paired"`` (a folder with ``HR/`` and ``LR/`` subfolders, files matched
  by stem) or ``"lr"`` (LR only, unpaired; ``"lr:<folder or name>"`` forces it).
- :class:`TrainSet` decodes every image once into memory (uint8) and serves random patches: sample
  ``k`` is a pure function of ``(seed, k)``, so any worker, process or rank gives the same sample.
  Images smaller than the patch are padded by reflection (for paired sources HR and LR are padded
  at the bottom/right by matching amounts, so the padded borders are only approximately aligned).
- :func:`make_loader` yields batches forever; step ``t`` on rank ``r`` of ``world`` holds samples
  ``(t * world + r) * batch + i``, so ranks are disjoint and a resumed run continues exactly.
- :class:`PairPool` is Real-ESRGAN's training-pair pool that mixes samples across batches.

Batches are dicts: ``hr`` (N, 3, P, P), ``lr`` (N, 3, P/s, P/s) float32 in [0, 1] (zeros where
unknown), ``has_hr`` and ``has_lr`` (N,) bool.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from blindsr.errors import BlindSRError
from blindsr.io import READ_EXTENSIONS, is_image_file, read_image
from blindsr.ops.sharpen import usm_sharpen
from blindsr.paths import user_path

__all__ = [
    "DatasetSpec", "PairPool", "SHARED_NAMES", "TrainSet", "corner_crops", "data_root",
    "indexed_pairs", "list_pairs", "make_loader", "resolve_dataset", "usm_sharpen",
]

DATA_ENV = "BLINDSR_DATA"
Kind = Literal["hr", "paired", "lr"]
# canonical name -> (path under the data root, kind); Set5/Set14 add x{scale}/HR and /LR.
SHARED_NAMES: dict[str, tuple[str, Kind]] = {
    "Set5": ("Set5", "paired"),
    "Set14": ("Set14", "paired"),
    "T91": ("train/T91", "hr"),
    "BSD200": ("train/BSD200", "hr"),
    "RealSRSet": ("real/RealSRSet", "lr"),
}
_MAX_LISTED = 5
_INDEX = re.compile(r".*\S\s*\[\s*-?\d+\s*\]")  # "name[3]": not a slice
_SUBSET = re.compile(r"(.*\S)\s*\[([-\d\s]*:[-\d\s:]*)\]")  # "name[a:b:c]"


# ------------------------------------------------------------------------------------ datasets


def _root_candidates() -> list[tuple[Path, str]]:
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        return [(user_path(env), f"${DATA_ENV}")]
    repo = Path(__file__).resolve().parents[2]
    return [
        (Path.cwd().parent / "shared" / "datasets", "../shared/datasets from the working folder"),
        (repo.parent / "shared" / "datasets", "../shared/datasets from the blindsr checkout"),
    ]


def data_root() -> Path:
    """Folder of the shared datasets: ``$BLINDSR_DATA``, else ``../shared/datasets`` from the
    working folder, else from the repository root (the first candidate when none exists)."""
    candidates = _root_candidates()
    for path, _ in candidates:
        if path.is_dir():
            return path
    return candidates[0][0]


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset's images are: ``kind`` is "hr", "paired" or "lr"."""

    name: str
    kind: Kind
    hr_dir: Path | None
    lr_dir: Path | None
    subset: tuple[int | None, int | None, int | None] | None = None  # a slice of the sorted list


def _shared(canonical: str, scale: int) -> DatasetSpec:
    sub, kind = SHARED_NAMES[canonical]
    root = data_root()
    base = root / sub
    if kind == "paired":
        scales = sorted(p.name for p in base.glob("x*") if p.is_dir()) if base.is_dir() else []
        base = base / f"x{scale}"
        if scales and not base.is_dir():
            raise BlindSRError(
                f"shared dataset {canonical} has no x{scale} folder in {base.parent} "
                f"(available: {', '.join(scales)})"
            )
    if not base.is_dir():
        where = "; ".join(f"{p} ({why})" for p, why in _root_candidates())
        raise BlindSRError(
            f"shared dataset {canonical} not found: looked for {base} under the data root, "
            f"tried {where}; set ${DATA_ENV} to the datasets folder"
        )
    if kind == "paired":
        return DatasetSpec(canonical, "paired", base / "HR", base / "LR")
    if kind == "lr":
        return DatasetSpec(canonical, "lr", None, base)
    return DatasetSpec(canonical, "hr", base, None)


def _subdir(folder: Path, name: str) -> Path | None:
    """The subfolder of ``folder`` called ``name`` in any case, or None."""
    exact = folder / name
    if exact.is_dir():
        return exact
    for p in folder.iterdir():
        if p.is_dir() and p.name.lower() == name.lower():
            return p
    return None


def _folder(text: str) -> DatasetSpec:
    path = user_path(text)
    if not path.exists():
        shared = ", ".join(SHARED_NAMES)
        raise BlindSRError(
            f"dataset {text!r} not found: not a shared dataset name ({shared}) "
            f"and no such folder {path}"
        )
    if not path.is_dir():
        raise BlindSRError(f"dataset {text!r} is not a folder")
    name = path.resolve().name or text
    hr, lr = _subdir(path, "HR"), _subdir(path, "LR")
    if hr is not None and lr is not None:
        return DatasetSpec(name, "paired", hr, lr)
    return DatasetSpec(name, "hr", path, None)


def _parse_subset(text: str) -> tuple[str, str, tuple[int | None, ...]] | None:
    """``"name[a:b:c]"`` -> ("name", "a:b:c", (a, b, c)); None for text without a slice."""
    match = _SUBSET.fullmatch(text)
    if match is None:
        return None
    written = match.group(2).replace(" ", "")
    parts = written.split(":")
    if len(parts) > 3:
        raise BlindSRError(f"dataset {text!r}: the subset [{match.group(2)}] has more than 3 parts")
    try:
        bounds = tuple(int(x) if x.strip() else None for x in parts) + (None,) * (3 - len(parts))
    except ValueError:
        raise BlindSRError(f"dataset {text!r}: the subset [{match.group(2)}] must be a slice of "
                           "integers, e.g. [0::2] or [:5]") from None
    if bounds[2] == 0:
        raise BlindSRError(f"dataset {text!r}: the subset's step cannot be 0")
    return match.group(1).strip(), written, bounds


def resolve_dataset(name_or_path: str, scale: int) -> DatasetSpec:
    """A shared name (any case), a folder (``HR/`` + ``LR/`` inside -> paired, else HR only), or
    ``"lr:<name or folder>"`` (its LR images, or its images, as unpaired LR) -> a spec. A Python
    slice after the name keeps part of the sorted image list: ``RealSRSet[0::2]`` (every other
    image), ``RealSRSet[1::2]`` (the rest), ``Set14[:5]``.

    Shared names win over a same-named folder in the working folder; write ``./Set5`` for that.
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise BlindSRError(f"scale must be a positive integer, got {scale!r}")
    text = str(name_or_path).strip()
    if not text:
        raise BlindSRError("empty dataset name")
    if text.lower().startswith("lr:"):
        inner = resolve_dataset(text[3:], scale)
        folder = inner.lr_dir if inner.lr_dir is not None else inner.hr_dir
        return DatasetSpec(inner.name, "lr", None, folder, inner.subset)
    exists = user_path(text).exists()
    subset = None if exists else _parse_subset(text)
    if subset is not None:
        base, written, bounds = subset
        inner = resolve_dataset(base, scale)
        if inner.subset is not None:
            raise BlindSRError(f"dataset {text!r}: one slice per name, e.g. [1:3]")
        return replace(inner, name=f"{inner.name}[{written}]", subset=bounds)
    if not exists and _INDEX.fullmatch(text):
        raise BlindSRError(f"dataset {text!r}: write a slice, e.g. [3:4] for one image")
    canonical = {k.lower(): k for k in SHARED_NAMES}.get(text.lower())
    if canonical is not None:
        return _shared(canonical, scale)
    return _folder(text)


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise BlindSRError(f"dataset folder not found: {folder}")
    try:
        files = sorted(
            p for p in folder.iterdir() if is_image_file(p)
        )
    except OSError as exc:
        raise BlindSRError(f"cannot list dataset folder {folder}: {exc.strerror or exc}") from exc
    if not files:
        raise BlindSRError(f"dataset folder {folder} has no {'/'.join(READ_EXTENSIONS)} images")
    return files


def _by_stem(files: list[Path]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            raise BlindSRError(f"two images share the name {p.stem!r}: {out[p.stem]} and {p}")
        out[p.stem] = p
    return out


def _first(names: set[str]) -> str:
    shown = sorted(names)[:_MAX_LISTED]
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" (+{more} more)" if more else "")


def list_pairs(spec: DatasetSpec) -> list[tuple[Path | None, Path | None]]:
    """``(hr, lr)`` file pairs of a dataset, sorted by name (None on the side a kind lacks),
    restricted to its subset."""
    return [pair for _, pair in indexed_pairs(spec)]


def indexed_pairs(spec: DatasetSpec) -> list[tuple[int, tuple[Path | None, Path | None]]]:
    """:func:`list_pairs` with each pair's place in the whole sorted set (0, 1, ... without a
    subset; 1, 3, ... for ``[1::2]``)."""
    pairs = list(enumerate(_all_pairs(spec)))
    if spec.subset is None:
        return pairs
    kept = pairs[slice(*spec.subset)]
    if not kept:
        raise BlindSRError(f"dataset {spec.name} selects none of its {len(pairs)} images")
    return kept


def _all_pairs(spec: DatasetSpec) -> list[tuple[Path | None, Path | None]]:
    if spec.kind == "hr":
        return [(p, None) for p in _images(_require(spec.hr_dir, spec))]
    if spec.kind == "lr":
        return [(None, p) for p in _images(_require(spec.lr_dir, spec))]
    hr_files = _images(_require(spec.hr_dir, spec))
    hr = _by_stem(hr_files)
    lr = _by_stem(_images(_require(spec.lr_dir, spec)))
    if hr.keys() != lr.keys():
        parts = []
        if hr.keys() - lr.keys():
            parts.append(f"only in {spec.hr_dir}: {_first(set(hr) - set(lr))}")
        if lr.keys() - hr.keys():
            parts.append(f"only in {spec.lr_dir}: {_first(set(lr) - set(hr))}")
        raise BlindSRError(f"HR and LR names of {spec.name} do not match: {'; '.join(parts)}")
    return [(p, lr[p.stem]) for p in hr_files]  # in file-name order, as an HR-only folder


def corner_crops(names: list[str] | tuple[str, ...], count: int, patch: int) -> Tensor:
    """(count, 3, patch, patch): the top-left ``patch`` square of the first ``count`` RGB HR
    images at least ``patch`` pixels a side, from the datasets ``names`` in order (sorted within
    each): a fixed sample for diagnostics."""
    crops = []
    for name in names:
        for hr_path, _ in list_pairs(resolve_dataset(name, 4)):  # paired sets: their x4 HR
            img = read_image(hr_path).color
            if img.shape[1] == 3 and min(img.shape[-2:]) >= patch:
                crops.append(img[..., :patch, :patch])
            if len(crops) == count:
                return torch.cat(crops)
    raise BlindSRError(f"only {len(crops)} images of {', '.join(names)} are {patch} pixels "
                       "or larger")


def _require(folder: Path | None, spec: DatasetSpec) -> Path:
    if folder is None:
        raise BlindSRError(f"dataset {spec.name} ({spec.kind}) is missing a folder")
    return folder


# ------------------------------------------------------------------------------------ patches


def _load_uint8(path: Path) -> Tensor:
    """An image file -> (3, H, W) uint8 (gray expanded, alpha dropped, 16-bit rounded to 8)."""
    color = read_image(path).color[0].numpy()
    if color.shape[0] == 1:
        color = np.repeat(color, 3, axis=0)
    return torch.from_numpy(np.rint(color * np.float32(255)).astype(np.uint8))


def _pad_to(img: Tensor, height: int, width: int) -> Tensor:
    """Reflect-pad (bottom/right) to at least ``height`` x ``width``, reflecting again if needed."""
    ph, pw = max(height - img.shape[-2], 0), max(width - img.shape[-1], 0)
    if ph == 0 and pw == 0:
        return img
    return torch.from_numpy(np.pad(img.numpy(), ((0, 0), (0, ph), (0, pw)), mode="reflect"))


@dataclass
class _Source:
    name: str
    kind: Kind
    hr: list[Tensor]  # empty for "lr"
    lr: list[Tensor]  # empty for "hr"


def _load_pair(hr_path: Path, lr_path: Path, scale: int) -> tuple[Tensor, Tensor]:
    hr, lr = _load_uint8(hr_path), _load_uint8(lr_path)
    (H, W), (h, w) = hr.shape[-2:], lr.shape[-2:]
    if H // scale != h or W // scale != w:
        raise BlindSRError(
            f"HR {hr_path.name} is {W}x{H} but LR is {w}x{h}; expected the LR to be 1/{scale} "
            "of the HR"
        )
    return hr[:, : h * scale, : w * scale].contiguous(), lr  # mod-crop the HR to s * LR


def _load_source(spec: DatasetSpec, patch: int, scale: int) -> _Source:
    """Decode every image of ``spec``; unreadable files and bad pairs are skipped with a warning."""
    lr_patch = patch // scale
    hr_list: list[Tensor] = []
    lr_list: list[Tensor] = []
    skipped: list[str] = []
    small: list[str] = []  # images the patch does not fit in
    for hr_path, lr_path in list_pairs(spec):
        try:
            if spec.kind == "paired":
                assert hr_path is not None and lr_path is not None
                hr, lr = _load_pair(hr_path, lr_path, scale)
                lr = _pad_to(lr, lr_patch, lr_patch)
                hr_list.append(_pad_to(hr, lr.shape[-2] * scale, lr.shape[-1] * scale))
                lr_list.append(lr)
            elif spec.kind == "hr":
                assert hr_path is not None
                hr = _load_uint8(hr_path)
                hr_list.append(_pad_to(hr, patch, patch))
            else:
                assert lr_path is not None
                lr = _load_uint8(lr_path)
                lr_list.append(_pad_to(lr, lr_patch, lr_patch))
            size = tuple((hr if spec.kind != "lr" else lr).shape[-2:])
            if min(size) < (lr_patch if spec.kind == "lr" else patch):
                small.append(f"{Path(hr_path or lr_path).name} {size[1]}x{size[0]}")
        except BlindSRError as exc:
            skipped.append(str(exc))
    if skipped:
        warnings.warn(
            f"{spec.name}: skipped {len(skipped)} image(s); first: {skipped[0]}", stacklevel=3
        )
    if not hr_list and not lr_list:
        raise BlindSRError(f"dataset {spec.name} has no usable images ({skipped[0]})")
    _warn_if_mostly_padded(spec.name, small, len(hr_list) or len(lr_list),
                           f"{lr_patch}-pixel LR" if spec.kind == "lr" else f"{patch}-pixel HR")
    return _Source(spec.name, spec.kind, hr_list, lr_list)


def _warn_if_mostly_padded(name: str, small: list[str], total: int, patch: str) -> None:
    """Warn when more than a tenth of a source's images are smaller than the patch (one odd
    image, as in T91, is not worth a warning): their crops are mostly reflected border."""
    if len(small) * 10 > total:
        warnings.warn(f"{name}: {len(small)} of {total} images are smaller than the {patch} "
                      f"patch (first: {small[0]}) and are padded by reflection; use larger "
                      "images or a smaller train.patch", stacklevel=4)


def _sample_seed(seed: int, k: int) -> int:
    digest = hashlib.blake2b(f"blindsr/{seed}/{k}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _randint(high: int, g: torch.Generator) -> int:
    return int(torch.randint(high, (1,), generator=g))


def _augment(a: np.ndarray, hflip: bool, vflip: bool, transpose: bool) -> np.ndarray:
    if hflip:
        a = a[:, :, ::-1]
    if vflip:
        a = a[:, ::-1, :]
    if transpose:
        a = a.transpose(0, 2, 1)
    return a


class TrainSet(Dataset):
    """Random training patches from weighted sources, decoded once into memory.

    ``sources`` is a list of ``(spec, weight)``; weights are relative. Sample ``k`` draws, from a
    generator seeded by a hash of ``(seed, k)``: a source by weight, an image uniformly, a crop
    position, and (``augment``) a horizontal flip, a vertical flip and a transpose, each with
    probability 1/2, which together give the 8 flips / 90-degree rotations with equal chance.
    """

    def __init__(
        self,
        sources: list[tuple[DatasetSpec, float]],
        patch: int,
        scale: int,
        seed: int = 0,
        augment: bool = True,
    ) -> None:
        _check_positive_int(scale, "scale")
        _check_positive_int(patch, "patch")
        if patch % scale:
            raise BlindSRError(f"patch {patch} must be a multiple of the scale {scale}")
        if not sources:
            raise BlindSRError("TrainSet needs at least one dataset")
        weights = [w for _, w in sources]
        if not all(isinstance(w, int | float) and 0 < w < float("inf") for w in weights):
            raise BlindSRError(f"dataset weights must be positive numbers, got {weights}")
        self.patch, self.scale, self.seed, self.augment = patch, scale, int(seed), augment
        self.sources = [_load_source(spec, patch, scale) for spec, _ in sources]
        self.weights = torch.tensor(weights, dtype=torch.float64) / sum(weights)

    def __len__(self) -> int:
        return 2**62  # effectively infinite: indices come from make_loader's step sampler

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{s.name} ({s.kind}, {max(len(s.hr), len(s.lr))} images, w={w:.3g})"
            for s, w in zip(self.sources, self.weights.tolist(), strict=True)
        )
        return f"TrainSet(patch={self.patch}, scale={self.scale}, seed={self.seed}: {parts})"

    def __getitem__(self, k: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(_sample_seed(self.seed, int(k)))
        src = self.sources[int(torch.multinomial(self.weights, 1, generator=g))]
        flips = torch.randint(2, (3,), generator=g).tolist() if self.augment else [0, 0, 0]
        p, lp, s = self.patch, self.patch // self.scale, self.scale
        if src.kind == "hr":
            img = src.hr[_randint(len(src.hr), g)]
            y, x = _randint(img.shape[-2] - p + 1, g), _randint(img.shape[-1] - p + 1, g)
            hr, lr = img[:, y : y + p, x : x + p], None
        else:
            i = _randint(len(src.lr), g)
            img = src.lr[i]
            y, x = _randint(img.shape[-2] - lp + 1, g), _randint(img.shape[-1] - lp + 1, g)
            lr = img[:, y : y + lp, x : x + lp]
            hr = None
            if src.kind == "paired":
                hr = src.hr[i][:, y * s : y * s + p, x * s : x * s + p]
        return {
            "hr": _to_float(hr, p, flips),
            "lr": _to_float(lr, lp, flips),
            "has_hr": torch.tensor(hr is not None),
            "has_lr": torch.tensor(lr is not None),
        }


def _to_float(t: Tensor | None, size: int, flips: list[int]) -> Tensor:
    """uint8 crop -> augmented float32 in [0, 1], or zeros. Done in numpy: single-threaded, it
    avoids torch's intra-op threads, which cost ~30x more on patch-sized arrays when busy."""
    out = np.zeros((3, size, size), np.float32)
    if t is not None:
        np.divide(_augment(t.numpy(), *map(bool, flips)), np.float32(255), out=out)
    return torch.from_numpy(out)


def _check_positive_int(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BlindSRError(f"{what} must be a positive integer, got {value!r}")


# ------------------------------------------------------------------------------------- loader


class _StepSampler(Sampler[list[int]]):
    """Batches of global indices, forever: step t on rank r is ``(t*world + r)*batch + i``."""

    def __init__(self, batch: int, start_step: int, rank: int, world: int) -> None:
        self.batch, self.start_step, self.rank, self.world = batch, start_step, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        t = self.start_step
        while True:
            first = (t * self.world + self.rank) * self.batch
            yield list(range(first, first + self.batch))
            t += 1


def _worker_init(seed: int, worker_id: int) -> None:
    """Fix every global RNG in a worker, so nothing there depends on inherited random state."""
    s = _sample_seed(seed, -1 - worker_id)
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s % 2**32)


def make_loader(
    dataset: TrainSet,
    batch: int,
    workers: int,
    start_step: int = 0,
    rank: int = 0,
    world: int = 1,
    pin_memory: bool = False,
) -> Iterator[dict[str, Tensor]]:
    """Infinite iterator of CPU batches (see the module docstring for the index scheme).

    ``workers > 0`` uses that many persistent DataLoader worker processes; batches are the same
    for any number of workers. The batch of step ``t`` comes ``t - start_step`` items in.
    """
    _check_positive_int(batch, "batch")
    _check_positive_int(world, "world")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise BlindSRError(f"workers must be an integer >= 0, got {workers!r}")
    if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
        raise BlindSRError(f"start_step must be an integer >= 0, got {start_step!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world:
        raise BlindSRError(f"rank must be in [0, {world}), got {rank!r}")
    seed = getattr(dataset, "seed", 0)
    loader = DataLoader(
        dataset,
        batch_sampler=_StepSampler(batch, start_step, rank, world),
        num_workers=workers,
        persistent_workers=workers > 0,
        worker_init_fn=partial(_worker_init, seed) if workers > 0 else None,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),  # keeps the global RNG untouched
    )
    return _forever(loader)


def _forever(loader: DataLoader) -> Iterator[dict[str, Tensor]]:
    yield from loader  # the batch sampler never ends


# ----------------------------------------------------------------------------------- pair pool


class PairPool:
    """Real-ESRGAN's training-pair pool: mixes samples (with all their keys) across batches.

    The pool holds ``size`` samples on the batches' device. While it fills, batches pass through
    unchanged and are copied in; once full, each incoming batch takes the places of ``batch``
    distinct random pool entries, which are returned instead. Random choices come from
    ``generator`` only. ``size`` must be a multiple of the batch size; ``size=0`` disables the pool.
    """

    def __init__(self, size: int, generator: torch.Generator) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BlindSRError(f"pair pool size must be an integer >= 0, got {size!r}")
        self.size, self.generator = size, generator
        self.pool: dict[str, Tensor] = {}
        self.filled = 0

    def __call__(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.size == 0:
            return batch
        if "hr_plain" in batch and self.pool and "hr_plain" not in self.pool:
            # a pool restored from a checkpoint made before hr_plain existed: its HR stands in
            self.pool["hr_plain"] = self.pool["hr"].clone()
        n = self._check(batch)
        if not self.pool:
            self.pool = {
                k: torch.zeros((self.size, *v.shape[1:]), dtype=v.dtype, device=v.device)
                for k, v in batch.items()
            }
        if self.filled < self.size:
            for k, v in batch.items():
                self.pool[k][self.filled : self.filled + n] = v
            self.filled += n
            return batch
        slots = torch.randperm(self.size, generator=self.generator, device=self.generator.device)
        slots = slots[:n].to(next(iter(self.pool.values())).device)
        out = {}
        for k, v in batch.items():
            out[k] = self.pool[k][slots]
            self.pool[k][slots] = v.to(self.pool[k].device)
        return out

    def _check(self, batch: dict[str, Tensor]) -> int:
        sizes = {int(v.shape[0]) for v in batch.values()}
        if len(sizes) != 1:
            raise BlindSRError(f"pair pool: batch tensors disagree on the batch size: {sizes}")
        n = sizes.pop()
        if self.size % n:
            raise BlindSRError(f"pair pool size {self.size} must be a multiple of the batch {n}")
        if self.pool:
            same = self.pool.keys() == batch.keys() and all(
                tuple(self.pool[k].shape[1:]) == tuple(v.shape[1:]) for k, v in batch.items()
            )
            if not same:
                raise BlindSRError("pair pool: batches changed keys or shapes between steps")
        return n

    def state_dict(self) -> dict[str, object]:
        """Pool contents and fill level (the generator's state is the caller's to save)."""
        return {"filled": self.filled, "pool": dict(self.pool)}

    def load_state_dict(self, state: dict) -> None:
        self.filled = int(state["filled"])
        self.pool = dict(state["pool"])
