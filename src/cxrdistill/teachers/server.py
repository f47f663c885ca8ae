"""The teacher as an HTTP API (FastAPI + uvicorn): PNG images in, embeddings out, nothing about the weights.

Endpoints: ``GET /healthz`` (no auth), ``GET /v1/info``, ``POST /v1/embed`` (formats in :mod:`.wire`); CXR
Foundation's Vertex AI signature, ``POST /predict`` and ``GET /health`` (no auth; both paths from
``AIP_PREDICT_ROUTE`` / ``AIP_HEALTH_ROUTE`` when set, as Vertex starts a custom container; :mod:`.vertex`); and
the Open Inference Protocol's ``GET /v2/health/ready``, ``GET /v2/models/{name}``, ``POST /v2/models/{name}/infer``
(:mod:`.kserve`). Optional bearer-token auth on everything but the health checks (constant-time comparison; the
token is never logged or echoed), limits on request bytes, batch size and pixels per image, and an opt-in request
log (``log_dir``) that keeps exactly what arrived, so that a test or an auditor can check the server received pixels
only.
"""
from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from cxrdistill.errors import CxrError, InputError
from cxrdistill.images.decode import decode_png_bytes, load_gray
from cxrdistill.images.preprocess import preprocess
from cxrdistill.storage.io import atomic_path
from cxrdistill.teachers import wire
from cxrdistill.teachers.faults import FaultInjector, FaultSpec
from cxrdistill.teachers.kserve import infer_response, metadata, read_infer
from cxrdistill.teachers.local import Teacher
from cxrdistill.teachers.vertex import InstanceError, instance_bytes, prediction

DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_REQUEST_MB = 32.0
DEFAULT_MAX_PIXELS = 4096 * 4096  # per received image; a CXR PNG is at most ~4.3k², clients send preprocessed images


_GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                  413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


class _HTTPError(Exception):
    def __init__(self, status: int, detail: str, headers: dict | None = None):
        self.status, self.detail, self.headers = status, detail, headers or {}


