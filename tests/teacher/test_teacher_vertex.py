"""`embed --teacher vertex:URL` against a stand-in for a Vertex AI endpoint serving CXR Foundation, written here from
the published schemata (Google-Health/cxr-foundation, python/serving/vertex_schemata: instance.yaml,
prediction.yaml) and Vertex AI's documented behaviour — not from our own server:

* ``POST …/endpoints/E:predict`` with ``{"instances": [{"input_bytes": base64}]}`` → ``{"predictions": [...],
  "deployedModelId": …, "model": …}``; each prediction ``{"general_img_emb": 32×768, "contrastive_img_emb":
  32×128}`` or ``{"error": {"description": …}}`` for that instance alone;
* bodies over 1.5 MiB → HTTP 400 ``{"error": {"code": 400, "message": "Request payload size exceeds the limit: …",
  "status": "INVALID_ARGUMENT"}}``; quota → 429 ``RESOURCE_EXHAUSTED`` with ``Retry-After``; 503 ``UNAVAILABLE``;
* an access token that expired → 401 ``UNAUTHENTICATED``.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image

from cxrdistill.cli import main
from cxrdistill.errors import CxrError
from cxrdistill.storage.store import EmbeddingStore
from cxrdistill.teachers.client import RetryPolicy, embed_cohort
from cxrdistill.teachers.server import BackgroundServer

LIMIT = int(1.5 * 2**20)  # Vertex AI online prediction's request limit
ROUTE = "/v1/projects/p-123/locations/us-central1/endpoints/4711:predict"
CLI = str(Path(sys.executable).with_name("cxrdistill"))


def _embedding(px: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic function of the pixels with CXR Foundation's output shapes (32×768, 32×128)."""
    rows = np.array_split(px.astype(np.float32) / 255.0, 32, axis=0)
    a = np.array([r.mean() if r.size else 0.0 for r in rows], np.float32)
    b = np.cos(np.arange(768, dtype=np.float32) * (0.01 + float(px.mean()) / 2550.0))
    gen = np.outer(a, b).astype(np.float32)
    return gen, gen[:, :128] * np.float32(-0.5)


def _google_error(code: int, status: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "status": status}}, status_code=code,
                        headers=headers)


class VertexStandIn:
    """The stand-in endpoint. ``script``: authenticated request number (1-based) → "429" or "503" answered instead
    of predicting. ``bad``: sha1s of pixels the model cannot use (a per-instance error). Tokens are ``tok-N``; every
    ``expire_every`` answered requests all tokens issued so far expire (an hour passing), newer ones stay valid."""

    def __init__(self, *, limit: int = LIMIT, script: dict[int, str] | None = None, bad: set[str] = frozenset(),
                 expire_every: int | None = None, delay: float = 0.0, auth: bool = True):
        self.limit, self.script, self.bad = limit, dict(script or {}), set(bad)
        self.expire_every, self.delay, self.auth = expire_every, delay, auth
        self.min_valid, self.expiries, self.n_auth, self.accepted = 1, 0, 0, 0
        self.log: list[dict] = []  # every request: time, status, body size, headers, pixel hashes
        self.computed: dict[str, np.ndarray] = {}  # pixel sha1 → general_img_emb
        self.lock = threading.Lock()
        self.app = FastAPI()
        self.app.post(ROUTE)(self.predict)

    async def predict(self, request: Request):
        body = await request.body()
        entry = {"t": time.monotonic(), "bytes": len(body), "headers": dict(request.headers), "body": body,
                 "hashes": [], "status": 200}
        with self.lock:
            self.log.append(entry)
        resp = self._answer(body, request, entry)
        entry["status"] = resp.status_code
        return resp

    def _answer(self, body: bytes, request: Request, entry: dict):
        if len(body) > self.limit:
            return _google_error(400, "INVALID_ARGUMENT",
                                 f"Request payload size exceeds the limit: {self.limit} bytes.")
        if self.auth:
            tok = request.headers.get("authorization", "").removeprefix("Bearer ")
            if not (tok.startswith("tok-") and tok[4:].isdigit() and int(tok[4:]) >= self.min_valid):
                return _google_error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. "
                                                             "Expected OAuth 2 access token.")
        with self.lock:
            self.n_auth += 1
            what = self.script.get(self.n_auth)
        if what == "429":
            return _google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for aiplatform.googleapis.com/"
                                                            "online_prediction_requests_per_base_model",
                                 {"Retry-After": "1"})
        if what == "503":
            return _google_error(503, "UNAVAILABLE", "The service is currently unavailable.")
        if self.delay:
            time.sleep(self.delay)  # a sync sleep in the server's thread: the endpoint is busy
        instances = json.loads(body)["instances"]
        preds = []
        for inst in instances:
            px = np.asarray(Image.open(io.BytesIO(base64.b64decode(inst["input_bytes"]))))
            h = hashlib.sha1(px.tobytes()).hexdigest()
            entry["hashes"].append(h)
            if h in self.bad:
                preds.append({"error": {"description": "Failed to get prediction for instance. Reason: the image "
                                                       "could not be processed."}})
                continue
            gen, con = _embedding(px)
            self.computed[h] = gen
            preds.append({"general_img_emb": gen.tolist(), "contrastive_img_emb": con.tolist()})
        with self.lock:
            self.accepted += 1
            if self.expire_every and self.accepted % self.expire_every == 0:
                tok = request.headers.get("authorization", "").removeprefix("Bearer ")
                self.min_valid, self.expiries = int(tok[4:]) + 1, self.expiries + 1
        return JSONResponse({"predictions": preds, "deployedModelId": "1234567890", "model": "projects/p-123/"
                             "locations/us-central1/models/cxr-foundation", "modelDisplayName": "cxr-foundation",
                             "modelVersionId": "1"})


