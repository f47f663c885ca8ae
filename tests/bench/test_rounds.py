"""The side-by-side timing harness of the benchmarks: interleaving, per-round ratios, CPU time of helper processes."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from cxrdistill.bench.rounds import Paired, cpu_seconds, paired_rounds


def _burn(seconds: float) -> None:
    """Spend ``seconds`` of this process's CPU time (not wall time: other processes' load does not change it)."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_rounds_alternate_the_order_so_drift_hits_both_sides_alike():
    calls = []
    p = paired_rounds(lambda: calls.append("a") or 1, lambda: calls.append("b") or 1, rounds=4)
    assert calls == list("abbaabba")
    assert len(p.wall["a"]) == len(p.wall["b"]) == len(p.cpu["a"]) == 4
    with pytest.raises(ValueError, match="rounds"):
        paired_rounds(lambda: 1, lambda: 1, rounds=0)


def test_cpu_ratio_measures_work_per_item():
    # a does twice b's CPU work for the same 10 items: a/b items per CPU second ≈ 0.5, whatever the load
    p = paired_rounds(lambda: _burn(0.04) or 10, lambda: _burn(0.02) or 10, rounds=3)
    med, q25, q75 = p.summary("cpu")
    assert 0.35 < med < 0.65 and q25 <= med <= q75
    assert 10 / 0.04 * 0.7 < p.rate("a", "cpu") < 10 / 0.04 * 1.05


def test_helper_process_cpu_is_counted_on_the_side_that_uses_it():
    helper = {"cpu": 0.0}

    def a():  # its work is done by a "server": 1 s of helper CPU per call
        helper["cpu"] += 1.0
        return 10

    p = paired_rounds(a, lambda: _burn(0.01) or 10, rounds=2, extra_cpu=lambda: helper["cpu"])
    assert p.summary("cpu")[0] < 0.05  # ≈ 0.01 s / 1 s
    assert p.rate("a", "cpu") == pytest.approx(10.0, rel=0.05)


def test_summary_is_median_and_quartiles_of_the_per_round_ratios():
    p = Paired(wall={"a": [1.0, 2.0, 3.0, 8.0], "b": [1.0, 1.0, 1.0, 2.0]},
               cpu={"a": [1.0] * 4, "b": [2.0] * 4})
    np.testing.assert_allclose(p.wall_ratios, [1, 2, 3, 4])
    assert p.summary("wall") == pytest.approx((2.5, 1.75, 3.25))
    assert p.summary("cpu") == pytest.approx((0.5, 0.5, 0.5))
    assert p.describe() == "2.500 (IQR 1.750–3.250)"


def test_cpu_seconds_of_another_process_agrees_with_psutil():
    child = subprocess.Popen([sys.executable, "-c",
                              "import sys, time\nend = time.process_time() + 0.3\n"
                              "while time.process_time() < end: pass\nprint('done', flush=True)\nsys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "done"
        ours = cpu_seconds(child.pid)
        t = psutil.Process(child.pid).cpu_times()
        assert ours >= 0.3
        assert ours == pytest.approx(t.user + t.system, abs=0.02)
    finally:
        child.communicate("")
