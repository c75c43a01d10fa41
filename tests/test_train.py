import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from blindsr.checkpoint import load_model, read_checkpoint
from blindsr.cli import main
from blindsr.config import load_config, parse_config
from blindsr.errors import BlindSRError
from blindsr.strategies import STRATEGIES, Strategy, Update
from blindsr.train import build_generator, train
from blindsr.train_state import list_checkpoints, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "configs" / "tiny.yaml"


def make_images(folder: Path, n: int = 3, size: tuple[int, int] = (40, 36), seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        smooth = rng.random((size[1] // 4, size[0] // 4, 3)) * 255
        img = Image.fromarray(smooth.astype(np.uint8)).resize(size, Image.BICUBIC)
        img.save(folder / f"img{i}.png")
    return folder


@pytest.fixture
def data_dir(tmp_path):
    return make_images(tmp_path / "data")


def tiny(tmp_path: Path, data_dir: Path, *overrides: str):
    return load_config(TINY, [f"output_dir={json.dumps(str(tmp_path / 'runs'))}",
                              f"data.train=[{{path: {json.dumps(str(data_dir))}}}]", *overrides])


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "weights.safetensors"))


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------- full runs


def test_tiny_run_writes_a_complete_run_folder(tmp_path, data_dir):
    val_dir = make_images(tmp_path / "val", n=2, size=(32, 32), seed=1)
    cfg = tiny(tmp_path, data_dir, "val.every=2", f"val.sets=[{json.dumps(str(val_dir))}]",
               "logging.tensorboard=true", "logging.images_every=2", "train.amp=bf16")
    init = {k: v.clone() for k, v in build_generator(cfg).state_dict().items()}
    result = train(cfg, progress=False)
    run = tmp_path / "runs" / "tiny"
    assert result.run_dir == run and result.step == 4
    assert parse_config(__import__("yaml").safe_load((run / "config.yaml").read_text())) == cfg
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/l_l1" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    assert all(r["lr/generator"] > 0 and r["it_s"] > 0 for r in train_rows)
    val_rows = [r for r in rows if "val/mean_psnr" in r]
    assert [r["step"] for r in val_rows] == [2, 4]
    assert f"val/{val_dir.name}/clean/psnr" in val_rows[0]
    assert [s for s, _ in list_checkpoints(run)] == [2, 4]  # keep_checkpoints: 2
    assert list((run / "tb").glob("events.out.tfevents.*"))
    # the inference model is the EMA, with a training summary
    model = load_model(run / "model.safetensors")
    _, meta = read_checkpoint(run / "model.safetensors")
    summary = json.loads(meta["summary"])
    assert summary["iterations"] == 4 and summary["strategy"] == "plain"
    assert summary["config"] == "tiny" and "wall_time_s" in summary and "machine" in summary
    for k, v in model.state_dict().items():
        assert torch.equal(v, result.ema.state_dict()[k])
    assert any(not torch.equal(v, init[k]) for k, v in result.generator.state_dict().items())
    assert (run / "best.safetensors").is_file()


def test_resume_continues_bit_identically(tmp_path, data_dir, capsys):
    # pool, USM, channels_last and the random degradation all have state or randomness to restore
    cfg = tiny(tmp_path, data_dir, "data.pool_size=4", "data.usm=true",
               "train.channels_last=true", "train.grad_clip=0.5")
    train(cfg, progress=False)
    run = tmp_path / "runs" / "tiny"
    reference = weights(run / "checkpoints" / "step_0000004")
    _, ref_state = load_checkpoint(run / "checkpoints" / "step_0000004")
    # forget the last checkpoint, as if the process had died after step 3
    import shutil

    shutil.rmtree(run / "checkpoints" / "step_0000004")
    (run / "model.safetensors").unlink()
    capsys.readouterr()
    train(cfg, progress=False)
    assert "resuming tiny from step 2" in capsys.readouterr().err
    assert same(weights(run / "checkpoints" / "step_0000004"), reference)
    _, state = load_checkpoint(run / "checkpoints" / "step_0000004")
    for a, b in zip(state["optimizers"]["generator"]["state"].values(),
                    ref_state["optimizers"]["generator"]["state"].values(), strict=True):
        assert torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # rows after the checkpoint were replaced, not duplicated
    # a finished run is not trained further
    train(cfg, progress=False)
    assert "already trained for 4 iterations" in capsys.readouterr().err


KILL_SCRIPT = """
import sys, time
from blindsr.strategies import plain
step = plain.Plain.training_step
def slow(self, batch, i):
    time.sleep(0.25)
    yield from step(self, batch, i)
plain.Plain.training_step = slow
from blindsr.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_run_resumes_to_the_same_weights(tmp_path, data_dir):
    overrides = ["train.iterations=8", "train.checkpoint_every=2", "train.keep_checkpoints=5"]
    killed = tmp_path / "killed"
    args = [sys.executable, "-c", KILL_SCRIPT, "train", str(TINY), "-q", "--output-dir",
            str(killed / "runs"), f"data.train=[{{path: {json.dumps(str(data_dir))}}}]", *overrides]
    # bit-identical resumption holds for one thread count: the child uses this process's
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"),
           "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run = killed / "runs" / "tiny"
    deadline = time.time() + 120
    while not (run / "checkpoints" / "step_0000004").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = list_checkpoints(run)
    assert 4 in [s for s, _ in done] and max(s for s, _ in done) < 8
    for _, path in done:  # whatever the moment of the kill, every complete checkpoint loads
        load_checkpoint(path)
    resumed = train(tiny(killed, data_dir, *overrides), progress=False)
    reference = train(tiny(tmp_path / "ref", data_dir, *overrides), progress=False)
    for k, v in reference.generator.state_dict().items():
        assert torch.equal(v, resumed.generator.state_dict()[k]), k
    for k, v in reference.ema.state_dict().items():
        assert torch.equal(v, resumed.ema.state_dict()[k]), k


# ------------------------------------------------------------------------ strategies in the loop


@dataclass
class DuoParams:
    nan_steps: int = 0  # iterations whose generator loss is NaN


class Duo(Strategy):
    """A two-network strategy: the generator and a 'critic' with its own optimiser."""

    name = "duo"
    Params = DuoParams

    def __init__(self, generator, params, scale, device):
        super().__init__(generator, params, scale, device)
        self.critic = nn.Conv2d(3, 1, 3).to(device)
        self.calls = 0

    def networks(self):
        return {"critic": self.critic}

    def default_optim(self):
        return {"critic": {"lr": 1e-3, "type": "adamw"}}

    def training_step(self, batch, step):
        self.calls += 1
        sr = self.generator(batch["lr"])
        loss = (sr - batch["hr"]).abs().mean()
        if step < self.params.nan_steps:
            loss = loss * float("nan")
        yield Update(loss, ("generator",), {"l_g": loss.detach()})
        critic = self.critic(sr.detach()).square().mean()
        yield Update(critic, ("critic",), {"l_c": critic.detach()})

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


@pytest.fixture
def duo(monkeypatch):
    monkeypatch.setitem(STRATEGIES, "duo", Duo)


def test_extra_networks_get_optimisers_checkpoints_and_state(tmp_path, data_dir, duo):
    cfg = tiny(tmp_path, data_dir, "strategy={name: duo}")
    before = build_generator(cfg).state_dict()
    result = train(cfg, progress=False)
    assert cfg.optim["critic"].lr == 1e-3 and cfg.optim["critic"].type == "adamw"
    ckpt = tmp_path / "runs" / "tiny" / "checkpoints" / "step_0000004"
    nets, state = load_checkpoint(ckpt)
    assert set(nets) == {"generator", "generator_ema", "critic"}
    assert set(state["optimizers"]) == {"generator", "critic"}
    assert state["strategy"] == {"calls": 4}
    assert torch.equal(nets["critic"]["weight"], result.networks["critic"].weight.detach())
    assert not torch.equal(nets["generator"]["conv_first.weight"], before["conv_first.weight"])
    row = json.loads((tmp_path / "runs" / "tiny" / "metrics.jsonl").read_text().splitlines()[0])
    assert {"train/l_g", "train/l_c", "lr/generator", "lr/critic"} <= set(row)
    with pytest.raises(BlindSRError, match="optim.critc: no network of that name"):
        train(tiny(tmp_path / "b", data_dir, "strategy={name: duo}", "optim.critc.lr=1"))


def test_nan_losses_skip_updates_then_stop_clearly(tmp_path, data_dir, duo):
    cfg = tiny(tmp_path, data_dir, "strategy={name: duo, params: {nan_steps: 1}}")
    train(cfg, progress=False)  # one bad iteration is skipped, training goes on
    rows = [json.loads(x) for x in (tmp_path / "runs/tiny/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("event") == "nonfinite_skipped"] == [1]
    cfg = tiny(tmp_path / "b", data_dir, "strategy={name: duo, params: {nan_steps: 99}}",
               "train.max_bad_steps=3")
    before = build_generator(cfg).state_dict()
    with pytest.raises(BlindSRError, match="stopped at step 3: 3 consecutive iterations"):
        train(cfg, progress=False)
    nets, _ = load_checkpoint(tmp_path / "b/runs/tiny/checkpoints/step_0000002")
    for k, v in before.items():  # the generator was never stepped
        assert torch.equal(nets["generator"][k], v)


class Idle(Strategy):
    """Yields no update (as an RL strategy whose replay buffer never fills)."""

    name = "idle"

    def training_step(self, batch, step):
        return iter(())

    def idle_reason(self):
        return "waiting for data"


def test_a_run_that_made_no_update_says_so(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setitem(STRATEGIES, "idle", Idle)
    cfg = tiny(tmp_path, data_dir, "strategy={name: idle}", "train.iterations=3")
    before = build_generator(cfg).state_dict()
    result = train(cfg, progress=False)
    err = capsys.readouterr().err
    assert ("warning: tiny: no update was made in 3 iteration(s), so the model is unchanged: "
            "waiting for data") in err
    rows = [json.loads(x) for x in (tmp_path / "runs/tiny/metrics.jsonl").read_text().splitlines()]
    assert {"step": 3, "event": "no_updates", "iterations": 3} in rows
    assert same(result.generator.state_dict(), before)
    train(tiny(tmp_path / "b", data_dir, "train.iterations=3"), progress=False)
    assert "no update" not in capsys.readouterr().err


# ------------------------------------------------------------------------------------ the CLI


def test_cli_trains_and_reports_bad_options_in_one_line(tmp_path, data_dir, capsys):
    data = f"data.train=[{{path: {json.dumps(str(data_dir))}}}]"
    assert main(["train", str(TINY), data, "--output-dir", str(tmp_path), "-q",
                 "train.iterations=2"]) == 0
    assert (tmp_path / "tiny" / "model.safetensors").is_file()
    for args, message in [
        (["train.amp=fp16"], "fp16 is not supported on the CPU"),
        (["--resume", "name=fresh"], "--resume: no checkpoint in"),
        (["degradation.kind=none", "name=x"], "degradation.kind: is none, but data has HR"),
        (["train.itrations=3"], "did you mean 'iterations'"),
        (["val.sets=[Set5[:1]]"], "quote items that hold brackets"),
        (["--output-dir", str(tmp_path / "tiny" / "model.safetensors")],
         "cannot create run folder"),
    ]:
        capsys.readouterr()
        assert main(["train", str(TINY), data, "--output-dir", str(tmp_path), "-q", *args]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and err[0].startswith("blindsr: error:"), err


def test_init_checkpoint_starts_the_generator(tmp_path, data_dir):
    from blindsr import archs
    from blindsr.checkpoint import save_model

    src = archs.build("srresnet", num_feat=4, num_block=1, scale=4)
    save_model(src, tmp_path / "init.safetensors")
    cfg = tiny(tmp_path, data_dir, f"model.init={json.dumps(str(tmp_path / 'init.safetensors'))}")
    for k, v in build_generator(cfg).state_dict().items():
        assert torch.equal(v, src.state_dict()[k])
    bad = tiny(tmp_path, data_dir, f"model.init={json.dumps(str(tmp_path / 'init.safetensors'))}",
               "model.kwargs.num_feat=8")
    with pytest.raises(BlindSRError, match="model.init: .* does not fit srresnet") as err:
        build_generator(bad)
    message = str(err.value)
    assert "wrong shape: conv_first.weight (4, 3, 3, 3) vs (8, 3, 3, 3)" in message
    assert "model.grow: true" in message and "\n" not in message


def test_init_takes_a_shipped_model_name(tmp_path, data_dir):
    shipped = load_model("blindsr-x4").state_dict()
    cfg = load_config(ROOT / "configs/finetune_x4.yaml", [
        f"output_dir={json.dumps(str(tmp_path / 'runs'))}",
        f"data.train.0.path={json.dumps(str(data_dir))}", "train.iterations=2", "train.batch=2",
        "train.patch=32", "val.every=0", "logging.tensorboard=false", "logging.images_every=0"])
    start = build_generator(cfg).state_dict()
    assert same(start, shipped)
    result = train(cfg, progress=False)
    tuned = load_model(result.run_dir / "model.safetensors").state_dict()
    assert tuned.keys() == shipped.keys() and not same(tuned, shipped)
    for init, message in [
        ("blindsr-x9", r"checkpoint not found: blindsr-x9 \(a .safetensors / .pth file, or a "
                       r"shipped model: .*blindsr-x4"),
        ("bicubic", "bicubic has no weights to start from"),
        ("blindsr-x4+", r"blindsr-x4\+: self-ensemble \('\+'\) is for upscale and eval"),
        (str(data_dir), "a folder, not a checkpoint file"),
    ]:
        with pytest.raises(BlindSRError, match=f"^config model.init: {message}"):
            tiny(tmp_path, data_dir, f"model.init={json.dumps(init)}")


def test_init_resolution_paths_before_names(tmp_path, data_dir, monkeypatch):
    from blindsr.checkpoint import save_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "blindsr-x4").mkdir()  # a folder named like a shipped model does not hide it
    cfg = tiny(tmp_path, data_dir, "model.init=blindsr-x4", "model.kwargs.num_feat=32",
               "model.kwargs.num_block=8")
    assert cfg.model.init_file().parent.name == "weights"
    monkeypatch.setenv("HOME", str(tmp_path))
    save_model(archs_build_tiny(), tmp_path / "w.safetensors")
    assert tiny(tmp_path, data_dir, "model.init=~/w.safetensors").model.init_file() == \
        tmp_path / "w.safetensors"


def archs_build_tiny():
    from blindsr import archs

    return archs.build("srresnet", num_feat=4, num_block=1, scale=4)


def test_init_errors_say_what_the_init_is(tmp_path, data_dir):
    from blindsr import archs
    from blindsr.checkpoint import save_model

    save_model(archs.build("srvgg", num_feat=4, num_conv=1, scale=4), tmp_path / "vgg.safetensors")
    (tmp_path / "x.onnx").write_bytes(b"onnx")
    cases = [
        (["model.init=blindsr-x4"], r"blindsr-x4 \(srresnet\(num_block=8, num_feat=32, "
                                    r"num_in_ch=3, num_out_ch=3, scale=4\)\) does not fit "
                                    r"srresnet"),
        ([f"model.init={json.dumps(str(tmp_path / 'vgg.safetensors'))}"], r"\(srvgg\(.*\)\) does "
                                                                        r"not fit srresnet"),
        ([f"model.init={json.dumps(str(tmp_path / 'x.onnx'))}"], "an ONNX file, not a checkpoint"),
    ]
    for overrides, message in cases:
        with pytest.raises(BlindSRError, match=f"^config model.init: .*{message}") as err:
            build_generator(tiny(tmp_path, data_dir, *overrides))
        assert "model.grow" not in str(err.value)  # another architecture: growing cannot help


def test_a_resumed_run_keeps_the_init_it_started_from(tmp_path, data_dir, capsys):
    from blindsr.checkpoint import save_model

    for name in ("a", "b"):
        save_model(archs_build_tiny(), tmp_path / f"{name}.safetensors")
    start = tiny(tmp_path, data_dir, f"model.init={json.dumps(str(tmp_path / 'a.safetensors'))}",
                 "train.iterations=2")
    train(start, progress=False)
    capsys.readouterr()
    other = tiny(tmp_path, data_dir, f"model.init={json.dumps(str(tmp_path / 'b.safetensors'))}",
                 "train.iterations=4")
    assert train(other, progress=False).step == 4
    assert "not applied when resuming: model.init" in capsys.readouterr().err
    run = tmp_path / "runs" / start.name
    assert load_config(run / "config.yaml").model.init == str(tmp_path / "a.safetensors")
    summary = json.loads(read_checkpoint(run / "model.safetensors")[1]["summary"])
    assert summary["init"] == str(tmp_path / "a.safetensors")


def test_init_from_a_run_that_is_not_finished_is_refused(tmp_path, data_dir):
    import shutil

    parent = tiny(tmp_path, data_dir, "name=parent")
    train(parent, progress=False)
    run = tmp_path / "runs/parent"
    init = f"model.init={json.dumps(str(run / 'model.safetensors'))}"
    assert train(tiny(tmp_path, data_dir, "name=child", init), progress=False).step == 4
    shutil.rmtree(run / "checkpoints/step_0000004")  # as if it had been stopped at step 2
    with pytest.raises(BlindSRError, match=r"model.init: .* not finished \(unfinished: step 2 "
                                           r"of 4\); finish it first"):
        train(tiny(tmp_path, data_dir, "name=child2", init), progress=False)
    assert not (tmp_path / "runs/child2/checkpoints").exists()
    # a child that already started resumes from its own checkpoints regardless
    assert train(tiny(tmp_path, data_dir, "name=child", init, "train.iterations=6"),
                 progress=False).step == 6


def test_init_grows_a_smaller_checkpoint_into_the_configured_net(tmp_path, data_dir, rand_image):
    from blindsr import archs
    from blindsr.checkpoint import save_model

    torch.manual_seed(1)
    src = archs.build("srresnet", num_feat=4, num_block=1, scale=4)
    save_model(src, tmp_path / "small.safetensors")
    init = f"model.init={json.dumps(str(tmp_path / 'small.safetensors'))}"
    cfg = tiny(tmp_path, data_dir, init, "model.grow=true",
               "model.kwargs={num_feat: 8, num_block: 2}")
    net = build_generator(cfg)
    assert net.arch_kwargs["num_feat"] == 8 and len(net.body) == 2
    x = rand_image(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(net(x), src(x), atol=1e-6)
    result = train(cfg, progress=False)  # and it trains from there
    assert result.step == 4
    with pytest.raises(BlindSRError, match="model.grow: needs model.init"):
        tiny(tmp_path, data_dir, "model.grow=true")
    with pytest.raises(BlindSRError, match="model.init: .*rrdbnet cannot be grown"):
        build_generator(tiny(tmp_path, data_dir, init, "model.grow=true", "model.arch=rrdbnet",
                             "model.kwargs={num_feat: 4, num_block: 1, num_grow_ch: 4}"))
    (tmp_path / "small.safetensors").unlink()  # resuming needs only the run's checkpoints
    more = tiny(tmp_path, data_dir, init, "model.grow=true", "train.iterations=6",
                "model.kwargs={num_feat: 8, num_block: 2}")
    assert train(more, progress=False).step == 6


def test_help_after_the_config(capsys):
    assert main(["train", str(TINY), "--help"]) == 0
    assert "KEY=VALUE" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    ([], "error: the following argument is required: config (a YAML file"),
    ([str(TINY), "--outputdir", "x"], "error: unrecognized arguments: --outputdir"),
])
def test_usage_mistakes_show_the_commands_usage(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(["train", *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err
    assert err.startswith("usage: blindsr train CONFIG [KEY=VALUE ...] [--resume]")


class Recorder(Strategy):
    """Keeps the (LR, HR) pairs the loop hands over; trains nothing useful."""

    name = "recorder"
    seen: list = []

    def training_step(self, batch, step):
        Recorder.seen.append((batch["lr"].clone(), batch["hr"].clone()))
        yield Update(self.generator(batch["lr"]).mean() * 0, ("generator",))


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_preset_prob_mixes_preset_lr_into_random_degradation(tmp_path, data_dir, monkeypatch,
                                                              prob):
    from blindsr.degrade import apply

    monkeypatch.setitem(STRATEGIES, "recorder", Recorder)
    Recorder.seen = []
    train(tiny(tmp_path, data_dir, "strategy={name: recorder}", "degradation.kind=random",
               f"degradation.preset_prob={prob}", "train.iterations=2"), progress=False)
    for lr, hr in Recorder.seen:
        bicubic = apply(hr, "bicubic", 4)
        assert torch.equal(lr, bicubic) == (prob == 1.0)


class BatchRecorder(Strategy):
    """Keeps every batch the loop hands over."""

    name = "batch_recorder"
    seen: list = []

    def training_step(self, batch, step):
        BatchRecorder.seen.append({k: v.clone() for k, v in batch.items()})
        yield Update(self.generator(batch["lr"]).mean() * 0, ("generator",))


def test_usm_sharpens_the_hr_for_lr_and_targets_and_keeps_it_plain_for_gans(tmp_path, data_dir,
                                                                             monkeypatch):
    from blindsr.data import usm_sharpen
    from blindsr.degrade import apply

    monkeypatch.setitem(STRATEGIES, "batch_recorder", BatchRecorder)
    BatchRecorder.seen = []
    train(tiny(tmp_path, data_dir, "strategy={name: batch_recorder}", "data.usm=true",
               "degradation={kind: preset, preset: bicubic}", "train.iterations=2"),
          progress=False)
    assert len(BatchRecorder.seen) == 2
    for b in BatchRecorder.seen:
        assert torch.equal(b["hr"], usm_sharpen(b["hr_plain"]))
        assert not torch.equal(b["hr"], b["hr_plain"])
        assert torch.equal(b["lr"], apply(b["hr"], "bicubic", 4))  # LR of the sharpened HR


def test_image_samples_show_the_lr_a_self_degrading_strategy_made():
    from types import SimpleNamespace

    from blindsr.train import _shown_batch
    from blindsr.train_logs import sample_grid

    class Made(Strategy):
        def degrades_itself(self):
            return True

    model = nn.Upsample(scale_factor=2, mode="nearest")
    placeholder = {"lr": torch.zeros(2, 3, 4, 4), "hr": torch.rand(2, 3, 9, 9),
                   "has_hr": torch.ones(2, dtype=torch.bool)}
    strategy = Made(model, None, 2, torch.device("cpu"))
    run = SimpleNamespace(strategy=strategy)
    assert _shown_batch(run, placeholder) is placeholder  # no step yet: the batch as it is
    made = (torch.full((2, 3, 4, 4), 0.5), torch.rand(2, 3, 8, 8))
    strategy.sample_pair = made
    grid = sample_grid(model, _shown_batch(run, placeholder), 2)
    assert grid.shape == (3, 16, 24)
    assert torch.equal(grid[:, :8, :16], torch.full((3, 8, 16), 0.5))  # LR | SR of the made LR
    assert torch.equal(grid[:, :8, 16:], made[1][0])
    # the HR is cropped to the LR's size times the scale (the 9x9 placeholder HR)
    assert sample_grid(model, placeholder, 2).shape == (3, 16, 24)


# ---------------------------------------------------------------- stopping, finishing, reusing


def interrupt_at(monkeypatch, step: int, times: int = 1) -> None:
    """Send this process SIGINT ``times`` times during training step ``step`` (0-based)."""
    from blindsr.strategies import plain

    original = plain.Plain.training_step

    def step_then_interrupt(self, batch, i):
        if i == step:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the handler runs before the next one
        yield from original(self, batch, i)

    monkeypatch.setattr(plain.Plain, "training_step", step_then_interrupt)


def test_ctrl_c_finishes_the_iteration_checkpoints_and_resumes_exactly(
        tmp_path, data_dir, monkeypatch, capsys):
    overrides = ["train.iterations=6", "train.checkpoint_every=0"]  # only the final checkpoint
    reference = train(tiny(tmp_path / "ref", data_dir, *overrides), progress=False)
    interrupt_at(monkeypatch, 2)
    cfg = tiny(tmp_path, data_dir, *overrides)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    err = capsys.readouterr().err
    assert "saving a checkpoint after this iteration" in err
    assert "stopped at step 3 of 6, checkpoint saved" in err
    run = tmp_path / "runs" / "tiny"
    assert [s for s, _ in list_checkpoints(run)] == [3]
    monkeypatch.undo()
    resumed = train(cfg, progress=False)
    assert "resuming tiny from step 3" in capsys.readouterr().err
    for k, v in reference.ema.state_dict().items():
        assert torch.equal(v, resumed.ema.state_dict()[k]), k


def test_a_second_ctrl_c_stops_at_once(tmp_path, data_dir, monkeypatch):
    interrupt_at(monkeypatch, 2, times=2)
    cfg = tiny(tmp_path, data_dir, "train.iterations=6", "train.checkpoint_every=0")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    assert list_checkpoints(tmp_path / "runs" / "tiny") == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler put back


def test_the_command_exits_130_after_a_gentle_stop(tmp_path, data_dir, monkeypatch, capsys):
    interrupt_at(monkeypatch, 1)
    data = f"data.train=[{{path: {json.dumps(str(data_dir))}}}]"
    assert main(["train", str(TINY), data, "--output-dir", str(tmp_path), "-q"]) == 130
    err = capsys.readouterr().err
    assert "stopped at step 2 of 4" in err and "Traceback" not in err


def test_validation_needs_hr_images(tmp_path, data_dir, shared):
    with pytest.raises(BlindSRError, match=r"val.sets\[0\]: RealSRSet has LR images only"):
        tiny(tmp_path, data_dir, "val.every=2", "val.sets=[RealSRSet]")


def test_lr_only_data_is_refused_for_a_strategy_that_needs_hr(tmp_path, data_dir, capsys):
    args = ["train", str(TINY), "--output-dir", str(tmp_path), "-q",
            f"data.train=[{{path: {json.dumps(str(data_dir))}}}, "
            f"{{path: {json.dumps('lr:' + str(data_dir))}}}]"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "data.train: has LR-only images, which strategy plain cannot learn from" in err
    assert not (tmp_path / "tiny" / "model.safetensors").exists()
