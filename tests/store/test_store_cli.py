"""``cxrdistill embeddings import|info|export|merge|compact`` run in-process through cxrdistill.cli.main."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cxrdistill.cli import main
from cxrdistill.storage.store import EmbeddingStore
from cxrdistill.teachers.tfrecord import encode_example, write_records


def _run(args, capsys):
    main(args)
    return capsys.readouterr().out


def test_cli_import_info_export_roundtrip(tmp_path, capsys):
    src = tmp_path / "tf"
    src.mkdir()
    E = np.random.default_rng(0).standard_normal((5, 32, 128)).astype(np.float32)
    for k in range(5):
        write_records(src / f"p{k}.tfrecord", [encode_example({"embedding": E[k].ravel()})])
    cohort = pd.DataFrame({"image_id": [f"id{k}" for k in range(6)],
                           "path": [f"train/p{k}.png" for k in range(6)]})
    cohort.to_parquet(tmp_path / "cohort.parquet")
    out = _run(["embeddings", "import", str(src), "--format", "cxr-foundation-tfrecord", "--out",
                str(tmp_path / "st"), "--cohort", str(tmp_path / "cohort.parquet"), "--pool", "mean",
                "--dtype", "float16", "--report", str(tmp_path / "rep.json"), "--no-progress"], capsys)
    assert "matched to cohort" in out and "missing from files" in out and "id5" in out
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["matched"] == 5 and rep["missing_from_files"] == ["id5"] and rep["stored_shape"] == [128]
    st = EmbeddingStore.open(tmp_path / "st")
    assert np.allclose(st["id3"].astype(np.float32), E[3].mean(0), atol=2e-3)

    out = _run(["embeddings", "info", str(tmp_path / "st"), "--verify", "--json"], capsys)
    d = json.loads(out)
    assert d["n"] == 5 and d["shape"] == [128] and d["dtype"] == "float16" and d["verify"]["ok"]
    assert d["teacher"]["version"] == "elixr-b-contrastive"
    assert "verify" in _run(["embeddings", "info", str(tmp_path / "st"), "--verify"], capsys)

    _run(["embeddings", "export", str(tmp_path / "st"), "--out", str(tmp_path / "e.npy")], capsys)
    X = np.load(tmp_path / "e.npy", allow_pickle=False)
    ids = (tmp_path / "e.ids.txt").read_text().split()
    assert X.shape == (5, 128) and ids == st.ids and np.array_equal(X, st.get(ids))
    _run(["embeddings", "export", str(tmp_path / "st"), "--out", str(tmp_path / "w.parquet"), "--wide"], capsys)
    W = pd.read_parquet(tmp_path / "w.parquet")
    assert list(W.columns[:3]) == ["image_id", "emb_0", "emb_1"] and len(W) == 5
    # exports re-import to the same values (npy and parquet importers)
    _run(["embeddings", "import", str(tmp_path / "e.npy"), "-f", "npy", "-o", str(tmp_path / "st2"),
          "--dtype", "float16", "--no-progress", "--name", "cxr-foundation", "--version", "elixr-b-contrastive"],
         capsys)
    _run(["embeddings", "import", str(tmp_path / "w.parquet"), "-f", "parquet", "-o", str(tmp_path / "st3"),
          "--dtype", "float16", "--no-progress"], capsys)
    for other in ("st2", "st3"):
        assert np.array_equal(EmbeddingStore.open(tmp_path / other).get(ids), st.get(ids))
    _run(["embeddings", "export", str(tmp_path / "st"), "--out", str(tmp_path / "npz"), "-f", "cxr-foundation-npz"],
         capsys)
    _run(["embeddings", "import", str(tmp_path / "npz"), "-f", "cxr-foundation-npz", "-o", str(tmp_path / "st4"),
          "--no-progress", "--name", "x"], capsys)
    assert np.array_equal(EmbeddingStore.open(tmp_path / "st4").get(ids), st.get(ids).astype(np.float32))

    _run(["embeddings", "merge", str(tmp_path / "st"), str(tmp_path / "st2"), "--out", str(tmp_path / "m")], capsys)
    assert len(EmbeddingStore.open(tmp_path / "m")) == 5
    _run(["embeddings", "compact", str(tmp_path / "st"), "--out", str(tmp_path / "c")], capsys)
    assert EmbeddingStore.open(tmp_path / "c").chunks == ["main-000001"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["embeddings", "info", str(tmp_path / "missing")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "missing: does not exist" in err and "Traceback" not in err
    (tmp_path / "x.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(SystemExit) as e:
        main(["embeddings", "import", str(tmp_path / "x.npy"), "-f", "npy", "-o", str(tmp_path / "s")])
    assert e.value.code == 2 and "x.npy" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["embeddings", "import", str(tmp_path), "-f", "hdf5", "-o", str(tmp_path / "s")])
    assert e.value.code == 2 and "unknown embedding file format 'hdf5'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    # A corrupt chunk: --verify fails with exit 2
    st = EmbeddingStore.create(tmp_path / "v", (4,), "float32", {"name": "t"})
    st.append(["a", "b"], np.ones((2, 4)))
    npy = next((tmp_path / "v" / "chunks").glob("*.npy"))
    b = bytearray(npy.read_bytes())
    b[-1] ^= 1
    npy.write_bytes(bytes(b))
    with pytest.raises(SystemExit) as e:
        main(["embeddings", "info", str(tmp_path / "v"), "--verify"])
    assert e.value.code == 2 and "sha256 mismatch" in capsys.readouterr().err
