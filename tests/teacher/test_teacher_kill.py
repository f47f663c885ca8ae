"""The embedding client killed with SIGKILL three times mid-run and restarted: the store ends complete and equal to
a clean run's, and no image that was already stored is ever sent to the server again.

Precisely, from the server's request log (what arrived, in arrival order) and a snapshot of the store taken right
after each kill (S_k):
  1. no request logged after snapshot k carries an image whose id is in S_k (stored images are never re-sent);
  2. every image arrived at least once, and images that arrived more than once are at most
     kills × concurrency × batch_size (only batches in flight at a kill — sent, not yet stored — are sent again).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cxrdistill.teachers.faults import FaultSpec
from cxrdistill.storage.store import EmbeddingStore

from teacher_testlib import TOKEN, assert_same_store

CLI = str(Path(sys.executable).with_name("cxrdistill"))
BATCH, CONC = 4, 2


def _arrivals(log_dir: Path) -> list[tuple[int, list[str]]]:
    out = []
    for p in sorted(log_dir.glob("*.json")):
        seq = json.loads(p.read_text())["seq"]
        body, pos, hashes = p.with_suffix(".body").read_bytes(), 0, []
        while pos < len(body):
            (n,) = struct.unpack_from("<I", body, pos)
            px = np.asarray(Image.open(io.BytesIO(body[pos + 4:pos + 4 + n])))
            hashes.append(hashlib.sha1(px.tobytes()).hexdigest())
            pos += 4 + n
        out.append((seq, hashes))
    return out


def _n_chunks(store: Path) -> int:
    d = store / "chunks"
    return len([p for p in d.glob("*.ids") if not p.name.startswith(".")]) if d.exists() else 0  # published


def test_client_killed_three_times_loses_nothing_and_resends_nothing(cohort, clean_store, pixel_index, make_server,
                                                                    tmp_path):
    log_dir = tmp_path / "requests"
    # a slow server (0.1-0.2 s per request) so that the client is killed with batches in flight and long before the end
    srv, app, _ = make_server(token=TOKEN, log_dir=log_dir, faults=FaultSpec.parse("delay=0.1:0.2,seed=2"),
                              log_level="warning", access_log=False)
    out = tmp_path / "store"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CXR_TOKEN": TOKEN}
    cmd = [CLI, "embed", "--teacher", srv.url, "--cohort", str(cohort["table"]), "--images-root",
           str(cohort["root"]), "--out", str(out), "--token-env", "CXR_TOKEN", "--batch-size", str(BATCH),
           "--concurrency", str(CONC), "--no-progress"]
    n = len(cohort["df"])
    n_batches = -(-n // BATCH)
    snapshots = []  # (number of requests logged so far, ids in the store) right after each kill
    for target in (2, 6, 10):  # kill once the store holds this many chunks (batches)
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        t0 = time.monotonic()
        while _n_chunks(out) < target and p.poll() is None and time.monotonic() - t0 < 60:
            time.sleep(0.002)
        assert p.poll() is None, f"client finished before the kill: {p.communicate()}"
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        assert p.returncode == -signal.SIGKILL
        st = EmbeddingStore.open(out)  # opens cleanly: the kill left no corrupt or half-visible chunk
        assert 0 < len(st) < n
        snapshots.append((len(list(log_dir.glob("*.json"))), set(st.ids)))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["already"] == len(snapshots[-1][1]) and summary["already"] + summary["embedded"] == n

    final = EmbeddingStore.open(out)
    assert final.verify()["ok"]
    assert_same_store(final, clean_store)

    arrivals = _arrivals(log_dir)
    for logged_before, stored in snapshots:  # 1. stored images are never sent again
        for seq, hashes in arrivals:
            if seq >= logged_before:
                resent = stored & {pixel_index[h] for h in hashes}
                assert not resent, f"request {seq} re-sent stored images {sorted(resent)[:3]}"
    counts: dict[str, int] = {}
    for _, hashes in arrivals:
        for h in hashes:
            counts[pixel_index[h]] = counts.get(pixel_index[h], 0) + 1
    assert set(counts) == set(cohort["df"].image_id)  # 2. everything arrived ...
    twice = [i for i, c in counts.items() if c > 1]
    assert len(twice) <= 3 * CONC * BATCH  # ... and only in-flight batches were sent again
    assert len(arrivals) <= n_batches + 3 * CONC