class RequestLog:
    """Keeps what arrived at ``/v1/embed``: ``NNNNNN.json`` (headers — ``authorization`` redacted — and status) and
    ``NNNNNN.body`` (the exact bytes received). Files are written atomically."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        start = len(list(self.dir.glob("*.json")))
        self._seq = itertools.count(start)
        self._lock = threading.Lock()

    def write(self, headers: list[tuple[bytes, bytes]], body: bytes, note: str) -> None:
        with self._lock:
            n = next(self._seq)
        hdrs = [(k.decode("latin-1"), "<redacted>" if k.lower() == b"authorization" else v.decode("latin-1"))
                for k, v in headers]
        stem = self.dir / f"{n:06d}"
        with atomic_path(stem.with_suffix(".body")) as tmp:
            tmp.write_bytes(body)
        with atomic_path(stem.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps({"seq": n, "time": time.time(), "headers": hdrs, "bytes": len(body),
                                       "note": note}, indent=1), encoding="utf-8")


def create_app(teacher: Teacher, *, token: str | None = None, max_batch: int = DEFAULT_MAX_BATCH,
               max_request_bytes: int = int(DEFAULT_MAX_REQUEST_MB * 2**20), max_pixels: int = DEFAULT_MAX_PIXELS,
               faults: FaultSpec | None = None, log_dir: str | os.PathLike | None = None):
    """The ASGI app serving ``teacher``. ``token``: require ``Authorization: Bearer <token>`` on ``/v1/*``."""
    app = FastAPI(title="cxrdistill teacher", docs_url=None, redoc_url=None, openapi_url=None)
    info = teacher.info
    token_b = token.encode() if token else None
    infer_lock = threading.Lock()  # one forward pass at a time: torch already uses every core it is given
    log = RequestLog(log_dir) if log_dir else None
    stats = {"requests": 0, "images": 0}
    app.state.stats = stats

    def check_auth(request: Request) -> None:
        if token_b is None:
            return
        got = request.headers.get("authorization", "")
        scheme, _, cred = got.partition(" ")
        # compare_digest on bytes of any length: no early exit that would leak the token through timing
        if not (scheme.lower() == "bearer" and hmac.compare_digest(cred.strip().encode(), token_b)):
            raise _HTTPError(401, "missing or invalid bearer token", {"WWW-Authenticate": "Bearer"})

    predict_route = os.environ.get("AIP_PREDICT_ROUTE") or "/predict"
    health_route = os.environ.get("AIP_HEALTH_ROUTE") or "/health"

    @app.exception_handler(_HTTPError)
    async def _http_error(request: Request, exc: _HTTPError):
        path = request.url.path
        if path == predict_route:  # Google's error body, as Vertex AI answers
            body: dict = {"error": {"code": exc.status, "message": exc.detail, "status": _GOOGLE_STATUS.get(
                exc.status, "INVALID_ARGUMENT")}}
        elif path.startswith("/v2/"):  # the Open Inference Protocol's
            body = {"error": exc.detail}
        else:
            body = {"detail": exc.detail}
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/v1/info")
    async def get_info(request: Request):
        check_auth(request)
        return {**info.to_dict(), "limits": {"max_batch": max_batch, "max_request_bytes": max_request_bytes,
                                              "max_pixels": max_pixels},
                "formats": {"request": [wire.PNG_BATCH, "multipart/form-data"],
                            "response": [wire.EMBEDDINGS, "application/json"]}}

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > max_request_bytes:
                    raise _HTTPError(413, f"request of {int(declared):,} bytes exceeds the server limit of "
                                          f"{max_request_bytes:,} bytes; send fewer or smaller images per request")
            except ValueError:
                raise _HTTPError(400, "invalid Content-Length header") from None
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_request_bytes:
                raise _HTTPError(413, f"request exceeds the server limit of {max_request_bytes:,} bytes; "
                                      "send fewer or smaller images per request")
            chunks.append(chunk)
        return b"".join(chunks)

    async def split_images(request: Request, body: bytes) -> list[bytes]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == wire.PNG_BATCH:
            try:
                return wire.unpack_images(body, max_items=max_batch)
            except wire.WireError as e:
                if "more than" in str(e):
                    raise _HTTPError(413, f"too many images: this server accepts at most {max_batch} per "
                                          "request") from None
                raise _HTTPError(400, f"malformed {wire.PNG_BATCH} body: {e}") from None
        if ctype == "multipart/form-data":
            from starlette.datastructures import UploadFile
            from starlette.formparsers import MultiPartException, MultiPartParser

            async def stream():
                yield body
                yield b""

            try:
                form = await MultiPartParser(request.headers, stream(), max_files=max_batch + 1,
                                             max_fields=max_batch + 1,
                                             max_part_size=max_request_bytes).parse()
            except MultiPartException as e:
                raise _HTTPError(400, f"malformed multipart body: {e.message}") from None
            files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
            out = [await f.read() for f in files]
            await form.close()
            if len(out) > max_batch:
                raise _HTTPError(413, f"too many images: this server accepts at most {max_batch} per request")
            return out
        raise _HTTPError(415, f"unsupported Content-Type {ctype or '(none)'!r}; send {wire.PNG_BATCH} "
                              "(length-prefixed PNGs) or multipart/form-data")

    def decode_all(blobs: list[bytes]) -> np.ndarray:
        s = info.image_size
        out = np.empty((len(blobs), s, s), dtype=np.uint8)
        for i, b in enumerate(blobs):
            img = wire.png_stored_pixels(b, max_pixels)  # a loopback client's stored PNG: no PIL round trip
            if img is None:
                img = decode_png_bytes(b, limit=max_pixels, what=f"image {i}")
            out[i] = img if img.shape == (s, s) else preprocess(img, s, "resize")
        return out

    def forward(pixels: np.ndarray) -> np.ndarray:
        with infer_lock:
            return teacher.embed(pixels)

    def infer(blobs: list[bytes]) -> np.ndarray:
        return forward(decode_all(blobs))

    def predict_instances(instances: list) -> list[dict]:
        """Vertex signature: per-instance errors for instances it cannot use, one forward pass for the rest."""
        preds: list[dict | None] = [None] * len(instances)
        good, pixels = [], []
        for k, inst in enumerate(instances):
            try:
                pixels.append(decode_any(instance_bytes(inst), k))
                good.append(k)
            except (InstanceError, InputError) as e:
                preds[k] = {"error": {"description": f"instance {k}: {e}"[:1024]}}
        if good:
            for k, e in zip(good, forward(np.stack(pixels))):
                preds[k] = prediction(e)
        return preds

    def decode_any(data: bytes, k: int) -> np.ndarray:
        """PNG/JPEG or DICOM bytes → the model's square uint8 input."""
        s = info.image_size
        if data[128:132] == b"DICM":  # DICOM Part 10: decoded from a private temporary file, then removed
            import tempfile

            with tempfile.TemporaryDirectory(prefix="cxrdistill-dcm-") as d:
                f = Path(d) / "instance.dcm"
                f.write_bytes(data)
                try:
                    img = load_gray(f, limit=max_pixels)
                except InputError as e:
                    raise InputError(str(e).replace(str(f), "DICOM")) from None
        else:
            img = decode_png_bytes(data, limit=max_pixels, what=f"image {k}")
        return img if img.shape == (s, s) else preprocess(img, s, "resize")

    async def read_json(request: Request) -> Any:
        body = await read_body(request)
        try:
            return json.loads(body), body
        except ValueError:
            raise _HTTPError(400, "request body is not JSON") from None

    @app.get(health_route)
    async def health():
        return {"status": "ok"}

    @app.post(predict_route)
    async def predict(request: Request):
        check_auth(request)
        body, raw = await read_json(request)
        if log is not None:
            await anyio.to_thread.run_sync(log.write, request.scope.get("headers", []), raw, "predict")
        instances = body.get("instances") if isinstance(body, dict) else None
        if not isinstance(instances, list) or not instances:
            raise _HTTPError(400, 'expected {"instances": [{"input_bytes": "<base64 image>"}, ...]}')
        if len(instances) > max_batch:
            raise _HTTPError(400, f"too many instances: this server accepts at most {max_batch} per request")
        preds = await anyio.to_thread.run_sync(predict_instances, instances)
        stats["requests"] += 1
        stats["images"] += sum("error" not in p for p in preds)
        return JSONResponse({"predictions": preds, "deployedModelId": "cxrdistill", "model": info.name,
                             "modelVersionId": info.version})

    @app.get("/v2/health/ready")
    @app.get("/v2/health/live")
    async def v2_health():
        return {}

    def v2_model(request: Request, name: str) -> None:
        check_auth(request)
        if name != info.name:
            raise _HTTPError(404, f"unknown model {name!r}; this server serves {info.name!r}")

    @app.get("/v2/models/{name}")
    async def v2_metadata(request: Request, name: str):
        v2_model(request, name)
        return metadata(info.name, info.version, info.image_size, info.embedding_shape)

    @app.get("/v2/models/{name}/ready")
    async def v2_ready(request: Request, name: str):
        v2_model(request, name)
        return {"name": info.name, "ready": True}

    @app.post("/v2/models/{name}/infer")
    async def v2_infer(request: Request, name: str):
        v2_model(request, name)
        body, raw = await read_json(request)
        if log is not None:
            await anyio.to_thread.run_sync(log.write, request.scope.get("headers", []), raw, "infer")
        try:
            pixels = read_infer(body, info.image_size, max_batch)
        except ValueError as e:
            raise _HTTPError(400, str(e)) from None
        emb = await anyio.to_thread.run_sync(forward, pixels)
        stats["requests"] += 1
        stats["images"] += len(pixels)
        return JSONResponse(infer_response(info.name, info.version, emb))

    @app.post("/v1/embed")
    async def embed(request: Request):
        check_auth(request)
        note = "ok"
        body = b""
        try:
            body = await read_body(request)
            blobs = await split_images(request, body)
            if not blobs:
                raise _HTTPError(400, "no images in the request")
            try:
                emb = await anyio.to_thread.run_sync(infer, blobs)
            except InputError as e:
                raise _HTTPError(400, str(e)) from None
        except _HTTPError as e:
            note = f"{e.status}: {e.detail}"
            raise
        finally:
            if log is not None:
                await anyio.to_thread.run_sync(log.write, request.scope.get("headers", []), body, note)
        stats["requests"] += 1
        stats["images"] += len(blobs)
        if "application/json" in request.headers.get("accept", ""):
            return JSONResponse(wire.embeddings_json(emb))
        data, headers = wire.encode_embeddings(emb)
        return Response(data, media_type=wire.EMBEDDINGS, headers=headers)

    if faults is not None:
        injector = FaultInjector(app, faults)
        injector.state = app.state
        return injector
    return app


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket (``port=0``: a free port chosen by the OS — no race between choosing and binding)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise CxrError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --port") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _uvicorn_server(app, log_level: str, access_log: bool, own_logging: bool = True):
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    # own_logging=False: leave handlers to the host process (uvicorn's records propagate to the root logger)
    config = uvicorn.Config(app, log_level=log_level, access_log=access_log, timeout_keep_alive=30,
                            lifespan="off", server_header=False, date_header=False,
                            log_config=LOGGING_CONFIG if own_logging else None)
    return uvicorn.Server(config)


def serve(app, host: str = "127.0.0.1", port: int = 8000, *, log_level: str = "info", access_log: bool = True,
          on_ready=None) -> None:
    """Run ``app`` until interrupted. ``on_ready(url)`` is called once listening (the port may be 0 = any free)."""
    sock = bind_socket(host, port)
    server = _uvicorn_server(app, log_level, access_log)
    url = _url(host, sock.getsockname()[1])
    if on_ready:
        async def _startup_hook():
            while not server.started:
                await asyncio.sleep(0.01)
            on_ready(url)

        async def _main():
            task = asyncio.create_task(_startup_hook())
            await server.serve(sockets=[sock])
            task.cancel()

        asyncio.run(_main())
    else:
        server.run(sockets=[sock])


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class BackgroundServer:
    """Serve an app from a thread of this process (tests, benchmarks, the demo study). A context manager:
    ``with BackgroundServer(app) as srv: srv.url`` — always shut down on exit."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 access_log: bool = False, start_timeout: float = 30.0):
        self.app = app
        self.sock = bind_socket(host, port)
        self.url = _url(host, self.sock.getsockname()[1])
        self.server = _uvicorn_server(app, log_level, access_log, own_logging=False)
        self.start_timeout = start_timeout
        self.thread = threading.Thread(target=self._run, name="teacher-server", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except BaseException as e:  # noqa: BLE001 - reported by start()
            self.error = e

    def start(self) -> "BackgroundServer":
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if self.error or not self.thread.is_alive():
                raise CxrError(f"teacher server failed to start ({self.error!r})")
            if time.monotonic() - t0 > self.start_timeout:
                self.stop()
                raise CxrError("teacher server did not start in time")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout)
        if self.thread.is_alive():  # requests still in flight after the grace period
            self.server.force_exit = True
            self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
