"""The teacher API, attacked from both sides: a real ``cxrdistill teacher serve`` process (127.0.0.1, bearer token
from ``--token-env``, every request kept with ``--log-requests``) and the real ``cxrdistill embed`` client.

* Pixels only: a cohort whose DICOM files carry PatientName / PatientID, whose PNGs carry a text chunk with a patient
  id, whose JPEG carries a comment, all under identifying file names and image ids, is embedded through the API; the
  server's request log shows that none of those strings arrived, and every received image is a bare 8-bit PNG
  (IHDR / IDAT / IEND only) of the preprocessed size.
* The token never leaks: after successful and failing requests (wrong token, missing variable, bad body), the token
  — and the wrong token a user tried — appear nowhere in the server's stdout/stderr, its request log, its command
  line, the client's output, its errors or the store it wrote.
"""
from __future__ import annotations

import io
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "corpus"))

import corpus_files as cf  # noqa: E402

from cxrdistill.cli import main  # noqa: E402

TOKEN = "tok-7Hq2-SECRET-api-key-0042"
WRONG = "wrong-SECRET-typo-9931"
SECRETS = ["Doe^Jane", "Jane", "PID-SECRET-1234", "PID-SECRET-5678", "PID-SECRET-9012", "confidential", "smithjane",
           "SMITHJANE-img"]
SIZE = 32


def _start_server(tmp: Path) -> dict:
    log_dir, out, err = tmp / "requests", tmp / "server.out", tmp / "server.err"
    env = {**os.environ, "CXR_SEC_TOKEN": TOKEN, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "cxrdistill", "teacher", "serve", "timm:resnet10t", "--port", "0",
            "--image-size", str(SIZE), "--token-env", "CXR_SEC_TOKEN", "--log-requests", str(log_dir),
            "--threads", "1", "--max-batch", "8"]
    proc = subprocess.Popen(argv, stdout=open(out, "wb"), stderr=open(err, "wb"), env=env)
    t0 = time.monotonic()
    while True:
        m = re.search(r"serving at (http://\S+)", err.read_text(errors="replace"))
        if m:
            break
        if proc.poll() is not None or time.monotonic() - t0 > 90:
            proc.kill()
            raise AssertionError(f"server did not start: {err.read_text(errors='replace')}")
        time.sleep(0.1)
    return {"url": m.group(1), "proc": proc, "log_dir": log_dir, "out": out, "err": err}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = _start_server(tmp_path_factory.mktemp("server"))
    yield s
    if s["proc"].poll() is None:
        s["proc"].terminate()
        s["proc"].wait(30)


@pytest.fixture(scope="module")
def identifying_cohort(tmp_path_factory):
    """PNGs with a PatientID text chunk, DICOMs with PatientName/PatientID, a JPEG with a comment; identifying names."""
    from PIL import Image

    d = tmp_path_factory.mktemp("identifying")
    root = d / "images"
    rows = []
    for k in range(6):
        arr = cf.gradient(seed=k)
        if k < 3:
            rel = f"smithjane/confidential_smithjane_{k}.png"
            cf.png(root / rel, arr, PatientID="PID-SECRET-1234", Comment="patient Doe^Jane")
        elif k < 5:
            rel = f"smithjane/confidential_{k}.dcm"
            cf.dicom(root / rel, arr, patient="Doe^Jane", patient_id="PID-SECRET-5678")
        else:
            rel = "smithjane/confidential_scan.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / rel, format="JPEG", quality=95, comment=b"PID-SECRET-9012 Doe^Jane")
        rows.append({"image_id": f"SMITHJANE-img{k}", "patient_id": "PID-SECRET-1234", "path": rel})
    table = d / "cohort.parquet"
    pd.DataFrame(rows).to_parquet(table)
    # the secrets really are in the source files (else the test below proves nothing)
    raw = b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file())
    for s in ("PID-SECRET-1234", "PID-SECRET-5678", "PID-SECRET-9012", "Doe^Jane"):
        assert s.encode() in raw, s
    return table, root


