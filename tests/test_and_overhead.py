"""benchmarks/and_overhead.py: its conv-work model and a tiny timed run of every case."""

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def script():
    return load_benchmark("and_overhead")


def test_conv_work_model_counts_the_attack_passes(script):
    g, f, k = 1.0, 2.0, 5
    # plain 3G; per PGD step 2G, and 3F for every step the degradation net runs; then F once
    assert script.predicted_ratio(g, f, k, 1.0, identity_init=False) == \
        pytest.approx((3 + 5 * 2 + 5 * 6 + 2) / 3)
    # from the identity the first step needs no pass through the degradation net
    assert script.predicted_ratio(g, f, k, 1.0) == pytest.approx((3 + 5 * 2 + 4 * 6 + 2) / 3)
    assert script.predicted_ratio(g, f, k, 0.25) == \
        pytest.approx((3 + 0.25 * (5 * 2 + 4 * 6) + 2) / 3)
    assert script.predicted_ratio(g, f, 1, 1.0) == pytest.approx((3 + 2 + 2) / 3)
    assert script.predicted_ratio(g, f, k, 1.0, "noise") == pytest.approx((3 + 10) / 3)
    assert script.predicted_ratio(g, f, k, 1.0, "random") == pytest.approx((3 + 2) / 3)


def test_times_plain_and_both_attack_batches(script, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["and_overhead", "--feat", "4", "--blocks", "1", "--batch",
                                     "2", "--patch", "32", "--steps", "1", "--attack-batch", "1",
                                     "--params", '{"channels": 4, "steps": 2}'])
    script.main()
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| ") and "ms" not in r]
    assert [r.split(" | ")[0] for r in rows] == ["| plain", "| and", "| and, attack on 1"]
    assert rows[0].split(" | ")[2] == "1.00x"
    assert all(float(r.split(" | ")[2].rstrip("x")) > 0 for r in rows)
