"""Crash safety: a writer SIGKILLed at any step never leaves a corrupt or half-visible store, and resumes to the
same content as a clean run."""
from __future__ import annotations

import random
import time

import numpy as np
import pytest

from cxrdistill.storage.store import EmbeddingStore
from store_helpers import DIM, INFO, assert_consistent, ids_for, start_writer, vecs

N = 1500


@pytest.fixture(scope="module")
def clean_store(tmp_path_factory):
    d = tmp_path_factory.mktemp("clean")
    st = EmbeddingStore.create(d / "s", (DIM,), "float16", INFO)
    ids = ids_for(N)
    st.append(ids, vecs(ids))
    return EmbeddingStore.open(d / "s")


def _finish_and_compare(path, clean):
    p = start_writer(path, N, 37)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    st = EmbeddingStore.open(path)
    assert_consistent(st, N)
    assert sorted(st.ids) == sorted(clean.ids)
    assert np.array_equal(st.get(clean.ids), clean.get(clean.ids))
    m = st.manifest
    assert sorted(c["name"] for c in m["chunks"]) == st.chunks  # every visible chunk is in the manifest


@pytest.mark.parametrize("point", ["after_tmp", "after_npy", "after_ids", "after_manifest"])
def test_kill_at_each_step_of_a_chunk_write(tmp_path, clean_store, point):
    path = tmp_path / "s"
    st = EmbeddingStore.create(path, (DIM,), "float16", INFO)
    st.append(ids_for(100), vecs(ids_for(100)))  # one complete chunk before the crash
    p = start_writer(path, N, 37, kill_at=point)
    p.communicate(timeout=60)
    assert p.returncode == -9  # SIGKILLed inside the chunk write
    ro = EmbeddingStore.open(path, "r")
    visible = 137 if point in ("after_ids", "after_manifest") else 100
    assert len(ro) == visible  # the chunk is visible only once its .ids (commit record) exists
    assert_consistent(ro, N)
    chunks_dir = path / "chunks"
    if point == "after_tmp":
        assert list(chunks_dir.glob(".tmp-*.npy"))  # a temp file, invisible
    if point == "after_npy":
        assert ro.verify()["orphan_files"]  # an .npy without .ids: invisible, reported
    listed = {c["name"] for c in ro.manifest["chunks"]}
    if point == "after_ids":
        assert len(listed) == 1 and ro.verify()["chunks_not_in_manifest"]  # died before the manifest update
        ap = EmbeddingStore.open(path, "a")  # reconcile: the complete chunk is adopted with its checksum
        assert len(ap.manifest["chunks"]) == 2 and not ap.verify()["chunks_not_in_manifest"]
    _finish_and_compare(path, clean_store)


def test_three_random_sigkills_then_completion(tmp_path, clean_store):
    path = tmp_path / "s"
    rng = random.Random(1234)
    seen = 0
    n_chunks = 0
    for kill in range(3):
        p = start_writer(path, N, 7)
        target = n_chunks + rng.randint(3, 12)  # let a few more chunks land, then kill at a random moment
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and p.poll() is None:
            n_files = len(list((path / "chunks").glob("*.ids"))) if (path / "chunks").exists() else 0
            if n_files >= target:
                break
            time.sleep(0.001)
        time.sleep(rng.random() * 0.01)
        p.kill()
        p.wait()
        assert p.returncode == -9, f"writer finished before kill {kill + 1}"
        st = EmbeddingStore.open(path, "r")
        assert 0 < len(st) < N
        assert len(st) >= seen  # nothing that was visible is lost
        assert_consistent(st, N)
        seen = len(st)
        n_chunks = len(st.chunks)
    _finish_and_compare(path, clean_store)


def test_the_failpoint_is_reachable_only_through_the_testing_hook(tmp_path, monkeypatch):
    """The environment variable that used to arm the failpoint does nothing; an unknown step is refused."""
    from cxrdistill.storage import store as S

    monkeypatch.setenv("CXRDISTILL_STORE_FAILPOINT", "after_npy")
    st = EmbeddingStore.create(tmp_path / "s", (DIM,), "float16", INFO)
    st.append(ids_for(10), vecs(ids_for(10)))  # would have SIGKILLed the test process
    assert len(EmbeddingStore.open(tmp_path / "s")) == 10
    with pytest.raises(ValueError, match="unknown failpoint"):
        S.kill_at_for_testing("before_anything")
    assert S._kill_at is None
