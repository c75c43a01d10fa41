"""Weight assets: the real fetch from the package index, checksums, cache, restricted unpickling."""

import os
import pickle
import shutil
import subprocess

import numpy as np
import pytest
import torch
from safetensors.torch import load, load_file

from blindsr import assets
from blindsr.assets import (
    ASSETS,
    IndexUnreachableError,
    asset_path,
    fetch,
    load_weights_file,
    restricted_unpickle,
    safetensors_bytes,
    sha256_file,
    verify,
)
from blindsr.cli import main
from blindsr.errors import BlindSRError


@pytest.fixture(scope="module")
def small_cache(tmp_path_factory):
    """The two small assets (DISTS wheel, basicsr sdist) really fetched into a fresh folder."""
    folder = tmp_path_factory.mktemp("assets")
    try:
        fetch(["dists", "niqe"], folder)
    except IndexUnreachableError as err:
        pytest.skip(f"package index unreachable, real fetch not tested: {err}")
    return folder


def test_real_fetch_stores_verified_assets(small_cache):
    for name in ("dists", "niqe"):
        path = small_cache / ASSETS[name].filename
        assert sha256_file(path) == ASSETS[name].sha256
    ab = load_file(str(small_cache / "dists.safetensors"))
    assert ab["alpha"].shape == ab["beta"].shape == (1, 1475, 1, 1)
    assert (ab["alpha"] >= 0).all() and (ab["beta"] >= 0).all()
    assert abs(float(ab["alpha"].sum() + ab["beta"].sum()) - 1) < 1e-3
    niqe = load_file(str(small_cache / "niqe.safetensors"))
    assert niqe["mu"].shape == (36,) and niqe["cov"].shape == (36, 36)
    assert torch.allclose(niqe["cov"], niqe["cov"].T)
    assert not list(small_cache.glob(".*"))  # no temporary files left behind


def test_present_assets_are_not_downloaded_again(small_cache):
    messages = []
    paths = fetch(["dists", "niqe"], small_cache, log=messages.append)
    assert messages == []
    assert paths["niqe"] == small_cache / "niqe.safetensors"


def test_altered_file_is_refused(small_cache, tmp_path, monkeypatch):
    shutil.copy(small_cache / "dists.safetensors", tmp_path / "dists.safetensors")
    data = bytearray((tmp_path / "dists.safetensors").read_bytes())
    data[-1] ^= 1
    (tmp_path / "dists.safetensors").write_bytes(bytes(data))
    with pytest.raises(BlindSRError, match="SHA-256.*blindsr assets fetch"):
        verify("dists", tmp_path)
    monkeypatch.setenv("BLINDSR_CACHE", str(tmp_path))
    with pytest.raises(BlindSRError, match="corrupt or altered"):
        asset_path("dists")  # refused, never silently replaced or used


def test_mismatching_download_is_not_stored(tmp_path, monkeypatch):
    fake = assets.Asset("dists", "dists.safetensors", "0" * 64, assets.Source("x==1", "wheel"),
                        "m", lambda b: {"alpha": np.zeros(3, np.float32)}, "test")
    with pytest.raises(BlindSRError, match="refusing to store"):
        assets._store(fake, b"", tmp_path)
    assert not (tmp_path / "dists.safetensors").exists()


