"""Synthetic cohort benchmark: ``generate`` throughput (images + masks + csv written) at 128 px with 1 and 2 worker
processes, and in-memory ``render_batch`` time per image. Goal: 5,000 images at 128 px in under 2 minutes on 2 cores."""
from __future__ import annotations

import resource
import shutil
import tempfile
import time
from pathlib import Path


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the worker processes)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def run(quick: bool = False) -> list[dict]:
    from cxrdistill import synth

    n2 = 200 if quick else 5000
    n1 = 100 if quick else 500
    d = Path(tempfile.mkdtemp(prefix="cxrd-bench-synth-"))
    try:
        t0, c0 = time.perf_counter(), _cpu()
        synth.generate(d / "w2", n=n2, size=128, seed=0, scenario="mixed", workers=2)
        t2, c2 = time.perf_counter() - t0, _cpu() - c0
        t0 = time.perf_counter()
        synth.generate(d / "w1", n=n1, size=128, seed=0, scenario="mixed", workers=1)
        t1 = time.perf_counter() - t0
        t0 = time.perf_counter()
        synth.render_batch(n1, size=64, seed=0, scenario="mixed")
        t64 = time.perf_counter() - t0
    finally:
        shutil.rmtree(d, ignore_errors=True)
    rate2, rate1 = n2 / t2, n1 / t1
    return [
        {"name": f"synth generate, {n2} images at 128 px, 2 workers", "value": rate2, "unit": "images/s",
         "goal": ">= 41.7 (5,000 in 2 min)", "note": f"{t2:.1f} s; writes image + lung + heart mask PNGs and the csv"},
        {"name": "synth generate, 5,000 images at 128 px, 2 workers (projected)" if quick else
         "synth generate, 5,000 images at 128 px, 2 workers", "value": 5000 / rate2, "unit": "s", "goal": "< 120",
         "note": "projected from the rate above" if quick else "measured"},
        {"name": "synth generate, CPU time per image at 128 px", "value": 1000 * c2 / n2, "unit": "ms",
         "goal": "< 48 (= 2 cores x 120 s / 5,000)", "note": f"all processes; 5,000 images on 2 idle cores ≈ "
                                                           f"{5000 * c2 / n2 / 2:.0f} s"},
        {"name": f"synth generate, {n1} images at 128 px, 1 worker", "value": rate1, "unit": "images/s", "goal": "",
         "note": f"2-worker speed-up {rate2 / rate1:.2f}x"},
        {"name": f"synth render_batch, {n1} images at 64 px, in memory", "value": 1000 * t64 / n1, "unit": "ms/image",
         "goal": "", "note": "1 process; what tests and experiments use"},
    ]
