"""Importers: CXR Foundation .npz / .tfrecord (v1, ELIXR-B, ELIXR-C), .npy + ids, Parquet; pooling; cohort matching."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrdistill.errors import InputError
from cxrdistill.teachers.importers import import_embeddings, match_ids
from cxrdistill.storage.store import EmbeddingStore
from cxrdistill.teachers.tfrecord import encode_example, write_records

# (stored per file, expected tokens) for each CXR Foundation output
SHAPES = {"v1": ((1, 1376), (1376,)), "elixr-b": ((1, 32, 768), (32, 768)),
          "elixr-b-contrastive": ((1, 32, 128), (32, 128)), "elixr-c": ((1, 8, 8, 1376), (64, 1376))}


def _emb(k: int, shape) -> np.ndarray:
    return (np.random.default_rng(k).standard_normal(shape)).astype(np.float32)


def _write_npz_tree(root, shape, n=4, key="embedding"):
    out = {}
    for k in range(n):
        rel = f"patient{k:02d}/study1/view1_frontal"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        a = _emb(k, shape)
        np.savez(root / f"{rel}.npz", **{key: a})
        out[rel] = a
    return out


@pytest.mark.parametrize("variant", list(SHAPES))
def test_npz_all_shapes(tmp_path, variant):
    file_shape, tokens = SHAPES[variant]
    src = _write_npz_tree(tmp_path / "src", file_shape, n=3)
    rep = import_embeddings("cxr-foundation-npz", tmp_path / "src", tmp_path / "st")
    st = EmbeddingStore.open(tmp_path / "st")
    assert rep.imported == 3 and st.item_shape == tokens and st.dtype == np.float32
    assert st.info["name"] == "cxr-foundation" and st.info["version"] == variant
    for rel, a in src.items():
        assert np.array_equal(st[rel], a.reshape(tokens))


def test_pooling_options(tmp_path):
    src = _write_npz_tree(tmp_path / "src", (1, 32, 128), n=3)
    rel, a = next(iter(src.items()))
    a = a[0]
    expect = {"none": a, "mean": a.mean(0), "cls": a[0], "flatten": a.reshape(-1)}
    for pool, want in expect.items():
        rep = import_embeddings("cxr-foundation-npz", tmp_path / "src", tmp_path / pool, pool=pool, dtype="float16")
        st = EmbeddingStore.open(tmp_path / pool)
        assert st.item_shape == want.shape and rep.stored_shape == want.shape and st.info["pool"] == pool
        assert np.allclose(st[rel].astype(np.float32), want, atol=2e-3)
    # v1 vectors have no token axis: any pooling leaves them alone
    _write_npz_tree(tmp_path / "v1", (1376,), n=2)
    import_embeddings("cxr-foundation-npz", tmp_path / "v1", tmp_path / "v1st", pool="mean")
    assert EmbeddingStore.open(tmp_path / "v1st").item_shape == (1376,)
    with pytest.raises(InputError, match="unknown pooling"):
        import_embeddings("cxr-foundation-npz", tmp_path / "src", tmp_path / "x", pool="max")


def test_npz_errors_and_id_from(tmp_path):
    src = tmp_path / "src"
    _write_npz_tree(src, (1376,), n=2)
    with pytest.raises(InputError, match="two files give the same id 'view1_frontal'"):
        import_embeddings("cxr-foundation-npz", src, tmp_path / "s", id_from="stem")
    flat = tmp_path / "flat"
    flat.mkdir()
    np.savez(flat / "a.npz", embedding=np.ones(1376, np.float32))
    np.savez(flat / "b.npz", other=np.ones(1376, np.float32))
    with pytest.raises(InputError, match=r"b\.npz: has no array 'embedding' \(it has: other\)"):
        import_embeddings("cxr-foundation-npz", flat, tmp_path / "s2", id_from="stem")
    (flat / "b.npz").unlink()
    np.savez(flat / "c.npz", embedding=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(InputError, match="pickled objects, which are refused"):
        import_embeddings("cxr-foundation-npz", flat, tmp_path / "s3", id_from="stem")
    (flat / "c.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(InputError, match=r"c\.npz: cannot be read as \.npz"):
        import_embeddings("cxr-foundation-npz", flat, tmp_path / "s4", id_from="stem")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no .npz files"):
        import_embeddings("cxr-foundation-npz", tmp_path / "empty", tmp_path / "s5")


@pytest.mark.parametrize("variant", list(SHAPES))
def test_tfrecord_all_shapes(tmp_path, variant):
    file_shape, tokens = SHAPES[variant]
    src = tmp_path / "src"
    src.mkdir()
    want = {}
    for k in range(3):
        a = _emb(k, file_shape)
        write_records(src / f"img{k}.tfrecord", [encode_example({"embedding": a.ravel()})])  # a flat float list
        want[f"img{k}"] = a.reshape(tokens)
    import_embeddings("cxr-foundation-tfrecord", src, tmp_path / "st", check_crc=(variant == "v1"))
    st = EmbeddingStore.open(tmp_path / "st")
    assert st.item_shape == tokens and st.info["version"] == variant
    for i, a in want.items():
        assert np.array_equal(st[i], a)


def test_tfrecord_shapes_multi_record_and_errors(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    a = _emb(0, (10, 6))
    write_records(src / "x.tfrecord", [encode_example({"embedding": a.ravel()})])
    with pytest.raises(InputError, match="60 values, not a known CXR Foundation shape.*--shape"):
        import_embeddings("cxr-foundation-tfrecord", src, tmp_path / "s")
    import_embeddings("cxr-foundation-tfrecord", src, tmp_path / "s", shape="10x6")
    assert np.array_equal(EmbeddingStore.open(tmp_path / "s")["x"], a)
    # shape given inside the record
    write_records(src / "x.tfrecord", [encode_example({"embedding": a.ravel(), "embedding/shape": np.array([10, 6])})])
    import_embeddings("cxr-foundation-tfrecord", src, tmp_path / "s2")
    assert EmbeddingStore.open(tmp_path / "s2").item_shape == (10, 6)
    # several records per file, ids inside
    multi = tmp_path / "multi"
    multi.mkdir()
    recs = [encode_example({"embedding": _emb(k, 1376), "image_id": f"m{k}".encode()}) for k in range(4)]
    write_records(multi / "all.tfrecord", recs)
    import_embeddings("cxr-foundation-tfrecord", multi, tmp_path / "s3")
    st = EmbeddingStore.open(tmp_path / "s3")
    assert st.ids == ["m0", "m1", "m2", "m3"] and np.array_equal(st["m2"], _emb(2, 1376))
    write_records(multi / "all.tfrecord", [encode_example({"embedding": _emb(k, 1376)}) for k in range(2)])
    with pytest.raises(InputError, match="holds 2 records but record 0 has no bytes feature 'image_id'"):
        import_embeddings("cxr-foundation-tfrecord", multi, tmp_path / "s4")
    (multi / "all.tfrecord").write_bytes(b"garbage garbage garbage")
    with pytest.raises(InputError, match=r"all\.tfrecord: is not a valid TFRecord"):
        import_embeddings("cxr-foundation-tfrecord", multi, tmp_path / "s5")
    write_records(multi / "all.tfrecord", [encode_example({"vec": _emb(0, 1376)})])
    with pytest.raises(InputError, match="no float feature 'embedding' \\(features: vec\\)"):
        import_embeddings("cxr-foundation-tfrecord", multi, tmp_path / "s6")


def test_npy_and_parquet(tmp_path):
    X = _emb(1, (5, 8, 8, 16))  # ELIXR-C-like spatial maps in one array
    np.save(tmp_path / "e.npy", X)
    (tmp_path / "e.ids.txt").write_text("\n".join(f"n{k}" for k in range(5)) + "\n")
    import_embeddings("npy", tmp_path / "e.npy", tmp_path / "s1", pool="mean")
    st = EmbeddingStore.open(tmp_path / "s1")
    assert st.item_shape == (16,) and np.allclose(st["n3"], X[3].reshape(64, 16).mean(0), atol=1e-6)
    (tmp_path / "e.ids.txt").write_text("a\nb\n")
    with pytest.raises(InputError, match="ids file has 2 ids but the array has 5 rows"):
        import_embeddings("npy", tmp_path / "e.npy", tmp_path / "s2")
    np.save(tmp_path / "obj.npy", np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match=r"obj\.npy: cannot be read as \.npy"):
        import_embeddings("npy", tmp_path / "obj.npy", tmp_path / "s3", ids_file=tmp_path / "e.ids.txt")
    # Parquet, wide emb_* columns
    W = _emb(2, (6, 4))
    df = pd.DataFrame({"image_id": [f"w{k}" for k in range(6)], **{f"emb_{j}": W[:, j] for j in range(4)}})
    df.to_parquet(tmp_path / "w.parquet")
    import_embeddings("parquet", tmp_path / "w.parquet", tmp_path / "s4", batch_size=4)
    assert np.array_equal(EmbeddingStore.open(tmp_path / "s4").get(["w5", "w0"]), W[[5, 0]])
    # Parquet, one list column holding (T, D)
    T = _emb(3, (3, 2, 5))
    pd.DataFrame({"image_id": ["a", "b", "c"], "embedding": [t.tolist() for t in T]}).to_parquet(tmp_path / "l.pq")
    import_embeddings("parquet", tmp_path / "l.pq", tmp_path / "s5", pool="cls")
    st5 = EmbeddingStore.open(tmp_path / "s5")
    assert st5.item_shape == (5,) and np.allclose(st5["c"], T[2, 0])
    pd.DataFrame({"image_id": ["a"], "emb_0": [1.0], "emb_2": [2.0]}).to_parquet(tmp_path / "gap.parquet")
    with pytest.raises(InputError, match="emb_0 … emb_"):
        import_embeddings("parquet", tmp_path / "gap.parquet", tmp_path / "s6")


def test_cohort_matching_report_strict_and_resume(tmp_path):
    src = _write_npz_tree(tmp_path / "src", (1376,), n=4)  # patient00..03/study1/view1_frontal
    cohort = pd.DataFrame({
        "image_id": ["CXP/patient00/study1/view1_frontal", "CXP/patient01/study1/view1_frontal", "img2", "extra"],
        "path": ["CheXpert-v1.0/train/patient00/study1/view1_frontal.jpg",
                 "CheXpert-v1.0/train/patient01/study1/view1_frontal.jpg",
                 "train/patient02/study1/view1_frontal.png", "train/patient99/study1/view1_frontal.png"]})
    with pytest.raises(InputError, match=r"1 id\(s\) in the files are not in the cohort .* 1 cohort image"):
        import_embeddings("cxr-foundation-npz", tmp_path / "src", tmp_path / "st", cohort=cohort, strict=True)
    assert not (tmp_path / "st").exists()  # strict fails before writing anything
    rep = import_embeddings("cxr-foundation-npz", tmp_path / "src", tmp_path / "st", cohort=cohort)
    assert rep.matched == 3 and rep.imported == 3
    assert rep.unmatched_in_files == ["patient03/study1/view1_frontal"] and rep.missing_from_files == ["extra"]
    st = EmbeddingStore.open(tmp_path / "st")
    assert sorted(st.ids) == sorted(cohort.image_id[:3])  # stored under the cohort's image_id
    assert np.array_equal(st["img2"], src["patient02/study1/view1_frontal"])
    again = import_embeddings("cxr-foundation-npz", tmp_path / "src", tmp_path / "st", cohort=cohort)
    assert again.imported == 0 and again.already_stored == 3  # resumable / idempotent
    with pytest.raises(InputError, match="none of the 4 ids in the files match the cohort"):
        import_embeddings("cxr-foundation-npz", tmp_path / "src", tmp_path / "st2",
                          cohort=pd.DataFrame({"image_id": ["zz"], "path": ["q/zz.png"]}))


def test_match_ids_ambiguous_suffix():
    cohort = pd.DataFrame({"image_id": ["a", "b"], "path": ["x/p1/v.png", "y/p1/v.png"]})
    m = match_ids(["p1/v", "x/p1/v"], cohort)
    assert m.to_image_id == {"x/p1/v": "a"} and m.ambiguous == ["p1/v"] and m.missing_from_files == ["b"]
