"""``cxrdistill embed`` against a real server: equals in-process, resumes, shards, survives faults, sends pixels only."""
from __future__ import annotations

import hashlib
import io
import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrdistill.cli import main
from cxrdistill.errors import CxrError, InputError
from cxrdistill.teachers.client import RetryPolicy, embed_cohort
from cxrdistill.teachers.faults import FaultSpec
from cxrdistill.storage.store import EmbeddingStore

from teacher_testlib import SIZE, TEACHER, TOKEN, assert_same_store


def _cli(capsys, *args) -> dict:
    main(["embed", *map(str, args), "--no-progress"])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def parse_request_log(log_dir: Path) -> list[dict]:
    """Read the server's request log and parse each body with the documented framing (not the library's parser)."""
    reqs = []
    for meta_path in sorted(log_dir.glob("*.json")):
        meta = json.loads(meta_path.read_text())
        body = meta_path.with_suffix(".body").read_bytes()
        frames, pos = [], 0
        while pos < len(body):
            (n,) = struct.unpack_from("<I", body, pos)
            frames.append(body[pos + 4:pos + 4 + n])
            pos += 4 + n
        assert pos == len(body)
        reqs.append({"seq": meta["seq"], "headers": dict(meta["headers"]), "body": body, "frames": frames,
                     "note": meta["note"]})
    return reqs


def png_chunks(data: bytes) -> list[str]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, types = 8, []
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        types.append(data[pos + 4:pos + 8].decode("latin-1"))
        pos += 12 + n
    return types


def pixel_hash(png: bytes) -> str:
    return hashlib.sha1(np.asarray(Image.open(io.BytesIO(png))).tobytes()).hexdigest()


def test_http_equals_in_process_and_resume_sends_nothing(cohort, clean_store, make_server, tmp_path, capsys,
                                                         monkeypatch, pixel_index):
    log_dir = tmp_path / "requests"
    srv, app, logs = make_server(token=TOKEN, log_dir=log_dir)
    monkeypatch.setenv("CXR_TOKEN", TOKEN)
    out = tmp_path / "store"
    args = ["--teacher", srv.url, "--cohort", cohort["table"], "--images-root", cohort["root"], "--out", out,
            "--token-env", "CXR_TOKEN", "--batch-size", 8, "--concurrency", 3]
    s1 = _cli(capsys, *args)
    n = len(cohort["df"])
    assert s1["embedded"] == n and s1["already"] == 0 and s1["requests"] == 1 + 9  # info + 72 / 8, no retries
    st = EmbeddingStore.open(out)
    assert_same_store(st, clean_store)
    assert st.info["name"] == "timm-resnet10t" and st.info["preprocess"] == {"size": SIZE, "mode": "resize"}
    assert st.verify()["ok"]
    n_logged = len(list(log_dir.glob("*.json")))
    s2 = _cli(capsys, *args)  # everything stored: nothing is sent again
    assert s2["embedded"] == 0 and s2["already"] == n
    assert len(list(log_dir.glob("*.json"))) == n_logged == 9

    # what the server received: PNGs with pixel chunks only, exactly the preprocessed pixels, nothing identifying
    reqs = parse_request_log(log_dir)
    arrived = [pixel_hash(f) for r in reqs for f in r["frames"]]
    assert sorted(pixel_index[h] for h in arrived) == sorted(cohort["df"].image_id)  # each image exactly once
    for r in reqs:
        assert set(r["headers"]) == {"host", "accept-encoding", "connection", "user-agent", "authorization",
                                     "content-type", "accept", "content-length"}
        assert r["headers"]["authorization"] == "<redacted>"
        assert r["headers"]["content-type"] == "application/x-cxrdistill-png-batch"
        for f in r["frames"]:
            assert set(png_chunks(f)) <= {"IHDR", "IDAT", "IEND"}  # no tEXt/zTXt/iTXt/tIME/eXIf chunks
        blob = r["body"] + json.dumps(r["headers"]).encode()
        for s in cohort["secrets"] + ["Smith", "Doe", "PatientID", ".png", ".dcm", ".jpg", TOKEN]:
            assert s.encode() not in blob, s
    assert TOKEN not in "".join(p.read_text() for p in log_dir.glob("*.json")) + logs.text


