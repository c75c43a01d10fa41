"""Shared test fixtures: locating ../shared and making small deterministic images."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from blindsr import io

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(name: str, folder: str = "benchmarks"):
    """The module of ``<folder>/<name>.py`` (default ``benchmarks``), loaded from its file (the
    scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_keeps_the_lr_it_made(strategy, batch: dict) -> None:
    """After one step of a strategy that degrades itself, ``sample_pair`` holds the LR it made
    (not the loader's zero placeholder) and the batch's HR, for the loop's image samples."""
    list(strategy.training_step(batch, 0))
    lr, hr = strategy.sample_pair
    assert lr.shape == batch["lr"].shape and float(lr.abs().sum()) > 0  # not the loader's zeros
    assert torch.equal(hr, batch["hr"])


def shared_path(*parts: str) -> Path:
    """Path under the shared folder (``datasets/``, ``calibration/``): ``$BLINDSR_SHARED``, else
    the folder holding ``$BLINDSR_DATA`` when that is a ``datasets`` folder, else ``../shared``
    beside the checkout."""
    data = Path(os.environ.get("BLINDSR_DATA", "datasets"))
    if "BLINDSR_SHARED" in os.environ:
        base = Path(os.environ["BLINDSR_SHARED"])
    elif data.name == "datasets" and "BLINDSR_DATA" in os.environ:
        base = data.parent
    else:
        base = ROOT.parent / "shared"
    return base.joinpath(*parts)


@pytest.fixture(autouse=True)
def _threads_unchanged():
    """Fail a test that leaves torch's thread count changed: later tests that compare
    results bit for bit (e.g. a resumed run against a fresh one) would differ."""
    before = torch.get_num_threads()
    yield
    after = torch.get_num_threads()
    torch.set_num_threads(before)
    assert after == before, f"the test changed torch's thread count from {before} to {after}"


@pytest.fixture
def shared():
    """The shared folder; tests that need it skip (saying why) when it is absent."""
    base = shared_path()
    if not (base / "datasets").is_dir():
        pytest.skip(f"shared datasets not found at {base / 'datasets'} (set BLINDSR_DATA to "
                    "the shared datasets folder, or BLINDSR_SHARED to the folder holding it)")
    return base


GENERATED_DATA = ["runs/lr_nearest_bsd200"]  # folders configs read that a command makes first


@pytest.fixture
def generated_data(tmp_path, monkeypatch):
    """Run from a folder holding stand-ins for GENERATED_DATA (as after the commands in the
    configs' comments), so that every shipped config resolves its data."""
    for folder in GENERATED_DATA:
        smooth_images(tmp_path / folder, n=1)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def rand_image():
    """A factory of reproducible random NCHW images in [0, 1]."""

    def make(n: int = 1, c: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.rand(n, c, h, w, generator=g)

    return make


def smooth_images(folder: Path, n: int = 2, size: int | tuple[int, int] = (48, 40)) -> Path:
    """Write ``n`` smooth random 8-bit PNGs of ``size`` (width, height; an int for a square)
    into a new ``folder``: bilinear blow-ups of quarter-size noise, cheap data for loop tests."""
    width, height = (size, size) if isinstance(size, int) else size
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        small = torch.rand(1, 3, height // 4, width // 4, generator=g)
        img = torch.nn.functional.interpolate(small, size=(height, width), mode="bilinear")
        io.write_image(folder / f"img{i}.png", io.ImageData(img, None, 8))
    return folder


def make_code_matter(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-draw an AMNet's renderer weights (not its predictor) so that its output depends on the
    kernel code, as after training; a fresh one maps every code to nearly the same image."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and not name.startswith("predictor"):
                p.normal_(0, 0.5 if ".am" in name else (2 / p[0].numel()) ** 0.5, generator=g)
    return model


@contextmanager
def run_held_by(run_dir: Path, pid: int) -> Iterator[None]:
    """Hold a run folder's lock as another training (process ``pid``) would, for the block."""
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".lock", "w") as other:
        other.write(f"{pid}\n")
        other.flush()
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
