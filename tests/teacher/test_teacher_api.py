"""The teacher HTTP API on a real uvicorn server (127.0.0.1): endpoints, auth, limits, formats, fault injection."""
from __future__ import annotations

import asyncio
import base64
import struct

import httpx
import numpy as np
import pytest

from cxrdistill.errors import CxrError, InputError
from cxrdistill.images.decode import encode_png
from cxrdistill.teachers import wire
from cxrdistill.teachers.client import RemoteTeacher, RetryPolicy
from cxrdistill.teachers.faults import FaultSpec

from teacher_testlib import SIZE, TOKEN


def _imgs(n, size=SIZE, seed=0):
    return (np.random.default_rng(seed).random((n, size, size)) * 255).astype(np.uint8)


def _frames(pngs):  # the documented request format, written independently of wire.pack_images
    return b"".join(struct.pack("<I", len(p)) + p for p in pngs)


def test_info_healthz_and_embed_match_in_process(make_server, teacher):
    srv, app, _ = make_server()
    with httpx.Client(base_url=srv.url) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        info = c.get("/v1/info").json()
        assert info["embedding_shape"] == [512] and info["image_size"] == SIZE and info["name"] == "timm-resnet10t"
        assert info["limits"]["max_batch"] == 64
        assert not any("weight" in k or "state" in k for k in info)  # nothing about the weights
        x = _imgs(5)
        r = c.post("/v1/embed", content=_frames([encode_png(i) for i in x]),
                   headers={"Content-Type": wire.PNG_BATCH})
        assert r.status_code == 200 and r.headers["x-embedding-shape"] == "5,512"
        assert r.headers["x-embedding-dtype"] == "float32"
        got = np.frombuffer(r.content, "<f4").reshape(5, 512)
        np.testing.assert_allclose(got, teacher.embed(x), rtol=1e-5, atol=1e-6)
        # the same images as multipart (curl -F), JSON response with base64: the same numbers
        files = [("images", (f"whatever{k}.png", encode_png(i), "image/png")) for k, i in enumerate(x)]
        rj = c.post("/v1/embed", files=files, headers={"Accept": "application/json"}).json()
        assert rj["shape"] == [5, 512] and rj["dtype"] == "float32"
        np.testing.assert_array_equal(np.frombuffer(base64.b64decode(rj["data"]), "<f4").reshape(5, 512), got)
        # a larger image is resized by the server to the teacher's input size
        big = np.kron(x[0], np.ones((2, 2), np.uint8))
        r2 = c.post("/v1/embed", content=_frames([encode_png(big)]), headers={"Content-Type": wire.PNG_BATCH})
        assert r2.status_code == 200 and r2.headers["x-embedding-shape"] == "1,512"


