"""Running means, metrics.jsonl rows across a resume, config flattening and the image grid."""

import json

import torch

from blindsr import archs
from blindsr.train_logs import Meter, MetricsLog, flatten, sample_grid


def test_meter_means_tensors_and_numbers_then_starts_over():
    m = Meter()
    m.add({"loss": torch.tensor(1.0), "lr": 0.5})
    m.add({"loss": torch.tensor(3.0)})
    assert m.means() == {"loss": 2.0, "lr": 0.5}
    assert m.means() == {}


def test_metrics_log_keeps_rows_up_to_the_resumed_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (50, 100, 150))
                    + '{"step": 20')  # a line cut by a kill
    log = MetricsLog(path, enabled=True, resume_step=100)
    log.write({"step": 150, "loss": 0.1})
    assert [json.loads(x) for x in path.read_text().splitlines()] == [
        {"step": 50}, {"step": 100}, {"step": 150, "loss": 0.1}]
    MetricsLog(path, enabled=True, resume_step=None)  # a fresh run starts empty
    assert path.read_text() == ""
    off = MetricsLog(tmp_path / "other.jsonl", enabled=False, resume_step=None)
    off.write({"step": 1})
    assert not (tmp_path / "other.jsonl").exists()  # only rank 0 writes


def test_flatten_joins_nested_keys():
    assert flatten({"a": {"b": 1, "c": {"d": [2]}}, "e": None}) == {"a.b": 1, "a.c.d": [2],
                                                                    "e": None}


def test_sample_grid_rows_are_lr_sr_hr_of_samples_with_an_hr():
    model = archs.build("srresnet", num_feat=4, num_block=1, scale=2).eval()
    lr, hr = torch.rand(3, 3, 4, 4), torch.rand(3, 3, 8, 8)
    batch = {"lr": lr, "hr": hr, "has_hr": torch.tensor([False, True, True])}
    grid = sample_grid(model, batch, 2, n=4)
    assert grid.shape == (3, 16, 24)  # two samples with an HR, each LR | SR | HR
    torch.testing.assert_close(grid[:, :8, 16:], hr[1])
    nearest = lr[2].repeat_interleave(2, -1).repeat_interleave(2, -2)
    torch.testing.assert_close(grid[:, 8:, :8], nearest)
    with torch.no_grad():
        torch.testing.assert_close(grid[:, :8, 8:16], model(lr[1:2])[0].clamp(0, 1))