def test_sharded_extraction_fills_one_store(cohort, clean_store, make_server, tmp_path, capsys):
    srv, _, _ = make_server()
    out = tmp_path / "store"
    common = ["--teacher", srv.url, "--cohort", cohort["table"], "--images-root", cohort["root"], "--out", out,
              "--batch-size", 16]
    a = _cli(capsys, *common, "--shard", "0/2")
    b = _cli(capsys, *common, "--shard", "1/2")
    assert a["total"] > 10 and b["total"] > 10 and a["total"] + b["total"] == len(cohort["df"])
    st = EmbeddingStore.open(out)
    writers = {c.split("-")[0] for c in st.chunks}
    assert writers == {"shard0of2", "shard1of2"}
    assert_same_store(st, clean_store)
    # the in-process path with a split filter writes only that split
    out2 = tmp_path / "test_only"
    c = _cli(capsys, "--teacher", TEACHER, "--size", SIZE, "--cohort", cohort["table"], "--images-root",
             cohort["root"], "--out", out2, "--split", "test")
    test_ids = cohort["df"].image_id[cohort["df"].split == "test"].tolist()
    assert c["embedded"] == len(test_ids)
    assert_same_store(EmbeddingStore.open(out2), clean_store, ids=test_ids)


def test_faulty_server_still_gives_the_clean_store(cohort, clean_store, make_server, tmp_path):
    spec = FaultSpec.parse("5xx=0.2,429=0.1,drop=0.2,delay=0:0.02,seed=5")
    srv, app, _ = make_server(faults=spec)
    out = tmp_path / "store"
    res = embed_cohort(srv.url, cohort["table"], cohort["root"], out, batch_size=4, concurrency=4, progress=False,
                       retry=RetryPolicy(base=0.005, cap=0.05, max_attempts=30), seed=0)
    assert res.embedded == len(cohort["df"])
    assert res.retries > 0 and app.counts["drop"] > 0 and app.counts["5xx"] > 0 and app.counts["429"] > 0
    assert set(res.failures) >= {"HTTP 429", "connection failed"}
    assert_same_store(EmbeddingStore.open(out), clean_store)


def test_deadline_and_fatal_errors_keep_what_is_stored(cohort, clean_store, make_server, tmp_path, capsys):
    srv, _, _ = make_server(faults=FaultSpec.parse("delay=0.3:0.3"))
    out = tmp_path / "store"
    t0 = time.monotonic()
    with pytest.raises(CxrError, match="deadline of 1.5 s reached") as ei:  # 9 batches × 0.3 s one at a time
        embed_cohort(srv.url, cohort["table"], cohort["root"], out, batch_size=8, concurrency=1, deadline=1.5,
                     progress=False)
    assert time.monotonic() - t0 < 1.5 + 1.0  # stopped at the deadline, not at the end
    assert "rerun the same command" in str(ei.value)
    if (out / "manifest.json").exists():  # whatever was finished before the deadline is kept, and correct
        st = EmbeddingStore.open(out)
        assert len(st) < len(cohort["df"])
        assert_same_store(st, clean_store, ids=st.ids)
    # a wrong token is a one-line error (exit 2) that does not contain the token
    with pytest.raises(SystemExit) as ex:
        srv2, _, _ = make_server(token=TOKEN)
        import os
        os.environ["CXR_BAD"] = "not-the-token-9f8e"
        try:
            main(["embed", "--teacher", srv2.url, "--cohort", str(cohort["table"]), "--images-root",
                  str(cohort["root"]), "--out", str(tmp_path / "s2"), "--token-env", "CXR_BAD", "--no-progress"])
        finally:
            del os.environ["CXR_BAD"]
    assert ex.value.code == 2
    err = capsys.readouterr().err
    assert "401" in err and "not-the-token-9f8e" not in err and TOKEN not in err
    # an unset token variable is named in the error
    with pytest.raises(CxrError, match="NOPE_UNSET"):
        from cxrdistill.teachers.local import token_from_env
        token_from_env("NOPE_UNSET")


def test_unreadable_image_raise_or_skip(cohort, tmp_path, make_server):
    import pandas as pd

    df = cohort["df"].head(10).copy()
    bad = cohort["root"] / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    df.loc[3, "path"] = "broken.png"
    table = tmp_path / "c.parquet"
    df.to_parquet(table)
    srv, _, _ = make_server()
    with pytest.raises(InputError, match="broken.png"):
        embed_cohort(srv.url, table, cohort["root"], tmp_path / "a", batch_size=4, progress=False)
    res = embed_cohort(srv.url, table, cohort["root"], tmp_path / "b", batch_size=4, progress=False, on_error="skip")
    assert res.embedded == 9 and [i for i, _ in res.skipped] == [df.image_id[3]]
    dup = pd.concat([df, df.head(1)])
    dup.to_parquet(table)
    with pytest.raises(InputError, match="duplicate image_id"):
        embed_cohort(srv.url, table, cohort["root"], tmp_path / "c", progress=False)
