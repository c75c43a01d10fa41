import json
import os
import socket
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import run_held_by
from PIL import Image
from safetensors.torch import load_file, save_file

from blindsr import distributed
from blindsr.checkpoint import read_checkpoint
from blindsr.config import load_config
from blindsr.train import build_generator

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(tmp_path: Path):
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((36, 40, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return [str(TINY), [f"output_dir={json.dumps(str(tmp_path / 'runs'))}",
                        f"data.train=[{{path: {json.dumps(str(folder))}}}]",
                        "train.iterations=3", "degradation.kind=preset", "train.ema=0.5"]]


def _check_grad_averaging(rank: int) -> None:
    a = torch.nn.Parameter(torch.zeros(2, 3))
    b = torch.nn.Parameter(torch.zeros(4))
    never = torch.nn.Parameter(torch.zeros(1))
    a.grad = torch.full((2, 3), float(rank + 1))
    if rank == 0:
        b.grad = torch.full((4,), 2.0)  # rank 1 has no gradient for b: it counts as zero
    distributed.all_reduce_grads([a, b, never, a])
    assert torch.equal(a.grad, torch.full((2, 3), 1.5))
    assert torch.equal(b.grad, torch.full((4,), 1.0))
    assert never.grad is None
    assert distributed.any_flag(rank == 1, torch.device("cpu"))
    assert not distributed.all_equal(rank, torch.device("cpu"))
    cpu = torch.device("cpu")
    assert distributed.mean_across({"b": 2.0, "a": float(rank)}, cpu) == {"b": 2.0, "a": 0.5}
    mine = {f"only_{rank}": 1.0}  # different keys: each keeps its own
    assert distributed.mean_across(mine, cpu) == mine


def _worker(rank: int, world: int, port: int, cfg_args: list, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from blindsr.train import train

    info = distributed.init("cpu")
    assert (info.rank, info.world, info.is_main) == (rank, world, rank == 0)
    _check_grad_averaging(rank)
    result = train(load_config(*cfg_args), progress=False)  # joins the same group, then leaves
    assert not dist.is_initialized()
    tensors = {f"g.{k}": v.contiguous() for k, v in result.generator.state_dict().items()}
    tensors.update({f"e.{k}": v.contiguous() for k, v in result.ema.state_dict().items()})
    save_file(tensors, str(Path(out) / f"rank{rank}.safetensors"))


def test_two_cpu_processes_keep_identical_replicas(tmp_path):
    cfg_args = config(tmp_path)
    mp.start_processes(_worker, args=(2, free_port(), cfg_args, str(tmp_path)), nprocs=2,
                       start_method="spawn")
    r0 = load_file(str(tmp_path / "rank0.safetensors"))
    r1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    init = build_generator(load_config(*cfg_args)).state_dict()
    assert any(not torch.equal(r0[f"g.{k}"], v) for k, v in init.items())
    # only rank 0 wrote the run; its summary documents the effective batch
    run = tmp_path / "runs" / "tiny"
    summary = json.loads(read_checkpoint(run / "model.safetensors")[1]["summary"])
    assert summary["processes"] == 2 and summary["effective_batch"] == 2 * summary["batch"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


def test_single_process_helpers_are_no_ops(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = distributed.init("cpu")
    assert (info.rank, info.world, info.enabled, info.is_main) == (0, 1, False, True)
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.ones(2)
    distributed.all_reduce_grads([p])
    assert torch.equal(p.grad, torch.ones(2)) and not distributed.active()


def _refused_worker(rank: int, world: int, port: int, cfg_args: list, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from blindsr.errors import BlindSRError
    from blindsr.train import train

    try:
        train(load_config(*cfg_args), progress=False)
        message = "trained"
    except BlindSRError as e:
        message = str(e)
    (Path(out) / f"rank{rank}.txt").write_text(message)


def test_a_locked_run_stops_every_process_with_one_line(tmp_path):
    cfg_args = config(tmp_path)
    with run_held_by(tmp_path / "runs" / "tiny", 777):  # another training holds the run
        mp.start_processes(_refused_worker, args=(2, free_port(), cfg_args, str(tmp_path)),
                           nprocs=2, start_method="spawn")
    assert "in use by another training (process 777)" in (tmp_path / "rank0.txt").read_text()
    assert "refused by the main process" in (tmp_path / "rank1.txt").read_text()