@pytest.fixture()
def standin():
    servers = []

    def make(**kw):
        s = VertexStandIn(**kw)
        srv = BackgroundServer(s.app).start()
        servers.append(srv)
        return s, f"vertex:{srv.url}{ROUTE}"

    yield make
    for srv in servers:
        srv.stop()


def _token_command(tmp_path: Path) -> tuple[str, Path]:
    """A command printing tok-1, tok-2, … on successive runs (like `gcloud auth print-access-token` after expiry)."""
    counter = tmp_path / "runs"
    script = tmp_path / "print_token.py"
    script.write_text("import pathlib, sys\np = pathlib.Path(sys.argv[1])\nn = int(p.read_text()) + 1 if p.exists() "
                      "else 1\np.write_text(str(n))\nprint(f'tok-{n}')\n")
    return f"{sys.executable} {script} {counter}", counter


def _hashes(cohort) -> dict[str, str]:
    """image_id → sha1 of the pixels the client sends (each image at its own size, nothing else)."""
    from cxrdistill.images.decode import load_gray

    return {i: hashlib.sha1(load_gray(cohort["root"] / p).tobytes()).hexdigest()
            for i, p in zip(cohort["df"].image_id, cohort["df"].path)}


def _check_requests_hold_pixels_only(s: VertexStandIn, secrets: list[str], tokens: list[str]):
    for e in s.log:
        doc = json.loads(e["body"])
        assert list(doc) == ["instances"] and all(list(i) == ["input_bytes"] for i in doc["instances"])
        for inst in doc["instances"]:
            im = Image.open(io.BytesIO(base64.b64decode(inst["input_bytes"])))
            assert im.format == "PNG" and not {k for k in im.info if k not in ("dpi", "gamma")}
        text = e["body"].decode()
        assert not any(x in text for x in secrets + tokens)
        assert not any(x in json.dumps({k: v for k, v in e["headers"].items() if k != "authorization"})
                       for x in secrets + tokens)


