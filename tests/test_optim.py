import math

import pytest
import torch
from torch import nn

from blindsr.config import OptimConfig, ScheduleConfig
from blindsr.errors import BlindSRError
from blindsr.optim import Scheduler, ema_decay, ema_update, make_optimizer, schedule_lr


def test_cosine_schedule_with_warmup_and_restarts():
    s = ScheduleConfig(type="cosine", warmup=2, periods=[4, 4], restart_weights=[1.0, 0.5],
                       eta_min=0.1)
    lrs = [schedule_lr(s, 1.0, t, 8) for t in range(10)]
    assert lrs[0] == pytest.approx(0.5)
    assert lrs[1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lrs[2] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert lrs[4] == pytest.approx(0.1 + 0.5 * 0.9)  # restart at half height
    assert lrs[8] == lrs[9] == pytest.approx(0.1)  # after the last period: eta_min
    one = ScheduleConfig(type="cosine")
    assert schedule_lr(one, 2.0, 0, 10) == 2.0 and schedule_lr(one, 2.0, 5, 10) == pytest.approx(1)


def test_multistep_and_constant_schedules():
    s = ScheduleConfig(type="multistep", milestones=[3, 6], gamma=0.1)
    assert [schedule_lr(s, 1.0, t, 10) for t in (0, 2, 3, 5, 6, 9)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01])
    assert schedule_lr(ScheduleConfig(warmup=4), 1.0, 1, 10) == pytest.approx(0.5)
    assert schedule_lr(ScheduleConfig(), 1.0, 7, 10) == 1.0


def test_ema_update_lerps_parameters_and_buffers():
    a, b = nn.BatchNorm2d(2), nn.BatchNorm2d(2)
    with torch.no_grad():
        a.weight.fill_(0.0)
        b.weight.fill_(1.0)
        b.running_mean.fill_(2.0)
        b.num_batches_tracked.fill_(5)
    ema_update(a, b, 0.75)
    assert torch.allclose(a.weight, torch.full((2,), 0.25))
    assert torch.allclose(a.running_mean, torch.full((2,), 0.5))
    assert int(a.num_batches_tracked) == 5
    assert ema_decay(0.999, 0) == pytest.approx(0.1) and ema_decay(0.999, 90) == pytest.approx(0.91)
    assert ema_decay(0.999, 10**6) == 0.999 and ema_decay(0.5, 100) == 0.5


def test_make_optimizer_takes_trainable_parameters_only():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 3, 1))
    net[0].requires_grad_(False)
    opt = make_optimizer(net, OptimConfig(type="adamw", lr=3e-4, betas=[0.8, 0.9],
                                          weight_decay=0.01))
    assert isinstance(opt, torch.optim.AdamW)
    params = opt.param_groups[0]["params"]
    assert {id(p) for p in params} == {id(p) for p in net[1].parameters()}
    assert opt.param_groups[0]["betas"] == (0.8, 0.9)
    assert type(make_optimizer(net, OptimConfig(type="adam"))) is torch.optim.Adam
    with pytest.raises(BlindSRError, match="no trainable parameters"):
        make_optimizer(net.requires_grad_(False), OptimConfig())


def test_scheduler_sets_every_group_and_resumes_from_its_state():
    net = nn.Linear(2, 2)
    opt = torch.optim.Adam([{"params": [net.weight]}, {"params": [net.bias]}], lr=1.0)
    sched = Scheduler(opt, ScheduleConfig(type="cosine"), base_lr=2.0, total=10)
    assert sched.set(5) == pytest.approx(1.0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1.0, 1.0])
    again = Scheduler(opt, ScheduleConfig(type="cosine"), base_lr=2.0, total=10)
    again.load_state_dict(sched.state_dict())
    assert again.last_step == 5