def test_offline_without_cache_says_what_to_run(tmp_path, monkeypatch, rand_image):
    monkeypatch.setenv("BLINDSR_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("BLINDSR_OFFLINE", "1")
    with pytest.raises(BlindSRError, match="blindsr assets fetch"):
        asset_path("niqe")
    from blindsr.metrics.niqe import _pristine, niqe

    _pristine.cache_clear()
    with pytest.raises(BlindSRError, match="blindsr assets fetch"):
        niqe(rand_image(1, 3, 96, 96))
    _pristine.cache_clear()


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("BLINDSR_CACHE", raising=False)
    assert assets.cache_dir().parts[-2:] == (".cache", "blindsr")
    monkeypatch.setenv("BLINDSR_CACHE", str(tmp_path))
    assert assets.cache_dir() == tmp_path
    assert assets.cache_dir(tmp_path / "d") == tmp_path / "d"


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize("payload", [_Evil(), {"a": _Evil()}, [np.zeros(2)],
                                     {"a": np.array([1, "x"], dtype=object)}])
def test_restricted_unpickle_refuses_anything_but_arrays(payload):
    with pytest.raises(BlindSRError, match="not a plain pickle"):
        restricted_unpickle(pickle.dumps(payload))


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_restricted_unpickle_reads_nested_arrays(protocol):
    tree = {"Net_0": {"Conv_0": {"kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4, 1),
                                 "bias": np.ones(1, np.float64)}}}
    out = restricted_unpickle(pickle.dumps(tree, protocol=protocol))
    kernel = tree["Net_0"]["Conv_0"]["kernel"]
    np.testing.assert_array_equal(out["Net_0"]["Conv_0"]["kernel"], kernel)
    assert out["Net_0"]["Conv_0"]["bias"].dtype == np.float64


def test_safetensors_bytes_are_reproducible_and_loadable():
    arrays = {"b": np.arange(6, dtype=np.float64).reshape(2, 3), "a": np.ones(3, np.float32)}
    one = safetensors_bytes(arrays, {"k": "v"})
    assert one == safetensors_bytes(dict(reversed(arrays.items())), {"k": "v"})
    back = load(one)
    np.testing.assert_array_equal(back["b"].numpy(), arrays["b"])
    assert back["a"].dtype == torch.float32


def test_load_weights_file(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {"module.features.0.weight": torch.ones(2)}}, path)
    assert list(load_weights_file(path)) == ["features.0.weight"]
    torch.save({"a": [1, 2]}, path)
    with pytest.raises(BlindSRError, match="flat dict of tensors"):
        load_weights_file(path)
    with pytest.raises(BlindSRError, match="not found"):
        load_weights_file(tmp_path / "missing.pth")
    with pytest.raises(BlindSRError, match="unknown asset"):
        verify("resnet")


def test_cli_fetch_and_list(tmp_path, capsys):
    try:
        assert main(["assets", "fetch", "dists", "--dir", str(tmp_path)]) == 0
    except IndexUnreachableError as err:
        pytest.skip(f"package index unreachable, real fetch not tested: {err}")
    out = capsys.readouterr()
    assert "dists" in out.out and "ok" in out.out and "downloading DISTS-pytorch" in out.err
    assert main(["assets", "list", "--dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert "dists    ok" in listing and "niqe     missing" in listing


@pytest.mark.parametrize("stderr, error", [
    ("WARNING: Retrying ... 'NewConnectionError(... [Errno 111] Connection refused')'\n"
     "ERROR: Could not find a version that satisfies the requirement x==1 (from versions: none)",
     IndexUnreachableError),
    ("ERROR: No matching distribution found for x==1", assets.AssetDownloadError),
])
def test_pip_failures_are_classified(tmp_path, monkeypatch, stderr, error):
    done = subprocess.CompletedProcess([], 1, stdout="Looking in indexes: ...", stderr=stderr)
    monkeypatch.setattr(assets.subprocess, "run", lambda *a, **k: done)
    with pytest.raises(error, match="x==1") as info:
        assets._pip_download(assets.Source("x==1", "wheel"), tmp_path)
    assert ("unreachable" in str(info.value)) == (error is IndexUnreachableError)


def test_a_cache_that_is_a_file_is_refused_before_any_download(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(assets, "_pip_download", lambda *a: pytest.fail("downloaded"))
    (tmp_path / "cache").write_text("x")
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
    assert main(["assets", "fetch", "niqe"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"blindsr: error: asset cache folder {tmp_path / 'cache'} exists and is "
                   "not a folder")
