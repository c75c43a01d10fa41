"""Datasets, random patches, the deterministic loader and the training-pair pool."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from blindsr.data import (
    DatasetSpec,
    PairPool,
    TrainSet,
    data_root,
    list_pairs,
    make_loader,
    resolve_dataset,
)
from blindsr.errors import BlindSRError
from blindsr.io import read_image
from blindsr.ops import imresize


def _write(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(arr).astype(np.uint8)).save(path)
    return path


def _coords(h: int, w: int) -> np.ndarray:
    """An image whose red and green values are each pixel's row and column."""
    y, x = np.mgrid[:h, :w]
    return np.stack([y, x, (3 * y + 5 * x) % 256], axis=-1)


def _noise(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3))


def _folder(tmp_path: Path, name: str, images: dict[str, np.ndarray]) -> Path:
    for stem, arr in images.items():
        _write(tmp_path / name / f"{stem}.png", arr)
    return tmp_path / name


def _hr_set(tmp_path: Path, n: int = 3, size: int = 40, **kw) -> TrainSet:
    folder = _folder(tmp_path, "hr", {f"im{i}": _noise(size, size + 4, i) for i in range(n)})
    kw = {"patch": 16, "scale": 2, "seed": 7, **kw}
    return TrainSet([(resolve_dataset(str(folder), 2), 1.0)], **kw)


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ resolving


def test_resolve_folders_and_pairs(tmp_path):
    hr = _folder(tmp_path, "plain", {"b": _noise(8, 8, 0), "a": _noise(8, 8, 1)})
    spec = resolve_dataset(str(hr), 4)
    assert spec == DatasetSpec("plain", "hr", hr, None)
    assert [p[0].name for p in list_pairs(spec)] == ["a.png", "b.png"]

    _folder(tmp_path, "pairs/HR", {"x": _noise(8, 8, 0), "y": _noise(8, 8, 1)})
    _folder(tmp_path, "pairs/LR", {"y": _noise(4, 4, 1), "x": _noise(4, 4, 0)})
    spec = resolve_dataset(str(tmp_path / "pairs"), 2)
    assert spec.kind == "paired"
    assert [(h.stem, lr.stem) for h, lr in list_pairs(spec)] == [("x", "x"), ("y", "y")]

    spec = resolve_dataset(f"lr:{tmp_path / 'pairs'}", 2)
    assert (spec.kind, spec.hr_dir, spec.lr_dir) == ("lr", None, tmp_path / "pairs" / "LR")
    assert all(h is None for h, _ in list_pairs(spec))
    spec = resolve_dataset(f"LR:{hr}", 2)
    assert (spec.kind, spec.lr_dir) == ("lr", hr)


def test_paired_sets_keep_the_file_name_order_of_hr_only_folders(tmp_path):
    names = {"a": _noise(8, 8, 0), "a-b": _noise(8, 8, 1)}  # "a-b.png" < "a.png", "a" < "a-b"
    hr = _folder(tmp_path, "p/HR", names)
    _folder(tmp_path, "p/LR", {k: _noise(4, 4, 2) for k in names})
    paired = [h.name for h, _ in list_pairs(resolve_dataset(str(tmp_path / "p"), 2))]
    alone = [h.name for h, _ in list_pairs(resolve_dataset(str(hr), 2))]
    assert paired == alone == ["a-b.png", "a.png"]  # image k gets eval's (and degrade's) seed + k