def test_auth_rejects_and_never_leaks_the_token(make_server, capfd):
    srv, _, logs = make_server(token=TOKEN)
    wrong = "wrong-" + TOKEN[::-1]
    with httpx.Client(base_url=srv.url) as c:
        assert c.get("/healthz").status_code == 200  # liveness needs no token
        for headers in ({}, {"Authorization": f"Bearer {wrong}"}, {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": f"Bearer {TOKEN[:-1]}"}):
            for method, path in (("GET", "/v1/info"), ("POST", "/v1/embed")):
                r = c.request(method, path, headers=headers, content=b"x" if method == "POST" else None)
                assert r.status_code == 401, (headers, path)
                assert r.json()["detail"] == "missing or invalid bearer token"
                assert r.headers["www-authenticate"] == "Bearer"
                assert TOKEN not in r.text and wrong not in r.text
        ok = c.get("/v1/info", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and TOKEN not in ok.text

    async def client_errors():
        msgs = []
        for tok in (None, wrong):
            async with RemoteTeacher(srv.url, tok) as t:
                with pytest.raises(CxrError) as ei:
                    await t.info()
                msgs += [str(ei.value), repr(ei.value), repr(t)]
                assert "401" in str(ei.value) and "--token-env" in str(ei.value)
        async with RemoteTeacher(srv.url, TOKEN) as t:
            assert (await t.info()).image_size == SIZE
            msgs.append(repr(t))
        return msgs

    msgs = asyncio.run(client_errors())
    out, err = capfd.readouterr()
    haystack = "\n".join(msgs) + logs.text + out + err
    assert "401" in logs.text  # the access log did record the refusals ...
    assert TOKEN not in haystack and wrong not in haystack  # ... but never a token


def test_limits_and_bad_input_get_4xx_with_a_message(make_server):
    srv, _, _ = make_server(max_batch=4, max_request_bytes=20_000)
    ok = encode_png(_imgs(1)[0])
    cases = [
        (_frames([ok] * 5), wire.PNG_BATCH, 413, "at most 4"),
        (_frames([encode_png(_imgs(1, size=200)[0])] * 1), wire.PNG_BATCH, 413, "exceeds the server limit"),
        (_frames([b"this is not an image"]), wire.PNG_BATCH, 400, "image 0"),
        (_frames([ok, ok[:60]]), wire.PNG_BATCH, 400, "image 1"),
        (_frames([ok])[:-10], wire.PNG_BATCH, 400, "malformed"),
        (b"", wire.PNG_BATCH, 400, "no images"),
        (b"{}", "application/json", 415, "unsupported Content-Type"),
    ]
    with httpx.Client(base_url=srv.url) as c:
        for body, ctype, status, msg in cases:
            r = c.post("/v1/embed", content=body, headers={"Content-Type": ctype})
            assert r.status_code == status, (msg, r.status_code, r.text)
            assert msg in r.json()["detail"], (msg, r.text)
        # chunked upload without Content-Length is cut off at the limit as well
        r = c.post("/v1/embed", content=iter([b"\0" * 15_000, b"\0" * 15_000]), headers={"Content-Type": wire.PNG_BATCH})
        assert r.status_code == 413
        # a PNG declaring a huge canvas (decompression bomb) is refused before decoding
        bomb = encode_png(np.zeros((8, 8), np.uint8))
        bomb = bomb[:16] + struct.pack(">II", 60000, 60000) + bomb[24:]
        r = c.post("/v1/embed", content=_frames([bomb]), headers={"Content-Type": wire.PNG_BATCH})
        assert r.status_code == 400 and "image 0" in r.json()["detail"]
        assert c.get("/healthz").status_code == 200  # still alive


def test_wire_roundtrip_and_truncation():
    pngs = [b"a" * 3, b"", b"xyz" * 100]
    assert wire.unpack_images(wire.pack_images(pngs)) == pngs
    with pytest.raises(wire.WireError):
        wire.unpack_images(wire.pack_images(pngs)[:-1])
    with pytest.raises(wire.WireError):
        wire.unpack_images(wire.pack_images(pngs), max_items=2)
    a = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float16)
    data, h = wire.encode_embeddings(a)
    np.testing.assert_array_equal(wire.decode_embeddings(data, h["X-Embedding-Shape"], h["X-Embedding-Dtype"]), a)
    with pytest.raises(wire.WireError):
        wire.decode_embeddings(data[:-2], h["X-Embedding-Shape"], h["X-Embedding-Dtype"])
    np.testing.assert_array_equal(wire.embeddings_from_json(wire.embeddings_json(a)), a)


def test_fault_spec_parsing():
    s = FaultSpec.parse("5xx=0.1, delay=0.05:0.3,drop=0.05,429=0.2,seed=3")
    assert (s.p5xx, s.delay, s.drop, s.p429, s.seed) == (0.1, (0.05, 0.3), 0.05, 0.2, 3)
    assert FaultSpec.parse("delay=0.2").delay == (0.0, 0.2)
    assert FaultSpec.parse("") is None
    for bad in ("5xx=2", "explode=0.1", "delay=0.3:0.1", "drop"):
        with pytest.raises(InputError, match="--faults"):
            FaultSpec.parse(bad)


def test_client_survives_faults_and_gives_up_boundedly(make_server, teacher):
    x = _imgs(24, seed=3)
    ref = teacher.embed(x)
    srv, app, logs = make_server(faults=FaultSpec.parse("5xx=0.25,429=0.15,drop=0.25,delay=0:0.01,seed=11"))

    async def run(url, attempts):
        async with RemoteTeacher(url, retry=RetryPolicy(base=0.005, cap=0.02, max_attempts=attempts), seed=1) as t:
            outs = await asyncio.gather(*[t.embed_pngs([encode_png(i) for i in x[k:k + 4]])
                                          for k in range(0, 24, 4)])
            return np.concatenate(outs), t.stats

    got, stats = asyncio.run(run(srv.url, 40))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert stats["retries"] > 0 and app.counts["drop"] > 0 and app.counts["5xx"] > 0 and app.counts["429"] > 0
    assert "Traceback" not in logs.text  # injected drops are not logged as server errors

    srv2, _, _ = make_server(faults=FaultSpec.parse("5xx=1"))
    with pytest.raises(CxrError, match="failed 3 times"):
        asyncio.run(run(srv2.url, 3))


def test_teacher_specs_resolve_or_fail_clearly(tmp_path, teacher):
    from cxrdistill.teachers.local import TEACHERS, resolve_teacher

    assert {"torch", "timm"} <= set(TEACHERS.names())
    with pytest.raises(CxrError, match="unknown teacher kind 'onnx'"):
        resolve_teacher("onnx:model.onnx")
    with pytest.raises(InputError, match="teacher checkpoint not found"):
        resolve_teacher(f"torch:{tmp_path / 'nope.safetensors'}")
    with pytest.raises(InputError, match="not KIND:ARG"):
        resolve_teacher("resnet18")
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="safetensors"):
        resolve_teacher(f"torch:{bad}")
    # the same random-init timm teacher twice gives the same embeddings (seeded), any input size is resized
    x = _imgs(3, size=48)
    again = resolve_teacher("timm:resnet10t", image_size=SIZE)
    np.testing.assert_array_equal(again.embed(x), teacher.embed(x))
    assert teacher.embed(x).shape == (3, 512) and teacher.embed(x[0]).shape == (1, 512)