def test_vertex_through_quota_outage_expiry_and_per_instance_errors(cohort, standin, tmp_path, capfd):
    ids = list(cohort["df"].image_id)
    hashes = _hashes(cohort)
    bad_ids = [ids[3], ids[60]]  # a PNG and a DICOM the model refuses
    s, spec = standin(script={2: "429", 5: "503", 6: "503"}, bad={hashes[i] for i in bad_ids}, expire_every=4)
    cmd, counter = _token_command(tmp_path)
    out = tmp_path / "store"
    args = ["embed", "--teacher", spec, "--token-command", cmd, "--output-key", "general_img_emb", "--on-error", "skip",
            "--cohort", cohort["table"], "--images-root", cohort["root"], "--out", out, "--batch-size", "8",
            "--concurrency", "2", "--no-progress"]
    main(list(map(str, args)))
    o1, e1 = capfd.readouterr()
    res = json.loads(o1.strip().splitlines()[-1])
    assert res["embedded"] == len(ids) - 2 and res["skipped"] == 2
    assert res["failures"]["HTTP 429"] == 1 and res["failures"]["HTTP 503"] == 2
    # the token expired mid-job (twice) and the command ran once per expiry the client met, not once per request
    n_runs = int(counter.read_text())
    assert s.expiries >= 2 and s.expiries - 1 <= n_runs - 1 <= s.expiries
    assert res["failures"]["HTTP 401"] >= n_runs - 1
    assert "could not be processed" in e1 and bad_ids[0] in e1
    # Retry-After: 1 was honoured: the refused body came again no sooner than a second later
    i429 = next(k for k, e in enumerate(s.log) if e["status"] == 429)
    again = next(e for e in s.log[i429 + 1:] if e["body"] == s.log[i429]["body"])
    assert again["t"] - s.log[i429]["t"] >= 0.95

    st = EmbeddingStore.open(out)
    good = [i for i in ids if i not in bad_ids]
    assert st.ids == good  # every usable image exactly once, in cohort order
    assert st.item_shape == (32, 768)
    for i in good[::7]:
        np.testing.assert_array_equal(st[i], s.computed[hashes[i]])
    api = st.info["api"]
    assert api == {"protocol": "vertex", "url": spec.removeprefix("vertex:"), "output_key": "general_img_emb"}

    # a rerun sends nothing new (the two refused images are asked again: they are not stored)
    before = len(s.log)
    main(list(map(str, args)))
    o2, e2 = capfd.readouterr()
    again = json.loads(o2.strip().splitlines()[-1])
    assert again["already"] == len(good) and again["embedded"] == 0
    sent_again = [h for e in s.log[before:] for h in e["hashes"]]
    assert sorted(sent_again) == sorted(hashes[i] for i in bad_ids)

    tokens = [f"tok-{k}" for k in range(1, int(counter.read_text()) + 1)]
    _check_requests_hold_pixels_only(s, cohort["secrets"], tokens)
    stored = "".join(p.read_bytes().decode("latin-1") for p in out.rglob("*") if p.is_file())
    assert not any(t in o1 + e1 + o2 + e2 + stored for t in tokens)


def test_vertex_stops_on_a_refused_image_without_skip(cohort, standin, tmp_path):
    hashes = _hashes(cohort)
    bad = cohort["df"].image_id.iloc[10]
    s, spec = standin(bad={hashes[bad]}, auth=False)
    with pytest.raises(CxrError, match=f"{bad}.*could not be processed.*--on-error skip"):
        embed_cohort(spec, cohort["table"], cohort["root"], tmp_path / "s", batch_size=4, concurrency=1,
                     progress=False)
    st = EmbeddingStore.open(tmp_path / "s")
    assert st.ids == list(cohort["df"].image_id[:8])  # the batches before it are kept, in order
    some = dict(splits=["test"], progress=False)
    with pytest.raises(CxrError, match="no 'img_emb'.*contrastive_img_emb, general_img_emb.*--output-key"):
        embed_cohort(spec, cohort["table"], cohort["root"], tmp_path / "s2", output_key="img_emb", **some)
    # contrastive embeddings keep their shape
    embed_cohort(spec, cohort["table"], cohort["root"], tmp_path / "s3", output_key="contrastive_img_emb",
                 on_error="skip", **some)
    assert EmbeddingStore.open(tmp_path / "s3").item_shape == (32, 128)
    # and cannot be appended to a store of another output
    with pytest.raises(CxrError, match="output_key 'general_img_emb'.*'contrastive_img_emb'"):
        embed_cohort(spec, cohort["table"], cohort["root"], tmp_path / "s", output_key="contrastive_img_emb",
                     on_error="skip", **some)


@pytest.mark.parametrize("status", [400, 403, 404])
def test_vertex_client_errors_stop_at_once_with_the_message(cohort, tmp_path, status):
    calls = []
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request):
        calls.append(1)
        return _google_error(status, {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}[status],
                             f"stand-in says {status}")

    with BackgroundServer(app) as srv:
        with pytest.raises(CxrError, match=f"HTTP {status}.*stand-in says {status}"):
            embed_cohort(f"vertex:{srv.url}/predict", cohort["table"], cohort["root"], tmp_path / "s",
                         concurrency=1, progress=False, retry=RetryPolicy(base=0.01))
    assert len(calls) == 1


