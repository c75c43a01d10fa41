"""benchmarks/upscale_speed.py: the two sides run in worker processes and agree."""

import importlib

import pytest
from conftest import ROOT


@pytest.fixture
def script(monkeypatch):
    """The benchmark, imported by name (its spawned workers import it so)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("upscale_speed")


def test_both_sides_give_the_same_fp32_output_and_a_ratio(script):
    rows = script.bench("srresnet", {"num_feat": 4, "num_block": 1}, 24, 16, 4, 2, repeats=1,
                        threads=1)
    assert [(r["tiled"], r["dtype"]) for r in rows] == [
        ("no", "fp32"), ("no", "bf16"), ("16+4", "fp32"), ("16+4", "bf16")]
    for row in rows:
        assert row["speedup"] > 0 and row["ms_per_mp"] > 0
        if row["dtype"] == "fp32":
            assert row["max_diff_255"] < 1e-3
        # conv throughput: the same work over each side's time
        assert row["gmac_s"] / row["ref_gmac_s"] == pytest.approx(row["speedup"])
    only = script.bench("srresnet", {"num_feat": 4, "num_block": 1}, 24, 16, 4, 2, repeats=1,
                        threads=1, dtypes=("fp32",))
    assert [r["dtype"] for r in only] == ["fp32", "fp32"]


def test_conv_peak_is_a_throughput(script):
    assert 0.01 < script.conv_peak(repeats=1) < 10_000  # GMAC/s


def test_a_failing_worker_stops_the_benchmark_instead_of_hanging(script):
    with pytest.raises(RuntimeError, match="worker failed: .*unknown architecture"):
        script.bench("no-such-arch", {}, 24, 16, 4, 2, repeats=1, threads=1)