def test_a_slice_after_the_name_keeps_part_of_the_sorted_images(tmp_path):
    folder = _folder(tmp_path, "five", {f"im{i}": _noise(8, 8, i) for i in (3, 0, 4, 1, 2)})
    names = [f"im{i}.png" for i in range(5)]
    even, odd = (resolve_dataset(f"{folder}[{k}::2]", 4) for k in (0, 1))
    assert (even.name, even.subset) == ("five[0::2]", (0, None, 2))
    assert [h.name for h, _ in list_pairs(even)] == names[0::2]
    assert [h.name for h, _ in list_pairs(odd)] == names[1::2]  # the complement: a held-out half
    spec = resolve_dataset(f"lr:{folder}[ :2 ]", 4)
    assert (spec.kind, spec.name) == ("lr", "five[:2]")
    assert [lr.name for _, lr in list_pairs(spec)] == names[:2]
    assert TrainSet([(spec, 1.0)], patch=8, scale=4, seed=0).sources[0].lr[1].shape == (3, 8, 8)
    with pytest.raises(BlindSRError, match=r"five\[9:\] selects none of its 5 images"):
        list_pairs(resolve_dataset(f"{folder}[9:]", 4))
    for bad, message in [("[::0]", "step cannot be 0"), ("[1:2:3:4]", "more than 3 parts"),
                         ("[-:]", "slice of integers"), ("[:4][1:]", "one slice per name"),
                         ("[3]", "write a slice, e.g. [3:4]")]:
        with pytest.raises(BlindSRError, match=re.escape(message)):
            resolve_dataset(f"{folder}{bad}", 4)
    odd_name = _folder(tmp_path, "shots[0:1]", {"a": _noise(8, 8, 0), "b": _noise(8, 8, 1)})
    assert len(list_pairs(resolve_dataset(str(odd_name), 4))) == 2  # a real folder wins


def test_resolve_errors(tmp_path):
    with pytest.raises(BlindSRError, match="no such folder"):
        resolve_dataset(str(tmp_path / "missing"), 4)
    with pytest.raises(BlindSRError, match="Set5, Set14"):
        resolve_dataset("Set6", 4)  # neither a shared name nor a folder
    (tmp_path / "empty").mkdir()
    with pytest.raises(BlindSRError, match="no .*images"):
        list_pairs(resolve_dataset(str(tmp_path / "empty"), 4))
    _folder(tmp_path, "bad/HR", {"a": _noise(8, 8, 0), "b": _noise(8, 8, 0), "c": _noise(8, 8, 0)})
    _folder(tmp_path, "bad/LR", {"a": _noise(4, 4, 0), "b_x2": _noise(4, 4, 0)})
    with pytest.raises(BlindSRError, match=r"only in .*HR: b, c; only in .*LR: b_x2"):
        list_pairs(resolve_dataset(str(tmp_path / "bad"), 2))
    with pytest.raises(BlindSRError, match="scale"):
        resolve_dataset(str(tmp_path / "bad"), 0)


def test_data_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("BLINDSR_DATA", str(tmp_path))
    assert data_root() == tmp_path
    with pytest.raises(BlindSRError, match=r"T91 not found.*BLINDSR_DATA"):
        resolve_dataset("t91", 4)


def test_shared_names(shared, monkeypatch):
    monkeypatch.setenv("BLINDSR_DATA", str(shared / "datasets"))
    root = shared / "datasets"
    set5 = resolve_dataset("set5", 4)
    assert set5 == DatasetSpec("Set5", "paired", root / "Set5/x4/HR", root / "Set5/x4/LR")
    assert len(list_pairs(set5)) == 5
    assert len(list_pairs(resolve_dataset("SET14", 3))) == 14
    assert resolve_dataset("T91", 4) == DatasetSpec("T91", "hr", root / "train/T91", None)
    assert len(list_pairs(resolve_dataset("bsd200", 4))) == 200
    real = resolve_dataset("RealSRSet", 4)
    assert (real.kind, real.lr_dir) == ("lr", root / "real/RealSRSet")
    assert resolve_dataset("lr:Set5", 2).lr_dir == root / "Set5/x2/LR"
    with pytest.raises(BlindSRError, match="no x8 folder.*x2, x3, x4"):
        resolve_dataset("Set5", 8)


# ------------------------------------------------------------------------------ samples


def test_sample_format_and_purity(tmp_path):
    ds = _hr_set(tmp_path)
    s = ds[3]
    assert s["hr"].shape == (3, 16, 16) and s["hr"].dtype == torch.float32
    assert s["lr"].shape == (3, 8, 8) and not s["lr"].any()
    assert bool(s["has_hr"]) and not bool(s["has_lr"])
    assert 0 <= s["hr"].min() and s["hr"].max() <= 1
    assert _equal(ds[3], s)  # a pure function of (seed, k) ...
    assert _equal(_hr_set(tmp_path, seed=7)[3], s)  # ... not of the object
    assert not torch.equal(ds[4]["hr"], s["hr"])
    assert not torch.equal(_hr_set(tmp_path, seed=8)[3]["hr"], s["hr"])


