"""blindsr.train_resume: checkpoints, resuming, and finished runs left as they are."""

import pytest
import torch

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
