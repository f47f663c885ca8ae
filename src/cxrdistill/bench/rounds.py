"""Side-by-side timing on a shared machine: two ways of doing the same work, run in many short interleaved rounds.

Each round runs both sides once, in alternating order (AB, BA, AB, …), so that a load spike or a slow drift from
other processes hits both alike; the ratio is taken within each round, and the reported ratio is the median of the
rounds' ratios with its interquartile range — one disturbed round cannot move it. Beside the wall-clock ratio, the
CPU-time ratio (CPU seconds per item of this process, plus any helper process such as a server) measures the work
each side does, which other processes' load inflates far less than wall time.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc``), seconds."""
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Paired:
    """Per-round measurements of sides ``a`` and ``b``: items per wall second and per CPU second."""

    wall: dict[str, list[float]] = field(default_factory=lambda: {"a": [], "b": []})
    cpu: dict[str, list[float]] = field(default_factory=lambda: {"a": [], "b": []})

    @property
    def wall_ratios(self) -> np.ndarray:
        """a / b throughput, per round."""
        return np.asarray(self.wall["a"]) / np.asarray(self.wall["b"])

    @property
    def cpu_ratios(self) -> np.ndarray:
        """a / b items per CPU second, per round."""
        return np.asarray(self.cpu["a"]) / np.asarray(self.cpu["b"])

    def summary(self, which: str = "wall") -> tuple[float, float, float]:
        """``(median, q25, q75)`` of the per-round ratios."""
        r = self.wall_ratios if which == "wall" else self.cpu_ratios
        q25, med, q75 = np.percentile(r, [25, 50, 75])
        return float(med), float(q25), float(q75)

    def rate(self, side: str, which: str = "wall") -> float:
        """Median per-round throughput of one side (items/s of wall or of CPU time)."""
        return float(np.median((self.wall if which == "wall" else self.cpu)[side]))

    def describe(self, which: str = "wall") -> str:
        med, q25, q75 = self.summary(which)
        return f"{med:.3f} (IQR {q25:.3f}–{q75:.3f})"


def paired_rounds(a: Callable[[], int], b: Callable[[], int], rounds: int,
                  extra_cpu: Callable[[], float] | None = None) -> Paired:
    """Run ``a`` and ``b`` ``rounds`` times each, interleaved (AB, BA, AB, …). Each returns how many items it
    processed; its wall and CPU time (this process, plus ``extra_cpu()`` — e.g. a server's :func:`cpu_seconds`)
    around the call give its throughputs."""
    if rounds < 1:
        raise ValueError(f"rounds must be ≥ 1, got {rounds}")
    extra = extra_cpu or (lambda: 0.0)
    out = Paired()
    for k in range(rounds):
        for side in ("ab" if k % 2 == 0 else "ba"):
            fn = a if side == "a" else b
            c0, x0, t0 = time.process_time(), extra(), time.perf_counter()
            n = fn()
            wall = time.perf_counter() - t0
            cpu = time.process_time() - c0 + extra() - x0
            out.wall[side].append(n / wall)
            out.cpu[side].append(n / max(cpu, 1e-9))
    return out
