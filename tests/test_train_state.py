import random

import numpy as np
import pytest
import torch
from torch import nn

from blindsr.errors import BlindSRError
from blindsr.train_state import (
    STATE_KEYS,
    decode_tree,
    encode_tree,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_partial,
    rng_state,
    save_checkpoint,
    set_rng_state,
    step_dir,
    unfinished_run,
)


def nets_and_state():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.rand(2, 3, 8, 8)).mean().backward()
    opt.step()
    weights = {"generator": net.state_dict(), "generator_ema": net.state_dict()}
    state = {"optimizers": {"generator": opt.state_dict()}, "rng": rng_state(),
             "strategy": {"buffer": torch.arange(3), "count": 2, "name": "x", "none": None}}
    return net, opt, weights, state


def test_round_trip_is_exact_and_tensors_only(tmp_path):
    net, opt, weights, state = nets_and_state()
    path = save_checkpoint(tmp_path, 7, weights, state, keep=3)
    assert path == step_dir(tmp_path, 7) == tmp_path / "checkpoints" / "step_0000007"
    assert sorted(p.name for p in path.iterdir()) == ["state.safetensors", "weights.safetensors"]
    loaded, st = load_checkpoint(path)
    assert set(loaded) == {"generator", "generator_ema"}
    for k, v in net.state_dict().items():
        assert torch.equal(loaded["generator"][k], v)
    assert st["step"] == 7 and st["strategy"]["count"] == 2 and st["strategy"]["none"] is None
    assert torch.equal(st["strategy"]["buffer"], torch.arange(3))
    fresh = torch.optim.Adam(net.parameters(), lr=1e-3)
    fresh.load_state_dict(st["optimizers"]["generator"])
    a, b = fresh.state_dict()["state"][0], opt.state_dict()["state"][0]
    assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["step"], b["step"])


def test_rng_states_restore_every_generator():
    state = rng_state()
    first = (torch.rand(3), random.random(), np.random.rand(2))
    set_rng_state(state)
    again = (torch.rand(3), random.random(), np.random.rand(2))
    assert torch.equal(first[0], again[0]) and first[1] == again[1]
    assert np.array_equal(first[2], again[2])


def test_interrupted_saves_are_ignored_and_cleaned(tmp_path):
    _, _, weights, state = nets_and_state()
    save_checkpoint(tmp_path, 2, weights, state, keep=3)
    # a save killed half-way leaves a .tmp folder; a prune killed half-way leaves a .del one
    (tmp_path / "checkpoints" / "step_0000004.tmp").mkdir()
    (tmp_path / "checkpoints" / "step_0000004.tmp" / "weights.safetensors").write_bytes(b"x")
    (tmp_path / "checkpoints" / "step_0000001.del").mkdir()
    # a folder missing its state file is not complete
    (tmp_path / "checkpoints" / "step_0000003").mkdir()
    assert latest_checkpoint(tmp_path) == step_dir(tmp_path, 2)
    remove_partial(tmp_path)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_0000002", "step_0000003"]


def test_prune_keeps_the_newest(tmp_path):
    _, _, weights, state = nets_and_state()
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, weights, state, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4]
    assert not list((tmp_path / "checkpoints").glob("*.del"))


def test_the_state_tree_keeps_tuples_int_keys_and_special_floats():
    tree = {"betas": (0.9, 0.99), "state": {0: {"step": torch.tensor(3.0)}},
            "$odd": [None, True], "inf": float("inf"),
            "ints": torch.arange(4, dtype=torch.int64), "empty": torch.zeros(0)}
    tensors, skeleton = encode_tree(tree)
    back = decode_tree(skeleton, tensors)
    assert back["betas"] == (0.9, 0.99) and isinstance(back["betas"], tuple)
    assert list(back["state"]) == [0] and torch.equal(back["state"][0]["step"], torch.tensor(3.0))
    assert back["$odd"] == [None, True] and back["inf"] == float("inf")
    assert back["ints"].dtype == torch.int64 and back["empty"].shape == (0,)
    with pytest.raises(BlindSRError, match="holds a Linear"):
        encode_tree({"net": nn.Linear(1, 1)})


@pytest.mark.parametrize("damage", ["state", "weights", "empty_header"])
def test_damaged_checkpoints_give_a_clear_error(tmp_path, damage):
    _, _, weights, state = nets_and_state()
    path = save_checkpoint(tmp_path, 1, weights, state, keep=1)
    if damage == "state":
        (path / "state.safetensors").write_bytes(b"garbage")
    elif damage == "weights":
        (path / "weights.safetensors").write_bytes(b"{}\n")
    else:
        (path / "state.safetensors").write_bytes((8).to_bytes(8, "little") + b"{}      ")
    with pytest.raises(BlindSRError, match=r"step_0000001 is unreadable \([^()]+\); delete it"):
        load_checkpoint(path)


def test_a_state_without_what_a_resume_reads_is_refused(tmp_path):
    from safetensors.torch import save_file

    _, _, weights, state = nets_and_state()
    path = save_checkpoint(tmp_path, 1, weights, state, keep=1)
    tensors, skeleton = encode_tree({"step": 1})
    save_file(tensors, path / "state.safetensors", metadata={
        "format": "blindsr-train-state-tree", "version": "1", "tree": skeleton})
    assert load_checkpoint(path)[1] == {"step": 1}
    with pytest.raises(BlindSRError, match="incomplete \\(no optimizers, schedulers"):
        load_checkpoint(path, need=STATE_KEYS)


def legacy_checkpoint(tmp_path, state):
    """A checkpoint as written before state.safetensors: torch.save into state.pt."""
    _, _, weights, full = nets_and_state()
    path = save_checkpoint(tmp_path, 1, weights, full, keep=1)
    (path / "state.safetensors").unlink()
    torch.save(state, path / "state.pt")
    return path


def test_legacy_torch_save_states_still_load(tmp_path):
    _, _, _, state = nets_and_state()
    keys = ("schedulers", "scaler", "data", "pool", "wall_time", "bad_steps", "best_psnr")
    path = legacy_checkpoint(tmp_path, {**state, **dict.fromkeys(keys), "step": 1,
                                        "format_version": 1})
    assert latest_checkpoint(tmp_path) == path
    _, st = load_checkpoint(path)
    assert st["step"] == 1 and torch.equal(st["strategy"]["buffer"], torch.arange(3))


def test_pickled_objects_are_refused(tmp_path):
    path = legacy_checkpoint(tmp_path, {"format_version": 1, "evil": nn.Linear(1, 1)})
    with pytest.raises(BlindSRError, match="unreadable"):
        load_checkpoint(path)


def test_a_run_is_unfinished_until_its_checkpoints_reach_its_iterations(tmp_path):
    from blindsr import archs
    from blindsr.checkpoint import save_model

    run = tmp_path / "run"
    assert unfinished_run(run).startswith("no ")
    run.mkdir()
    save_model(archs.build("srresnet", num_feat=4, num_block=1, scale=4),
               run / "model.safetensors")
    assert unfinished_run(run) is None  # weights alone: final
    (run / "config.yaml").write_text("train: {iterations: 8}\n")
    assert unfinished_run(run) == "unfinished: step 0 of 8"
    for step in (4, 8):
        ckpt = run / "checkpoints" / f"step_{step:07d}"
        ckpt.mkdir(parents=True)
        (ckpt / "weights.safetensors").write_bytes(b"")
        (ckpt / "state.pt").write_bytes(b"")
        if step == 4:
            assert unfinished_run(run) == "unfinished: step 4 of 8"
    assert unfinished_run(run) is None
