"""EmbeddingStore: API contract, duplicates, validation, checksums, compaction, merge, shards."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cxrdistill.errors import InputError
from cxrdistill.storage.store import EmbeddingStore, parse_shard, select_shard, shard_of, shard_writer
from store_helpers import DIM, INFO, assert_consistent, ids_for, start_writer, vecs


def test_create_append_get_iterate(tmp_path):
    st = EmbeddingStore.create(tmp_path / "s", (DIM,), "float16", INFO)
    ids = ids_for(100)
    assert st.append(ids[:60], vecs(ids[:60])) == 60
    assert st.append(ids[40:], vecs(ids[40:])) == 40  # 40..59 already stored: skipped (first write wins)
    assert st.append(ids[:10], np.zeros((10, DIM))) == 0
    ro = EmbeddingStore.open(tmp_path / "s")
    assert len(ro) == 100 and ro.shape == (100, DIM) and ro.dtype == np.float16 and ro.item_shape == (DIM,)
    assert ro.info == INFO and ro.ids == ids
    assert ro.has("img00007") and "img00007" in ro and not ro.has("nope")
    assert ro.missing(["img00001", "x", "img00099", "y"]) == ["x", "y"]
    want = vecs(ids).astype(np.float16)
    assert np.array_equal(ro.get(["img00099", "img00000", "img00050"]), want[[99, 0, 50]])
    assert np.array_equal(ro["img00042"], want[42])
    got_ids, got = [], []
    for b, a in ro.iter_batches(32):
        assert len(b) == len(a) <= 32 and a.dtype == np.float16
        got_ids += b
        got.append(a)
    assert got_ids == ids and np.array_equal(np.concatenate(got), want)
    order = ["img00003", "img00090", "img00004", "img00002"]
    sub = list(ro.iter_batches(3, ids=order))
    assert [b for b, _ in sub] == [order[:3], order[3:]]
    assert np.array_equal(np.concatenate([a for _, a in sub]), want[[3, 90, 4, 2]])
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert m["teacher"] == INFO and m["shape"] == [DIM] and m["dtype"] == "float16" and m["created"]
    assert [c["rows"] for c in m["chunks"]] == [60, 40] and all(len(c["sha256"]) == 64 for c in m["chunks"])
    with pytest.raises(InputError, match="read-only"):
        ro.append(["z"], np.zeros((1, DIM)))
    with pytest.raises(InputError, match="not in the embedding store"):
        ro.get(["img00001", "ghost"])


def test_token_shapes_and_fp32(tmp_path):
    st = EmbeddingStore.create(tmp_path / "t", (4, 3), np.float32, {"name": "tok"})
    a = np.arange(2 * 12, dtype=np.float64).reshape(2, 4, 3)
    st.append(["a", "b"], a)
    assert st.shape == (2, 4, 3) and np.array_equal(st.get(["b"])[0], a[1].astype(np.float32))
    assert next(st.iter_batches(8))[1].shape == (2, 4, 3)


def test_input_validation(tmp_path):
    st = EmbeddingStore.create(tmp_path / "s", (DIM,), "float16", INFO)
    with pytest.raises(InputError, match="appears twice in one append"):
        st.append(["a", "a"], np.zeros((2, DIM)))
    with pytest.raises(InputError, match=r"shape \(8,\) cannot go into a store of shape \(16,\)"):
        st.append(["a"], np.zeros((1, 8)))
    with pytest.raises(InputError, match="2 ids but an array of shape"):
        st.append(["a", "b"], np.zeros((3, DIM)))
    bad = np.zeros((2, DIM))
    bad[1, 3] = np.nan
    with pytest.raises(InputError, match="'b' contains NaN"):
        st.append(["a", "b"], bad)
    with pytest.raises(InputError, match="overflows float16"):
        st.append(["a"], np.full((1, DIM), 1e6))
    with pytest.raises(InputError, match="invalid image id"):
        st.append(["a\nb"], np.zeros((1, DIM)))
    assert len(EmbeddingStore.open(tmp_path / "s")) == 0  # nothing half-written
    with pytest.raises(InputError, match="not supported"):
        EmbeddingStore.create(tmp_path / "x", (DIM,), "float64", INFO)
    with pytest.raises(InputError, match="already exists"):
        EmbeddingStore.create(tmp_path / "s", (DIM,), "float16", INFO)
    with pytest.raises(InputError, match=r"another kind: shape per item \(16,\) ≠ \(8,\)"):
        EmbeddingStore.open_or_create(tmp_path / "s", (8,), "float16", INFO)
    with pytest.raises(InputError, match="teacher version '1' ≠ '2'"):
        EmbeddingStore.open_or_create(tmp_path / "s", (DIM,), "float16", {"name": "test-teacher", "version": "2"})
    with pytest.raises(InputError, match="does not exist"):
        EmbeddingStore.open(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "f").write_text("x")
    with pytest.raises(InputError, match="not an embedding store"):
        EmbeddingStore.open(tmp_path / "plain")


def test_verify_detects_corruption_and_truncation(tmp_path):
    st = EmbeddingStore.create(tmp_path / "s", (DIM,), "float16", INFO)
    ids = ids_for(50)
    st.append(ids[:25], vecs(ids[:25]))
    st.append(ids[25:], vecs(ids[25:]))
    assert st.verify()["ok"]
    npy = sorted((tmp_path / "s" / "chunks").glob("*.npy"))[1]
    b = bytearray(npy.read_bytes())
    b[-5] ^= 0xFF  # one flipped bit of data: same size, only the checksum can tell
    npy.write_bytes(bytes(b))
    rep = EmbeddingStore.open(tmp_path / "s").verify()
    assert not rep["ok"] and "sha256 mismatch" in rep["problems"][0] and npy.stem in rep["problems"][0]
    npy.write_bytes(bytes(b[:-64]))
    with pytest.raises(InputError, match="truncated file"):
        EmbeddingStore.open(tmp_path / "s")
    npy.unlink()
    (npy.with_suffix(".ids")).unlink()
    with pytest.raises(InputError, match="listed in the manifest are missing"):
        EmbeddingStore.open(tmp_path / "s")


def test_compact_and_duplicate_resolution(tmp_path):
    a = EmbeddingStore.create(tmp_path / "s", (DIM,), "float16", INFO, writer="w1")
    ids = ids_for(30)
    a.append(ids[:20], vecs(ids[:20]))
    b = EmbeddingStore.open(tmp_path / "s", "a", writer="w2")  # opened after a's chunk: skips ids 10..19
    assert b.append(ids[10:], np.zeros((20, DIM))) == 10
    st = EmbeddingStore.open(tmp_path / "s")
    assert st.chunks == ["w1-000001", "w2-000001"]
    assert len(st) == 30 and st.verify()["duplicate_rows"] == 0
    assert np.array_equal(st.get(ids[10:20]), vecs(ids[10:20]).astype(np.float16))
    # Force a duplicate: a writer that opened before the other wrote.
    c1 = EmbeddingStore.create(tmp_path / "d", (DIM,), "float16", INFO, writer="w1")
    c2 = EmbeddingStore.open(tmp_path / "d", "a", writer="w2")
    c1.append(ids[:20], vecs(ids[:20]))
    c2.append(ids[10:], np.zeros((20, DIM)))
    d = EmbeddingStore.open(tmp_path / "d")
    assert len(d) == 30 and d.verify()["duplicate_rows"] == 10
    assert np.array_equal(d.get(ids[10:20]), vecs(ids[10:20]).astype(np.float16))  # first chunk by name wins
    assert sum(len(x) for x, _ in d.iter_batches(7)) == 30
    comp = d.compact(tmp_path / "dc")
    assert comp.chunks == ["main-000001"] and len(comp) == 30 and comp.verify()["ok"]
    assert comp.verify()["duplicate_rows"] == 0
    assert np.array_equal(comp.get(ids), d.get(ids))


def test_shards_two_concurrent_writers_one_directory(tmp_path):
    n = 400
    EmbeddingStore.create(tmp_path / "s", (DIM,), "float16", INFO)
    procs = [start_writer(tmp_path / "s", n, 13, shard=f"{i}/2") for i in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    st = EmbeddingStore.open(tmp_path / "s")
    assert len(st) == n and set(st.ids) == set(ids_for(n))
    assert_consistent(st, n)
    m = st.manifest
    assert {c["writer"] for c in m["chunks"]} == {"shard0of2", "shard1of2"}
    assert len(m["chunks"]) == len(st.chunks)  # the manifest lock kept every chunk entry
    # The same shards written to separate stores (two machines), then merged.
    for i in range(2):
        p = start_writer(tmp_path / f"m{i}", n, 50, shard=f"{i}/2")
        assert p.wait(timeout=60) == 0
    merged = EmbeddingStore.merge([tmp_path / "m0", tmp_path / "m1"], tmp_path / "merged")
    assert sorted(merged.ids) == sorted(st.ids)
    assert np.array_equal(merged.get(st.ids), st.get(st.ids))
    other = EmbeddingStore.create(tmp_path / "o", (DIM,), "float16", {"name": "other"})
    with pytest.raises(InputError, match="teacher name"):
        EmbeddingStore.merge([tmp_path / "m0", other], tmp_path / "bad")


def test_shard_helpers():
    ids = ids_for(1000)
    parts = [select_shard(ids, f"{i}/3") for i in range(3)]
    assert sorted(sum(parts, [])) == ids and all(200 < len(p) < 470 for p in parts)
    assert select_shard(ids, None) == ids
    assert shard_of("abc", 7) == shard_of("abc", 7) and parse_shard("1/4") == (1, 4)
    assert shard_writer("2/4") == "shard2of4" and shard_writer(None) == "main"
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(InputError, match="invalid shard"):
            parse_shard(bad)
