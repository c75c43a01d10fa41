"""Checkpoints: safetensors round trip with metadata, foreign files, safe .pth reading, errors."""

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from blindsr import archs, checkpoint, zoo
from blindsr.checkpoint import load_model, read_checkpoint, save_model, weights_digest
from blindsr.errors import BlindSRError


def _small(name: str = "srresnet", seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    defaults = {
        "srresnet": {"num_feat": 8, "num_block": 2},
        "rrdbnet": {"num_feat": 8, "num_block": 2, "num_grow_ch": 4},
    }[name]
    return archs.build(name, **{**defaults, **kw}).eval()


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad():
        return torch.equal(a(x), b(x))


class _Payload:
    """Unpickling this would create a file (the attack ``weights_only`` must refuse)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_round_trip(tmp_path, rand_image):
    model = _small("srresnet", scale=3)
    path = save_model(model, tmp_path / "m.safetensors", summary={"iters": 10, "dir": tmp_path})
    assert path == tmp_path / "m.safetensors"
    sd, meta = read_checkpoint(path)
    assert meta["format"] == "blindsr" and meta["arch"] == "srresnet" and meta["scale"] == "3"
    assert json.loads(meta["kwargs"]) == model.arch_kwargs
    assert json.loads(meta["summary"]) == {"iters": 10, "dir": str(tmp_path)}
    assert all(isinstance(v, str) for v in meta.values())
    assert sd.keys() == model.state_dict().keys()

    loaded = load_model(path)
    assert not loaded.training
    assert loaded.arch_name == "srresnet" and loaded.arch_kwargs == model.arch_kwargs
    assert _same_outputs(model, loaded, rand_image(1, 3, 9, 7))


def test_weights_digest_follows_the_weights_not_the_file(tmp_path):
    model = _small("srresnet")
    digest = weights_digest(model)
    assert len(digest) == 16
    copy = load_model(save_model(model, tmp_path / "a" / "m.safetensors"))
    assert weights_digest(copy) == digest  # another path, another load: the same weights
    with torch.no_grad():
        copy.conv_first.weight[0, 0, 0, 0] += 1e-6
    assert weights_digest(copy) != digest
    assert weights_digest(_small("srresnet", num_feat=12)) != digest  # other shapes


def test_metadata_kwargs_beat_detection(tmp_path, rand_image):
    # 12 input channels at x4 reads as 3 channels at x2 from shapes; the metadata keeps it right.
    model = _small("rrdbnet", num_in_ch=12, scale=4)
    loaded = load_model(save_model(model, tmp_path / "m.safetensors"))
    assert loaded.scale == 4 and loaded.arch_kwargs == model.arch_kwargs
    assert _same_outputs(model, loaded, rand_image(1, 12, 5, 5))


def test_atomic_write_leaves_only_the_file(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "m.safetensors"
    save_model(_small(seed=1), target)
    save_model(_small(seed=2), target)  # overwrite
    assert os.listdir(target.parent) == ["m.safetensors"]
    before = target.read_bytes()

    def broken(fd):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.os, "fsync", broken)  # fails with the temp file half done
    with pytest.raises(BlindSRError, match="cannot write .*m.safetensors: disk full"):
        save_model(_small(seed=3), target)
    assert os.listdir(target.parent) == ["m.safetensors"]
    assert target.read_bytes() == before


def test_saved_file_has_default_permissions(tmp_path):
    path = save_model(_small(), tmp_path / "m.safetensors")
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    assert path.stat().st_mode == plain.stat().st_mode


def test_save_unwraps_data_parallel(tmp_path):
    model = _small()
    path = save_model(torch.nn.DataParallel(model), tmp_path / "m.safetensors")
    assert read_checkpoint(path)[0].keys() == model.state_dict().keys()  # no "module." prefix


def test_save_refuses_bad_input(tmp_path):
    with pytest.raises(BlindSRError, match=r"\.safetensors"):
        save_model(_small(), tmp_path / "m.pth")
    with pytest.raises(BlindSRError, match="not a registered"):
        save_model(torch.nn.Conv2d(3, 3, 3), tmp_path / "c.safetensors")
    (tmp_path / "dir.safetensors").mkdir()
    (tmp_path / "afile").write_text("x")
    for target, reason in [("dir.safetensors", "it is a folder"),
                           ("afile/m.safetensors", "a part of its folder is a file")]:
        with pytest.raises(BlindSRError, match=f"cannot write .*{target}: {reason}"):
            save_model(_small(), tmp_path / target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "dir.safetensors"]


@pytest.mark.parametrize("metadata", [None, {"format": "pt"}])
def test_foreign_safetensors_detected(tmp_path, rand_image, metadata):
    model = _small("rrdbnet", scale=2)
    path = tmp_path / "foreign.safetensors"
    save_file(model.state_dict(), str(path), metadata=metadata)
    loaded = load_model(path)
    assert loaded.arch_name == "rrdbnet" and loaded.arch_kwargs == model.arch_kwargs
    assert _same_outputs(model, loaded, rand_image(1, 3, 6, 6))


@pytest.mark.parametrize("zipfile", [True, False])  # torch >= 1.6 format and the legacy one
def test_pth_prefers_params_ema(tmp_path, rand_image, zipfile):
    plain, ema = _small(seed=1), _small(seed=2)
    path = tmp_path / "net_g.pth"
    wrapped = {"params": plain.state_dict(), "params_ema": ema.state_dict()}
    torch.save(wrapped, path, _use_new_zipfile_serialization=zipfile)
    loaded = load_model(path)
    x = rand_image(1, 3, 6, 6)
    assert _same_outputs(ema, loaded, x) and not _same_outputs(plain, loaded, x)
    assert read_checkpoint(path)[1] == {}


def test_pth_plain_and_module_prefix(tmp_path, rand_image):
    model = _small("rrdbnet", scale=1)
    path = tmp_path / "ddp.pt"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    sd, _ = read_checkpoint(path)
    assert sd.keys() == model.state_dict().keys()
    assert _same_outputs(model, load_model(path), rand_image(1, 3, 8, 8))


def test_pickled_object_is_refused_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Payload(proof)))  # the payload is live when unpickled freely...
    assert proof.exists()

    path = tmp_path / "evil.pth"
    torch.save({"params": {"conv_first.weight": torch.zeros(1)}, "x": _Payload(marker)}, path)
    with pytest.raises(BlindSRError, match="evil.pth: refused") as info:
        load_model(path)
    assert not marker.exists()  # ...but never executed here
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "content",
    [[torch.zeros(2)], {"params": {"w": 1.5}}, {}, {"a": torch.zeros(1), "b": "text"}],
)
def test_pth_without_state_dict_refused(tmp_path, content):
    path = tmp_path / "odd.pth"
    torch.save(content, path)
    with pytest.raises(BlindSRError, match="odd.pth"):
        read_checkpoint(path)


def test_corrupt_files(tmp_path):
    good = save_model(_small(), tmp_path / "good.safetensors").read_bytes()
    cases = {
        "truncated.safetensors": good[: len(good) // 2],
        "header_only.safetensors": good[:20],
        "empty.safetensors": b"",
        "garbage.safetensors": os.urandom(256),
        "truncated.pth": b"PK\x03\x04" + os.urandom(100),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(BlindSRError, match=name) as info:
            load_model(path)
        assert "\n" not in str(info.value)


def test_missing_file_and_unknown_arch(tmp_path):
    with pytest.raises(BlindSRError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    with pytest.raises(BlindSRError, match="is a folder, not a file"):
        load_model(tmp_path)
    path = tmp_path / "alien.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(BlindSRError, match="no known architecture"):
        load_model(path)
    sd = _small().state_dict()
    meta = {"format": "blindsr", "arch": "hat", "kwargs": "{}", "scale": "4", "summary": "{}"}
    save_file(sd, str(path), metadata=meta)
    with pytest.raises(BlindSRError, match="unknown architecture 'hat'"):
        load_model(path)
    save_file(sd, str(path), metadata={**meta, "arch": "srresnet", "kwargs": "{oops"})
    with pytest.raises(BlindSRError, match="damaged"):
        load_model(path)


def test_a_shipped_name_loads_when_no_such_file_exists(tmp_path, monkeypatch):
    import blindsr
    from blindsr.zoo import shipped_models

    model = blindsr.load_model("andnet-x4")
    shipped = load_model(shipped_models()["andnet-x4"].weights)
    assert not model.training and all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                          shipped.state_dict().values(), strict=True))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "andnet-x4").mkdir()  # a folder of that name does not hide the shipped model
    assert load_model("andnet-x4").arch_kwargs == shipped.arch_kwargs
    (tmp_path / "andnet-x4").rmdir()  # a file of that name wins over it, here and in zoo.load
    save_model(archs.build("srresnet", num_feat=4, num_block=1), tmp_path / "x.safetensors")
    (tmp_path / "x.safetensors").rename(tmp_path / "andnet-x4")
    assert load_model("andnet-x4").arch_kwargs["num_feat"] == 4
    assert zoo.load("andnet-x4").arch_kwargs["num_feat"] == 4
    with pytest.raises(BlindSRError, match="not found"):
        load_model("no-such-model")
    with pytest.raises(BlindSRError, match=r"bicubic has no checkpoint: use blindsr.zoo.load"):
        load_model("bicubic")


def test_bad_device(tmp_path):
    path = save_model(_small(), tmp_path / "m.safetensors")
    with pytest.raises(BlindSRError, match="device"):
        load_model(path, device="nonsense")


def test_onnx_files_and_plus_names_are_pointed_elsewhere(tmp_path):
    onnx_file = tmp_path / "net.onnx"
    onnx_file.write_bytes(b"\x08\x07")
    with pytest.raises(BlindSRError, match="an ONNX file, not a checkpoint"):
        load_model(onnx_file)
    with pytest.raises(BlindSRError, match=r"self-ensemble \('\+'\) is for upscale and eval"):
        load_model(tmp_path / "net.safetensors+")