def _big_cohort(root: Path) -> Path:
    """Noise images (incompressible): eight 600², one 1024² and one 640²."""
    rng = np.random.default_rng(3)
    rows = []
    for k, side in enumerate([600] * 4 + [1024] + [600] * 4 + [640]):
        a = rng.integers(0, 256, (side, side), dtype=np.uint8)
        Image.fromarray(a).save(root / f"n{k}.png", compress_level=1)
        rows.append({"image_id": f"n{k}", "path": f"n{k}.png"})
    pd.DataFrame(rows).to_parquet(root / "big.parquet")
    return root / "big.parquet"


def test_vertex_packs_requests_under_the_byte_limit(standin, tmp_path):
    table = _big_cohort(tmp_path)
    s, spec = standin(auth=False)
    r = embed_cohort(spec, table, tmp_path, tmp_path / "a", batch_size=32, progress=False)
    assert r.embedded == 10 and r.failures == {}
    assert all(e["status"] == 200 and e["bytes"] <= LIMIT for e in s.log)
    assert [len(e["hashes"]) for e in s.log] == [3, 1, 1, 3, 2]  # by bytes, in order (the 1024² image is ~1.4 MB)
    assert EmbeddingStore.open(tmp_path / "a").ids == [f"n{k}" for k in range(10)]

    # an image that alone exceeds the budget is a named failure (skipped and reported), not a failed batch
    r = embed_cohort(spec, table, tmp_path, tmp_path / "b", max_request_mb=1.0, on_error="skip", progress=False)
    assert [i for i, _ in r.skipped] == ["n4"] and "over the limit of 1,048,576 bytes" in r.skipped[0][1]

    # a service whose limit is below the client's budget: refused bodies are halved and sent again
    s2, spec2 = standin(auth=False, limit=900_000)
    r = embed_cohort(spec2, table, tmp_path, tmp_path / "c", on_error="skip", progress=False)
    assert [i for i, _ in r.skipped] == ["n4"] and "payload size exceeds the limit" in r.skipped[0][1]
    assert r.embedded == 9 and EmbeddingStore.open(tmp_path / "c").ids == [f"n{k}" for k in range(10) if k != 4]


def test_vertex_client_killed_mid_run_then_resumed(cohort, standin, tmp_path):
    """SIGKILL with requests in flight, then the same command again: every image stored once, in cohort order, and
    no image stored before the kill is sent again."""
    ids = list(cohort["df"].image_id)
    hashes = _hashes(cohort)
    by_hash = {h: i for i, h in hashes.items()}
    s, spec = standin(auth=False, delay=0.15)
    out = tmp_path / "store"
    cmd = [CLI, "embed", "--teacher", spec, "--cohort", str(cohort["table"]), "--images-root", str(cohort["root"]),
           "--out", str(out), "--batch-size", "4", "--concurrency", "2", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        if (out / "manifest.json").exists() and len(EmbeddingStore.open(out)) >= 12:
            break
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    p.wait(30)
    snapshot = set(EmbeddingStore.open(out).ids)
    n_log = len(s.log)
    assert 12 <= len(snapshot) < len(ids)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    st = EmbeddingStore.open(out)
    assert st.ids == ids  # each once, in cohort order
    resent = {by_hash[h] for e in s.log[n_log:] for h in e["hashes"]}
    assert not resent & snapshot
    for i in ids[::9]:
        np.testing.assert_array_equal(st[i], s.computed[hashes[i]])


def test_max_rps_spaces_requests_and_token_command_failures_are_clear(cohort, standin, tmp_path):
    import asyncio

    from cxrdistill.teachers.transport import TokenSource

    s, spec = standin(auth=False)
    embed_cohort(spec, cohort["table"], cohort["root"], tmp_path / "s", batch_size=8, concurrency=4, max_rps=10,
                 progress=False)
    starts = sorted(e["t"] for e in s.log)
    assert len(starts) == 9 and min(np.diff(starts)) >= 0.09  # ten per second at most, with four workers ready

    def fails(command: str, match: str):
        with pytest.raises(CxrError, match=match) as ei:
            asyncio.run(TokenSource(command=command).get())
        return str(ei.value)

    py = sys.executable
    msg = fails(f"{py} -c \"import sys; print('tok-LEAKED'); sys.exit('login required: run gcloud auth login')\"",
                r"failed \(exit 1\): login required: run gcloud auth login")
    assert "tok-LEAKED" not in msg
    fails(f"{py} -c pass", "printed nothing")
    fails("no-such-token-command-here", "not found")
    with pytest.raises(CxrError, match="--token-env or --token-command, not both"):
        TokenSource("x", "y")