def test_sample_same_in_another_process(tmp_path):
    ds = _hr_set(tmp_path)
    code = (
        "import sys; from blindsr.data import TrainSet, resolve_dataset;"
        "ds = TrainSet([(resolve_dataset(sys.argv[1], 2), 1.0)], 16, 2, seed=7);"
        "print(repr(float(ds[11]['hr'].double().sum())))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "hr")],
        env=env, capture_output=True, text=True, check=True,
    )
    assert float(out.stdout) == float(ds[11]["hr"].double().sum())


def test_weights_are_respected(tmp_path):
    black = _folder(tmp_path, "black", {"a": np.zeros((20, 20, 3))})
    white = _folder(tmp_path, "white", {"a": np.full((20, 20, 3), 255)})
    sources = [(resolve_dataset(str(black), 2), 3.0), (resolve_dataset(str(white), 2), 1.0)]
    ds = TrainSet(sources, patch=8, scale=2, seed=1)
    share = sum(float(ds[k]["hr"].mean()) == 0.0 for k in range(400)) / 400
    assert abs(share - 0.75) < 0.06
    with pytest.raises(BlindSRError, match="weights"):
        TrainSet([(resolve_dataset(str(black), 2), 0.0)], patch=8, scale=2)


def _dihedral(crop: torch.Tensor) -> list[torch.Tensor]:
    flipped = crop.flip(-1)
    return [torch.rot90(c, k, dims=(-2, -1)) for c in (crop, flipped) for k in range(4)]


def _which_transform(sample: torch.Tensor, image: torch.Tensor, patch: int) -> int:
    """Index of the flip/rotation that maps the image crop the sample came from onto it."""
    values = (sample * 255).round().long()
    y, x = int(values[0].min()), int(values[1].min())
    crop = image[:, y : y + patch, x : x + patch].long()
    matches = [i for i, t in enumerate(_dihedral(crop)) if torch.equal(t, values)]
    assert matches, "sample is not a flipped / rotated crop of the image"
    return matches[0]


@pytest.mark.parametrize("augment", [True, False])
def test_augmentations_preserve_content(tmp_path, augment):
    arr = _coords(40, 52)
    folder = _folder(tmp_path, "coords", {"c": arr})
    ds = TrainSet([(resolve_dataset(str(folder), 4), 1.0)], 16, 4, seed=3, augment=augment)
    image = torch.from_numpy(arr).permute(2, 0, 1)
    seen = {_which_transform(ds[k]["hr"], image, 16) for k in range(80)}
    assert seen == (set(range(8)) if augment else {0})


def test_paired_crops_stay_aligned(tmp_path):
    hr = torch.from_numpy(_noise(48, 56, 0)).permute(2, 0, 1).float() / 255
    lr = imresize(hr[None], scale=0.5)[0].clamp(0, 1)
    _write(tmp_path / "p/HR/a.png", (hr * 255).round().permute(1, 2, 0).numpy())
    _write(tmp_path / "p/LR/a.png", (lr * 255).round().permute(1, 2, 0).numpy())
    ds = TrainSet([(resolve_dataset(str(tmp_path / "p"), 2), 1.0)], patch=24, scale=2, seed=0)
    for k in range(12):
        s = ds[k]
        assert bool(s["has_hr"]) and bool(s["has_lr"])
        down = imresize(s["hr"][None], scale=0.5)[0]
        err = (down - s["lr"])[:, 3:-3, 3:-3].abs().max()  # crop borders see other pixels
        assert err < 1.5 / 255, f"sample {k} misaligned by {err * 255:.1f} levels"


def test_paired_exact_positions(tmp_path):
    arr = _coords(40, 48)
    _folder(tmp_path, "q/HR", {"a": arr})
    _folder(tmp_path, "q/LR", {"a": arr[1::2, 1::2]})
    ds = TrainSet(
        [(resolve_dataset(str(tmp_path / "q"), 2), 1.0)], patch=16, scale=2, augment=False
    )
    for k in range(10):
        s = ds[k]
        assert torch.equal(s["lr"], s["hr"][:, 1::2, 1::2])


