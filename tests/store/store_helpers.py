"""Helpers for the store tests: deterministic embeddings and a subprocess writer that can be killed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

DIM = 16
INFO = {"name": "test-teacher", "version": "1"}


def ids_for(n: int) -> list[str]:
    return [f"img{k:05d}" for k in range(n)]


def vecs(ids: list[str], dim: int = DIM) -> np.ndarray:
    """Embedding of an id, a function of the id alone (so a resumed run must reproduce it exactly)."""
    k = np.array([int(i[3:]) for i in ids], dtype=np.float32)[:, None]
    return ((k % 997) / 8 + np.arange(dim, dtype=np.float32)[None, :] / 4).astype(np.float32)


WRITER = r"""
import sys
sys.path.insert(0, sys.argv[5])
from store_helpers import ids_for, vecs, INFO, DIM
from cxrdistill.storage.store import EmbeddingStore, kill_at_for_testing, select_shard, shard_writer
path, n, bs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
shard = sys.argv[4] if sys.argv[4] != "-" else None
if len(sys.argv) > 6:
    kill_at_for_testing(sys.argv[6])
st = EmbeddingStore.open_or_create(path, (DIM,), "float16", INFO, writer=shard_writer(shard))
todo = st.missing(select_shard(ids_for(n), shard))
for s in range(0, len(todo), bs):
    b = todo[s:s + bs]
    st.append(b, vecs(b))
print("done", len(st))
"""


def start_writer(path: Path, n: int, bs: int, shard: str | None = None, env: dict | None = None,
                 script_dir: Path | None = None, kill_at: str | None = None) -> subprocess.Popen:
    """A writer process appending ``n`` ids in batches of ``bs``; ``kill_at``: it SIGKILLs itself at that step of
    a chunk write (``kill_at_for_testing``)."""
    script = Path(script_dir or path.parent) / "writer.py"
    if not script.exists():
        script.write_text(WRITER)
    e = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, str(script), str(path), str(n), str(bs), shard or "-",
                             str(Path(__file__).parent), *([kill_at] if kill_at else [])], env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def assert_consistent(st, n: int) -> None:
    """Every visible id is one we wrote, unique, with exactly its expected vector; verify() is clean."""
    ids = st.ids
    assert len(set(ids)) == len(ids)
    assert set(ids) <= set(ids_for(n))
    if ids:
        assert np.array_equal(st.get(ids), vecs(ids).astype(np.float16))
    rep = st.verify()
    assert rep["ok"], rep["problems"]
    assert rep["duplicate_rows"] == 0
