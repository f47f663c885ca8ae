"""Streaming iteration keeps resident memory O(batch): 200k × 1376 float16 (550 MB) read with a 4096-row batch.

The full 1M × 1376 check is ``cxrdistill.bench.store`` (make bench)."""
from __future__ import annotations

from cxrdistill.bench.store import build_store, iterate_in_subprocess


def test_iterate_200k_x_1376_fp16_in_O_batch_memory(tmp_path):
    n = 200_000
    build_store(tmp_path / "s", n, dim=1376, dtype="float16", chunk_rows=25_000)
    m = iterate_in_subprocess(tmp_path / "s", batch_size=4096, ids_sample=5000)
    assert m["rows"] == n and m["random_rows"] == 5000
    assert m["data_mb"] > 500  # 200k × 1376 × 2 bytes
    # A reader that loaded or memory-mapped everything would grow by ~525 MiB; O(batch) is a few batches.
    assert m["growth_mb"] < 4 * m["batch_mb"] + 16, m
    print(f"\nstreaming: {m['rows']} rows, {m['data_mb']:.0f} MiB data, batch {m['batch_mb']:.1f} MiB, "
          f"RSS after open {m['rss_open_mb']:.0f} MiB, growth {m['growth_mb']:.1f} MiB, "
          f"{m['rows'] / m['iter_s']:.0f} rows/s")