def test_lr_only_gray_and_small_images(tmp_path):
    folder = _folder(tmp_path, "g", {"small": np.arange(60).reshape(6, 10) * 4})
    with pytest.warns(UserWarning, match=r"smaller than the 8-pixel LR patch \(first: small.png "
                                         r"10x6\)"):
        ds = TrainSet([(resolve_dataset(f"lr:{folder}", 2), 1.0)], patch=16, scale=2)
    s = ds[0]
    assert not bool(s["has_hr"]) and bool(s["has_lr"])
    assert not s["hr"].any() and s["hr"].shape == (3, 16, 16)
    assert s["lr"].shape == (3, 8, 8)
    assert torch.equal(s["lr"][0], s["lr"][1])  # gray expanded to 3 channels
    values = set((s["lr"] * 255).round().long().flatten().tolist())
    assert values <= set(range(0, 240, 4))  # reflection padding only reuses image pixels


def test_a_source_mostly_smaller_than_the_patch_is_warned_about(tmp_path):
    import warnings

    folder = _folder(tmp_path, "hr", {f"im{i}": _noise(20, 24, i) for i in range(3)})
    spec = resolve_dataset(str(folder), 2)
    with pytest.warns(UserWarning, match=r"3 of 3 images are smaller than the 32-pixel HR patch "
                                         r"\(first: im0.png 24x20\)"):
        TrainSet([(spec, 1.0)], patch=32, scale=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TrainSet([(spec, 1.0)], patch=20, scale=2)  # they fit
        lr = resolve_dataset(f"lr:{folder}", 2)
        TrainSet([(lr, 1.0)], patch=40, scale=2)  # LR-only: the LR patch is 20
    for i in range(3, 30):  # one small image among many (T91 has one) is not worth a warning
        _write(folder / f"im{i}.png", _noise(40, 40, i))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TrainSet([(resolve_dataset(str(folder), 2), 1.0)], patch=32, scale=2)


def test_unreadable_files_skipped_and_bad_settings(tmp_path):
    folder = _folder(tmp_path, "mixed", {"good": _noise(20, 20, 0)})
    (folder / "broken.png").write_bytes(b"not a png")
    spec = resolve_dataset(str(folder), 2)
    with pytest.warns(UserWarning, match="skipped 1 image"):
        ds = TrainSet([(spec, 1.0)], patch=8, scale=2)
    assert ds[0]["hr"].shape == (3, 8, 8)
    (folder / "good.png").unlink()
    with pytest.warns(UserWarning), pytest.raises(BlindSRError, match="no usable images"):
        TrainSet([(spec, 1.0)], patch=8, scale=2)
    with pytest.raises(BlindSRError, match="multiple of the scale"):
        TrainSet([(spec, 1.0)], patch=10, scale=4)


def test_paired_size_mismatch_is_reported(tmp_path):
    _folder(tmp_path, "m/HR", {"a": _noise(32, 32, 0), "b": _noise(32, 32, 1)})
    _folder(tmp_path, "m/LR", {"a": _noise(16, 16, 0), "b": _noise(12, 16, 1)})
    with pytest.warns(UserWarning, match="b.png is 32x32 but LR is 16x12"):
        ds = TrainSet([(resolve_dataset(str(tmp_path / "m"), 2), 1.0)], patch=8, scale=2)
    assert len(ds.sources[0].lr) == 1


# ------------------------------------------------------------------------------ loader


def test_loader_shards_ranks_and_resumes(tmp_path):
    ds = _hr_set(tmp_path)
    full = make_loader(ds, batch=2, workers=0)
    batches = [next(full) for _ in range(5)]
    for i in range(2):  # step 0, rank 0: global indices 0, 1
        assert torch.equal(batches[0]["hr"][i], ds[i]["hr"])
    resumed = make_loader(ds, batch=2, workers=0, start_step=3)
    assert _equal(next(resumed), batches[3]) and _equal(next(resumed), batches[4])
    r0 = make_loader(ds, batch=2, workers=0, start_step=1, rank=0, world=2)
    r1 = make_loader(ds, batch=2, workers=0, start_step=1, rank=1, world=2)
    b0, b1 = next(r0), next(r1)
    assert _equal(b0, batches[2]) and _equal(b1, batches[3])  # step 1 = global batches 2, 3
    assert not torch.equal(b0["hr"], b1["hr"])
    with pytest.raises(BlindSRError, match="rank"):
        make_loader(ds, batch=2, workers=0, rank=2, world=2)


def test_workers_give_the_same_batches(tmp_path):
    ds = _hr_set(tmp_path)
    single = make_loader(ds, batch=3, workers=0, start_step=2)
    state = torch.get_rng_state()
    multi = make_loader(ds, batch=3, workers=2, start_step=2)
    for _ in range(4):
        assert _equal(next(single), next(multi))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone


# ------------------------------------------------------------------------------ pair pool


def _tagged(first: int, n: int = 4) -> dict[str, torch.Tensor]:
    ids = torch.arange(first, first + n, dtype=torch.float32)
    return {
        "lr": ids[:, None, None, None].expand(n, 3, 2, 2).clone(),
        "hr": ids[:, None, None, None].expand(n, 3, 4, 4).clone(),
        "kernel_sigma": ids.clone(),
        "has_hr": ids % 2 == 0,
    }


def _run_pool(seed: int, steps: int = 10) -> tuple[list[dict[str, torch.Tensor]], PairPool]:
    pool = PairPool(8, torch.Generator().manual_seed(seed))
    return [pool(_tagged(4 * t)) for t in range(steps)], pool


def test_pair_pool_mixes_and_keeps_pairs_together():
    outs, pool = _run_pool(0)
    # while filling, batches pass through (and are copied in), as in Real-ESRGAN
    assert _equal(outs[0], _tagged(0)) and _equal(outs[1], _tagged(4))
    emitted = []
    for t, out in enumerate(outs):
        ids = out["kernel_sigma"]
        assert torch.equal(out["lr"][:, 0, 0, 0], ids) and torch.equal(out["hr"][:, 2, 3, 1], ids)
        assert torch.equal(out["has_hr"], ids % 2 == 0)
        if t >= 2:
            assert ids.min() < 4 * t  # a full pool returns earlier samples
            emitted += ids.long().tolist()
    # once full, every sample fed in is either emitted exactly once or still in the pool
    assert sorted(emitted + pool.pool["kernel_sigma"].long().tolist()) == list(range(40))
    assert any(len({i // 4 for i in out["kernel_sigma"].long().tolist()}) > 1 for out in outs)


def test_a_pool_saved_before_hr_plain_existed_takes_batches_that_carry_it():
    pool = PairPool(8, torch.Generator().manual_seed(0))
    for t in range(2):
        pool(_tagged(4 * t))
    restored = PairPool(8, torch.Generator().manual_seed(0))
    restored.load_state_dict(pool.state_dict())
    batch = _tagged(8)
    batch["hr_plain"] = batch["hr"] + 1
    out = restored(batch)
    assert set(out) == set(batch)
    assert torch.equal(out["hr_plain"], out["hr"])  # the old samples' HR stands in


def test_pair_pool_is_deterministic_and_checks_sizes():
    (a, _), (b, _), (c, _) = _run_pool(5), _run_pool(5), _run_pool(6)
    assert all(_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(_equal(x, y) for x, y in zip(a, c, strict=True))
    with pytest.raises(BlindSRError, match="multiple of the batch"):
        PairPool(6, torch.Generator())(_tagged(0))
    assert PairPool(0, torch.Generator())(_tagged(0)) is not None
    pool = PairPool(8, torch.Generator())
    pool(_tagged(0))
    with pytest.raises(BlindSRError, match="changed"):
        pool({k: v for k, v in _tagged(4).items() if k != "kernel_sigma"})


def test_corner_crops_are_a_fixed_sample_of_big_enough_rgb_images(shared, monkeypatch):
    from blindsr.data import corner_crops

    monkeypatch.setenv("BLINDSR_DATA", str(shared / "datasets"))
    a = corner_crops(("Set5", "T91"), 7, 96)
    assert a.shape == (7, 3, 96, 96) and torch.equal(a, corner_crops(("Set5", "T91"), 7, 96))
    first = read_image(sorted((shared / "datasets" / "Set5" / "x4" / "HR").iterdir())[0]).color
    assert torch.equal(a[:1], first[..., :96, :96])
    with pytest.raises(BlindSRError, match="only 5 images of Set5 are 96 pixels or larger"):
        corner_crops(("Set5",), 6, 96)