def _png_chunks(b: bytes) -> list[str]:
    assert b[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, kinds = 8, []
    while pos < len(b):
        (n,) = struct.unpack(">I", b[pos:pos + 4])
        kinds.append(b[pos + 4:pos + 8].decode("latin-1"))
        pos += 12 + n
    return kinds


def _run(argv, capsys) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_server_receives_pixels_only(server, identifying_cohort, tmp_path, capsys, monkeypatch):
    from PIL import Image

    from cxrdistill.teachers import wire

    table, root = identifying_cohort
    monkeypatch.setenv("CXR_SEC_TOKEN", TOKEN)
    before = set(server["log_dir"].glob("*.body")) if server["log_dir"].exists() else set()
    code, out, err = _run(["embed", "--teacher", server["url"], "--token-env", "CXR_SEC_TOKEN", "--cohort", str(table),
                           "--images-root", str(root), "--out", str(tmp_path / "store"), "--batch-size", "4",
                           "--no-progress"], capsys)
    assert code == 0, err
    bodies = sorted(set(server["log_dir"].glob("*.body")) - before)
    assert bodies, "the request log recorded nothing"
    received = 0
    for body in bodies:
        data = body.read_bytes()
        head = body.with_suffix(".json").read_text(encoding="utf-8")
        for blob in (data, head.encode()):
            low = blob.lower()
            for s in SECRETS + [str(root), table.name]:
                assert s.lower().encode() not in low, f"{s!r} reached the server in {body.name}"
                assert s.encode("utf-16-le") not in blob, f"{s!r} (UTF-16) reached the server in {body.name}"
        for png in wire.unpack_images(data):
            kinds = _png_chunks(png)
            assert set(kinds) <= {"IHDR", "IDAT", "IEND"}, kinds  # no tEXt / zTXt / iTXt / eXIf / tIME
            im = Image.open(io.BytesIO(png))
            assert im.mode == "L" and im.size == (SIZE, SIZE) and not im.info, (im.mode, im.size, im.info)
            received += 1
    assert received == 6  # every image, once, as pixels


def test_vertex_and_kserve_routes_same_auth_and_pixels_only(server, identifying_cohort, tmp_path, capsys,
                                                            monkeypatch):
    """CXR Foundation's signature (/predict, /health) and the Open Inference Protocol (/v2) on the same server: the
    same bearer token (health checks excepted), per-instance errors for unusable instances, pixels only received."""
    import base64
    import json

    import httpx
    from PIL import Image

    table, root = identifying_cohort
    url = server["url"]
    monkeypatch.setenv("CXR_SEC_TOKEN", TOKEN)
    name = "timm-resnet10t"
    for path in ("/health", "/v2/health/ready"):
        assert httpx.get(url + path).status_code == 200
    for headers in ({}, {"Authorization": f"Bearer {WRONG}"}):
        r = httpx.post(url + "/predict", json={"instances": []}, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"
        for method, path in (("GET", f"/v2/models/{name}"), ("POST", f"/v2/models/{name}/infer")):
            r = httpx.request(method, url + path, headers=headers)
            assert r.status_code == 401 and "bearer token" in r.json()["error"] and WRONG not in r.text
    auth = {"Authorization": f"Bearer {TOKEN}"}
    dcm = next(root.rglob("*.dcm")).read_bytes()
    png = (root / "smithjane/confidential_smithjane_0.png").read_bytes()
    instances = [{"input_bytes": base64.b64encode(dcm).decode()}, {"input_bytes": "not base64!"},
                 {"input_bytes": base64.b64encode(b"not an image").decode()}, {"gcs_uri": "gs://bucket/x.png"},
                 {"input_bytes": base64.b64encode(png).decode()}]
    r = httpx.post(url + "/predict", json={"instances": instances}, headers=auth)
    preds = r.json()["predictions"]
    assert r.status_code == 200 and len(preds) == 5
    assert np.asarray(preds[0]["general_img_emb"]).shape == (1, 512) and "general_img_emb" in preds[4]
    for k, why in ((1, "not valid base64"), (2, "not a readable image"), (3, "'input_bytes' only")):
        assert why in preds[k]["error"]["description"], preds[k]
    assert TOKEN not in r.text and "PID-SECRET" not in r.text

    # the client through both routes: every request body holds base64 PNGs (or a pixel tensor) and nothing else
    before = set(server["log_dir"].glob("*.body"))
    for spec in (f"vertex:{url}/predict", f"kserve:{url}/v2/models/{name}"):
        code, out, err = _run(["embed", "--teacher", spec, "--token-env", "CXR_SEC_TOKEN", "--cohort", str(table),
                               "--images-root", str(root), "--out", str(tmp_path / spec[:6]), "--size", str(SIZE),
                               "--no-progress"], capsys)
        assert code == 0, err
        assert TOKEN not in out + err
    bodies = sorted(set(server["log_dir"].glob("*.body")) - before)
    assert len(bodies) == 2
    received = 0
    for body in bodies:
        data = body.read_bytes()
        for s in SECRETS + [str(root), table.name]:
            assert s.lower().encode() not in data.lower(), f"{s!r} reached the server in {body.name}"
        doc = json.loads(data)
        if "instances" in doc:
            assert list(doc) == ["instances"] and all(list(i) == ["input_bytes"] for i in doc["instances"])
            for inst in doc["instances"]:
                b = base64.b64decode(inst["input_bytes"])
                assert set(_png_chunks(b)) <= {"IHDR", "IDAT", "IEND"}
                assert Image.open(io.BytesIO(b)).size == (SIZE, SIZE)
                received += 1
        else:
            assert list(doc) == ["inputs", "outputs"] and set(doc["inputs"][0]) == {"name", "shape", "datatype",
                                                                                    "data"}
            assert doc["inputs"][0]["shape"] == [6, 1, SIZE, SIZE]
            received += 6
    assert received == 12


def test_token_never_leaks(server, identifying_cohort, tmp_path, capsys, monkeypatch):
    import httpx

    from cxrdistill.teachers import wire

    table, root = identifying_cohort
    url = server["url"]
    client_text = []
    monkeypatch.setenv("CXR_SEC_TOKEN", TOKEN)
    monkeypatch.setenv("CXR_SEC_WRONG", WRONG)
    runs = {
        "info ok": (0, ["teacher", "info", url, "--token-env", "CXR_SEC_TOKEN"]),
        "embed ok": (0, ["embed", "--teacher", url, "--token-env", "CXR_SEC_TOKEN", "--cohort", str(table),
                         "--images-root", str(root), "--out", str(tmp_path / "store"), "--no-progress"]),
        "embed wrong token": (2, ["embed", "--teacher", url, "--token-env", "CXR_SEC_WRONG", "--cohort", str(table),
                                  "--images-root", str(root), "--out", str(tmp_path / "store2"), "--no-progress"]),
        "embed no token": (2, ["embed", "--teacher", url, "--cohort", str(table), "--images-root", str(root),
                               "--out", str(tmp_path / "store3"), "--no-progress"]),
        "info unset variable": (2, ["teacher", "info", url, "--token-env", "CXR_SEC_UNSET"]),
    }
    for name, (want, argv) in runs.items():
        code, out, err = _run(argv, capsys)
        assert code == want, (name, out, err)
        client_text += [out, err]
    assert "HTTP 401" in client_text[5] and "--token-env" in client_text[5]  # the wrong-token error is useful…
    # raw requests: the right token with a bad body, a wrong token, the token in the wrong header
    png = wire.pack_images([b"not a png"])
    for headers, status in (({"Authorization": f"Bearer {TOKEN}"}, 400), ({"Authorization": f"Bearer {WRONG}"}, 401),
                            ({"X-Api-Key": TOKEN}, 401)):
        r = httpx.post(url + "/v1/embed", content=png, headers={**headers, "Content-Type": wire.PNG_BATCH})
        assert r.status_code == status
        client_text.append(r.text + str(r.headers))
    cmdline = Path(f"/proc/{server['proc'].pid}/cmdline").read_bytes().decode(errors="replace")
    server["proc"].terminate()
    server["proc"].wait(30)
    server_text = server["out"].read_text(errors="replace") + server["err"].read_text(errors="replace")
    assert "POST /v1/embed" in server_text and "401" in server_text  # the logs were captured (not vacuous)
    logged = [p.read_text(encoding="utf-8", errors="replace") for p in server["log_dir"].glob("*.json")]
    assert logged and all("<redacted>" in t for t in logged if "authorization" in t.lower())
    written = [p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*") if p.is_file()]
    for where, texts in (("client output", client_text), ("server output", [server_text]), ("server command line",
                         [cmdline]), ("request log", logged), ("files written by the client", written)):
        for t in texts:
            assert TOKEN not in t, f"the token appears in the {where}"
            assert WRONG not in t, f"the wrong token appears in the {where}"
