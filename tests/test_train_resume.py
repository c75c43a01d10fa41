"""blindsr.train_resume: checkpoints, resuming, and finished runs left as they are."""

import pytest
import torch
from conftest import run_held_by

from blindsr.checkpoint import load_model
from blindsr.errors import BlindSRError
from blindsr.train import train
from blindsr.train_run import EMA_KEY
from blindsr.train_state import GENERATOR_EMA
from tests.test_train import make_images, tiny


@pytest.fixture
def data_dir(tmp_path):
    return make_images(tmp_path / "data")


def test_a_finished_run_is_left_as_it_is(tmp_path, data_dir, capsys):
    cfg = tiny(tmp_path, data_dir)
    train(cfg, progress=False)
    run = tmp_path / "runs" / "tiny"
    config, model = (run / "config.yaml").read_text(), (run / "model.safetensors").read_bytes()
    capsys.readouterr()
    other = tiny(tmp_path, data_dir, "train.iterations=3", "optim.generator.lr=1e-3",
                 "train.batch=3")
    assert train(other, progress=False).step == 4
    err = capsys.readouterr().err
    assert "already trained for 4 iterations" in err
    assert "not applied: optim.generator.lr, train.batch, train.iterations" in err
    assert "resuming" not in err and "data order" not in err  # nothing is trained
    assert (run / "config.yaml").read_text() == config
    assert (run / "model.safetensors").read_bytes() == model
    (run / "model.safetensors").unlink()  # as if killed between the last checkpoint and it
    train(cfg, progress=False)
    assert load_model(run / "model.safetensors") is not None



def test_a_run_folder_of_another_model_says_what_differs(tmp_path, data_dir):
    train(tiny(tmp_path, data_dir), progress=False)
    other = tiny(tmp_path, data_dir, "model.kwargs.num_feat=8", "train.iterations=6")
    with pytest.raises(BlindSRError) as err:
        train(other, progress=False)
    message = str(err.value)
    assert "wrong shape: conv_first.weight" in message and "set another name=" in message
    assert "\n" not in message
    finished = tiny(tmp_path, data_dir, "model.kwargs.num_feat=8")
    with pytest.raises(BlindSRError, match="tiny: already trained for 4 iterations with another "
                                           "generator network than the configured one"):
        train(finished, progress=False)



def test_a_training_checkpoint_loads_as_its_generator(tmp_path, data_dir):
    assert EMA_KEY == GENERATOR_EMA  # the prefix load_model picks is the one the loop writes
    result = train(tiny(tmp_path, data_dir), progress=False)
    weights_file = tmp_path / "runs/tiny/checkpoints/step_0000004/weights.safetensors"
    model = load_model(weights_file)
    for k, v in result.ema.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    no_ema = train(tiny(tmp_path, data_dir, "name=raw", "train.ema=0"), progress=False)
    raw = load_model(tmp_path / "runs/raw/checkpoints/step_0000004/weights.safetensors")
    for k, v in no_ema.generator.state_dict().items():
        assert torch.equal(raw.state_dict()[k], v), k


def test_a_run_folder_in_use_is_refused_and_released_after_the_run(tmp_path, data_dir):
    import fcntl

    run = tmp_path / "runs" / "tiny"
    with run_held_by(run, 4242):  # another process training this run
        with pytest.raises(BlindSRError, match="tiny is in use by another training "
                                               r"\(process 4242\); wait for it"):
            train(tiny(tmp_path, data_dir), progress=False)
    assert not (run / "checkpoints").exists()  # nothing of the other run was touched
    assert train(tiny(tmp_path, data_dir), progress=False).step == 4
    with open(run / ".lock") as f:  # the finished run holds the lock no more
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_file_where_the_checkpoints_go_is_refused_before_training(tmp_path, data_dir):
    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    (run / "checkpoints").write_text("")
    with pytest.raises(BlindSRError, match="checkpoint folder .*checkpoints exists and is not "
                                           "a folder"):
        train(tiny(tmp_path, data_dir), progress=False)
    assert not (run / "metrics.jsonl").exists()


def test_a_failed_validation_keeps_the_checkpoint_due_at_its_step(tmp_path, data_dir,
                                                                   monkeypatch, shared):
    from blindsr import train as train_module

    def broken(run):
        raise BlindSRError("validation images vanished")

    monkeypatch.setattr(train_module, "validate", broken)
    cfg = tiny(tmp_path, data_dir, "val.every=2", "train.checkpoint_every=2", "val.sets=[Set5]")
    with pytest.raises(BlindSRError, match="vanished"):
        train(cfg, progress=False)
    assert (tmp_path / "runs/tiny/checkpoints/step_0000002").is_dir()


def test_forked_children_let_go_of_the_run_folder_lock(tmp_path, data_dir, monkeypatch):
    import os

    import blindsr.train as train_module
    from blindsr.train_resume import claim_run_folder

    statuses = []

    def claim_and_fork(run):
        claim_run_folder(run)
        pid = os.fork()
        if pid == 0:  # a data-loader worker, say: it must not keep the lock of a killed run
            os._exit(0 if run.lock.closed else 1)
        statuses.append(os.waitpid(pid, 0)[1])

    monkeypatch.setattr(train_module, "claim_run_folder", claim_and_fork)
    train(tiny(tmp_path, data_dir), progress=False)
    assert statuses == [0]


def test_a_file_system_without_locks_trains_unguarded(tmp_path, data_dir, monkeypatch, capsys):
    import errno
    import fcntl

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    assert train(tiny(tmp_path, data_dir), progress=False).step == 4
    assert "cannot lock" in capsys.readouterr().err
