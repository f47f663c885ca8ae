"""Embedding-store benchmark: write, open, streaming iteration (with resident-memory growth), random reads, verify.

The full run is the issue's check: 1M × 1376 float16 (2.75 GB on disk); quick mode uses 100k rows. Iteration is
measured in a fresh process so that the resident-set growth (``VmRSS``/``VmHWM`` from /proc/self/status, no psutil)
is that of the iteration alone.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def rss_mb(field: str = "VmRSS") -> float:
    """Resident memory of this process in MiB (``VmRSS``; ``VmHWM`` = peak), read from /proc/self/status."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/self/status")


def build_store(path: str | os.PathLike, n: int, dim: int = 1376, dtype: str = "float16",
                chunk_rows: int = 20000) -> float:
    """Fill a store with ``n`` synthetic rows by appending big chunks; returns seconds."""
    from cxrdistill.storage.store import EmbeddingStore

    t0 = time.perf_counter()
    st = EmbeddingStore.create(path, (dim,), dtype, {"name": "bench", "version": "1"})
    base = np.random.default_rng(0).standard_normal((chunk_rows, dim)).astype(dtype)
    for s in range(0, n, chunk_rows):
        m = min(chunk_rows, n - s)
        base[:m, 0] = np.arange(s, s + m) % 1000  # rows differ between chunks
        st.append([f"img{k:08d}" for k in range(s, s + m)], base[:m])
    return time.perf_counter() - t0


def iterate_measure(path: str | os.PathLike, batch_size: int = 4096, ids_sample: int = 0) -> dict:
    """Open + iterate every batch, tracking resident memory; meant to run in a fresh process."""
    from cxrdistill.storage.store import EmbeddingStore

    r0 = rss_mb()
    t0 = time.perf_counter()
    st = EmbeddingStore.open(path, "r")
    t_open = time.perf_counter() - t0
    r_open = rss_mb()
    peak = r_open
    rows = 0
    checksum = 0.0
    t1 = time.perf_counter()
    for _, arr in st.iter_batches(batch_size):
        rows += len(arr)
        checksum += float(arr[:, 0].astype(np.float32).sum())
        peak = max(peak, rss_mb())
    t_iter = time.perf_counter() - t1
    out = {"rows": rows, "open_s": t_open, "iter_s": t_iter, "rss_start_mb": r0, "rss_open_mb": r_open,
           "rss_peak_mb": peak, "growth_mb": peak - r_open,
           "batch_mb": batch_size * st._row_bytes / 2**20, "data_mb": st.nbytes() / 2**20, "checksum": checksum}
    if ids_sample:
        rng = np.random.default_rng(1)
        ids = st.ids
        pick = [ids[k] for k in rng.choice(len(ids), size=min(ids_sample, len(ids)), replace=False)]
        t2 = time.perf_counter()
        got = 0
        for _, arr in st.iter_batches(256, ids=pick):
            got += len(arr)
        out["random_rows"] = got
        out["random_s"] = time.perf_counter() - t2
        t3 = time.perf_counter()
        for s in range(0, len(pick), 256):
            st.get(pick[s:s + 256])
        out["get_s"] = time.perf_counter() - t3
    return out


def iterate_in_subprocess(path: str | os.PathLike, batch_size: int = 4096, ids_sample: int = 0) -> dict:
    code = ("import json,sys; from cxrdistill.bench.store import iterate_measure; "
            "print(json.dumps(iterate_measure(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code, str(path), str(batch_size), str(ids_sample)],
                       capture_output=True, text=True, env=env, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[dict]:
    from cxrdistill.storage.store import EmbeddingStore

    n = 100_000 if quick else 1_000_000
    d = Path(tempfile.mkdtemp(prefix="cxrd-bench-store-"))
    try:
        t_build = build_store(d / "s", n)
        gb = n * 1376 * 2 / 1e9
        m = iterate_in_subprocess(d / "s", 4096, ids_sample=20_000)
        t0 = time.perf_counter()
        ok = EmbeddingStore.open(d / "s").verify()["ok"]
        t_verify = time.perf_counter() - t0
        label = f"{n // 1000}k×1376 fp16 ({gb:.2f} GB)"
        return [
            {"name": f"store write {label}", "value": gb / t_build, "unit": "GB/s",
             "goal": "", "note": f"{t_build:.1f} s, chunks of 20k rows, fsynced"},
            {"name": "store open", "value": m["open_s"], "unit": "s", "goal": "", "note": f"{n} ids"},
            {"name": "store iterate (batch 4096)", "value": m["rows"] / m["iter_s"], "unit": "rows/s",
             "goal": "", "note": f"{gb / m['iter_s']:.2f} GB/s (page cache)"},
            {"name": "store iterate RSS growth", "value": m["growth_mb"], "unit": "MiB",
             "goal": "O(batch) ≪ data", "note": f"batch {m['batch_mb']:.1f} MiB, data {m['data_mb']:.0f} MiB, "
                                                 f"RSS after open {m['rss_open_mb']:.0f} MiB"},
            {"name": "store random reads (iter_batches ids=, 256/batch)", "value": m["random_rows"] / m["random_s"],
             "unit": "rows/s", "goal": "", "note": "pread of sorted runs"},
            {"name": "store random reads (get, 256/batch)", "value": m["random_rows"] / m["get_s"],
             "unit": "rows/s", "goal": "", "note": "memory-mapped"},
            {"name": "store verify (sha256)", "value": gb / t_verify, "unit": "GB/s", "goal": "", "note": str(ok)},
        ]
    finally:
        shutil.rmtree(d, ignore_errors=True)
