"""Extract teacher embeddings for a cohort into an embedding store: over an API (async httpx) or in-process.

One loop serves every teacher: ``concurrency`` workers each take the next batch of images, decode + preprocess and
encode them for the wire in a thread pool, have the backend embed them, and hand the result to the store — one
durable chunk per batch, appended in cohort order. A crash or kill loses at most the batches in flight; a rerun
skips every id already in the store.

The APIs a teacher can be reached by are registered in :data:`APIS` by spec prefix — ``http://`` / ``https://``
(ours, :class:`RemoteTeacher`), ``vertex:URL`` (Vertex AI's ``predict`` signature as CXR Foundation serves it,
:mod:`.vertex`) and ``kserve:URL`` (the Open Inference Protocol v2, :mod:`.kserve`). Each is an
:class:`ApiTeacher`: ``info()``, ``encode(pixels)`` (in the thread pool), ``embed(payload) -> Answer``; they share
one :class:`~.transport.HttpTransport` behaviour (retries, auth, rate cap).

Only pixels leave the machine: each image is decoded with ``images.decode.load_gray``, preprocessed, and re-encoded
with ``encode_png`` (no text/time/EXIF chunks); requests carry no file names, ids or DICOM headers.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cxrdistill.errors import CxrError, InputError
from cxrdistill.images.decode import encode_png, load_gray
from cxrdistill.images.preprocess import preprocess
from cxrdistill.progress import Progress
from cxrdistill.registry import Registry
from cxrdistill.storage.io import read_table
from cxrdistill.storage.store import EmbeddingStore, select_shard, shard_writer
from cxrdistill.teachers import wire
from cxrdistill.teachers.local import Teacher, TeacherInfo, resolve_teacher
from cxrdistill.teachers.transport import (RETRY_STATUS, HttpTransport, PayloadTooLarge, RetryPolicy,  # noqa: F401
                                           TokenSource)

#: API protocols by spec prefix (``vertex``, ``kserve``; ``http``/``https`` are ours)
APIS: Registry = Registry("teacher API", plugins=("cxrdistill.teachers.vertex", "cxrdistill.teachers.kserve"))


def api_spec(spec: str) -> tuple[str, str] | None:
    """``(protocol, URL)`` of a teacher reached as an API, or None for a local teacher."""
    if spec.startswith(("http://", "https://")):
        return "http", spec
    kind, sep, url = spec.partition(":")
    if sep and kind in ("vertex", "kserve"):
        if not url.startswith(("http://", "https://")):
            raise InputError(f"teacher spec {spec!r}: {kind}: needs a full http(s) URL",
                             hint="e.g. vertex:https://REGION-aiplatform.googleapis.com/v1/projects/P/locations/R/"
                                  "endpoints/E:predict or kserve:http://HOST:8000/v2/models/NAME")
        return kind, url
    return None


@dataclass
class Answer:
    """What a teacher said about one batch, by position in it: embeddings of the images it could use (in order) and
    the service's reason for each one it could not."""

    emb: np.ndarray
    ok: list[int]
    errors: list[tuple[int, str]] = field(default_factory=list)

    @classmethod
    def all_of(cls, emb: np.ndarray) -> "Answer":
        return cls(emb, list(range(len(emb))))


class ApiTeacher:
    """A teacher reached over HTTP. Subclasses give the protocol: :meth:`info`, :meth:`encode`, :meth:`embed`.

    ``token`` (from ``--token-env``) or ``token_command`` (``--token-command``) authenticate; the token travels in a
    header only and never appears in messages, reprs or the store.
    """

    protocol = ""
    token_hint = "set the API token in the environment variable named by --token-env"

    def __init__(self, url: str, token: str | None = None, *, token_command: str | None = None,
                 concurrency: int = 4, retry: RetryPolicy | None = None, seed: int | None = None,
                 max_rps: float | None = None, max_request_bytes: int | None = None, output_key: str | None = None,
                 normalize: str | None = None):
        self.http = HttpTransport(url, TokenSource(token, token_command), concurrency=concurrency, retry=retry,
                                  seed=seed, max_rps=max_rps, token_hint=self.token_hint)
        self.url = self.http.url
        self.retry = self.http.retry
        self.concurrency = int(concurrency)
        self.max_request_bytes = max_request_bytes
        self.output_key = output_key
        self.normalize = normalize
        self._shape: tuple[int, ...] | None = None

    def __repr__(self) -> str:  # never shows the token
        return f"{type(self).__name__}({self.http.shown!r}, auth={'yes' if self.http.auth.present else 'no'})"

    @property
    def stats(self) -> dict[str, Any]:
        return self.http.stats

    async def __aenter__(self):
        await self.http.open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.http.close()

    # the protocol ------------------------------------------------------------------------------------------------
    async def info(self) -> TeacherInfo:
        raise NotImplementedError

    def pixel_size(self, size: int | None, info: TeacherInfo) -> tuple[int | None, int | None]:
        """``(side, max_side)``: square images of ``side`` px, or (side None) each image's own shape with its long
        side capped at ``max_side``. By default the teacher's input size, unless ``--size`` says otherwise."""
        return int(size or info.image_size), None

    def encode(self, pixels: Sequence[np.ndarray]) -> Any:
        """The batch as this API sends it (runs in the client's thread pool, off the event loop)."""
        raise NotImplementedError

    async def embed(self, payload: Any) -> Answer:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the store's manifest records about the API (never a token or a URL's query string)."""
        d = {"protocol": self.protocol, "url": self.http.shown}
        if self.output_key:
            d["output_key"] = self.output_key
        return d

    # shared by the protocols -------------------------------------------------------------------------------------
    def check_shape(self, arr: np.ndarray, what: str) -> np.ndarray:
        """Every embedding must have the shape of the first one; a ``(1, D)`` output is a pooled ``(D,)``."""
        a = np.asarray(arr, dtype=np.float32)
        if a.ndim == 2 and a.shape[0] == 1:
            a = a[0]
        if self._shape is None:
            if a.ndim not in (1, 2) or a.size == 0:
                raise CxrError(f"teacher at {self.http.shown} returned {what} of shape {list(a.shape)}; an embedding "
                               "is (D,) or (T, D)")
            self._shape = tuple(a.shape)
        elif tuple(a.shape) != self._shape:
            raise CxrError(f"teacher at {self.http.shown} returned {what} of shape {list(a.shape)}, but earlier "
                           f"embeddings were {list(self._shape)}; is the endpoint serving another model now?")
        return a

    @staticmethod
    def pack(sizes: Sequence[int], budget: int, overhead: int = 0) -> list[list[int]]:
        """Positions grouped greedily, in order, so that each group's ``overhead + Σ size`` stays ≤ ``budget``
        (an item larger than the budget alone is a group of its own; the caller refuses it)."""
        groups: list[list[int]] = []
        cur: list[int] = []
        used = overhead
        for k, s in enumerate(sizes):
            if cur and used + s > budget:
                groups.append(cur)
                cur, used = [], overhead
            cur.append(k)
            used += s
        if cur:
            groups.append(cur)
        return groups


@APIS.register("http")
class RemoteTeacher(ApiTeacher):
    """Our own API (``cxrdistill teacher serve``): ``GET /v1/info``, ``POST /v1/embed`` with framed PNGs, raw
    float32 back (:mod:`.wire`). Use as ``async with RemoteTeacher(url, token) as t``."""

    protocol = "cxrdistill"

    def __init__(self, url: str, token: str | None = None, **kw: Any):
        super().__init__(url, token, **kw)
        self.limits: dict[str, Any] = {}
        # on loopback bytes cost nothing but encoding costs CPU: stored PNGs (wire.png_stored) there, PIL's
        # compressed ones across a network
        self.loopback = _loopback(self.url)

    async def info(self) -> TeacherInfo:
        resp = await self.http.request("GET", "/v1/info")
        try:
            d = resp.json()
        except ValueError:
            raise CxrError(f"{self.http.shown}/v1/info did not return JSON; is this a cxrdistill teacher "
                           "server?") from None
        self.limits = dict(d.get("limits") or {})
        return TeacherInfo.from_dict(d)

    def encode(self, pixels: Sequence[np.ndarray]) -> tuple[list[bytes], bytes]:
        pngs = [wire.png_stored(p) if self.loopback else encode_png(p) for p in pixels]
        return pngs, wire.pack_images(pngs)

    async def embed(self, payload: tuple[list[bytes], bytes]) -> Answer:
        pngs, body = payload
        return Answer.all_of(await self._embed_framed(pngs, body))

    async def embed_pngs(self, pngs: Sequence[bytes]) -> np.ndarray:
        """Embeddings of PNG-encoded images (in order)."""
        return await self._embed_framed(list(pngs), wire.pack_images(list(pngs)))

    async def _embed_framed(self, pngs: list[bytes], body: bytes) -> np.ndarray:
        """Truncated responses are retried like dropped connections; a body over the server's limit is split."""
        max_bytes = int(self.limits.get("max_request_bytes") or self.max_request_bytes or 0)
        if max_bytes and len(body) > max_bytes and len(pngs) > 1:  # split rather than be refused
            h = len(pngs) // 2
            return np.concatenate([await self.embed_pngs(pngs[:h]), await self.embed_pngs(pngs[h:])])
        for attempt in range(self.retry.max_attempts):
            resp = await self.http.request("POST", "/v1/embed", content=body,
                                           headers={"Content-Type": wire.PNG_BATCH, "Accept": wire.EMBEDDINGS})
            try:
                out = wire.decode_embeddings(resp.content, resp.headers.get("x-embedding-shape"),
                                             resp.headers.get("x-embedding-dtype"))
            except wire.WireError as e:
                self.http.count("bad response")
                if attempt + 1 == self.retry.max_attempts:
                    raise CxrError(f"teacher at {self.http.shown} sent an unreadable response ({e})") from None
                await asyncio.sleep(self.retry.delay(attempt, self.http.rng))
                continue
            if out.shape[0] != len(pngs):
                raise CxrError(f"teacher at {self.http.shown} returned {out.shape[0]} embeddings for {len(pngs)} "
                               "images")
            return out
        raise AssertionError("unreachable")


def _loopback(url: str) -> bool:
    import ipaddress
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_api(spec: str, token: str | None = None, **kw: Any) -> ApiTeacher:
    """The :class:`ApiTeacher` for a spec string (``http://…``, ``vertex:URL``, ``kserve:URL``)."""
    kind, url = api_spec(spec) or (None, None)
    if kind is None:
        raise CxrError(f"{spec} is not a teacher API spec")
    return APIS.get(kind)(url, token, **kw)


# ---------------------------------------------------------------------------------------------------- backends
class _LocalBackend:
    """In-process teacher: the batch's pixels go straight to the model (one forward at a time)."""

    def __init__(self, teacher):
        self.teacher = teacher
        self.lock = threading.Lock()

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        return pixels

    def _embed(self, pixels: np.ndarray) -> np.ndarray:
        with self.lock:
            return self.teacher.embed(pixels)

    async def embed(self, payload: np.ndarray) -> Answer:
        return Answer.all_of(await asyncio.to_thread(self._embed, payload))


# ---------------------------------------------------------------------------------------------------- the loop
@dataclass
class EmbedResult:
    """What one extraction run did."""

    store: str
    total: int  # ids selected (after split and shard)
    already: int  # in the store before this run
    embedded: int = 0  # stored by this run
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image_id, error) with on_error="skip"
    seconds: float = 0.0
    requests: int = 0
    retries: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    bytes_sent: int = 0
    teacher: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, "total": self.total, "already": self.already, "embedded": self.embedded,
                "skipped": len(self.skipped), "seconds": round(self.seconds, 3), "images_per_s": round(self.rate, 2),
                "requests": self.requests, "retries": self.retries, "failures": self.failures,
                "bytes_sent": self.bytes_sent, "teacher": self.teacher}


def select_items(cohort, images_root: str | os.PathLike, *, splits: Sequence[str] | None = None,
                 shard: str | None = None, cohort_path: object = None) -> list[tuple[str, Path]]:
    """``(image_id, absolute image path)`` of the cohort rows to embed: chosen splits, then this shard's ids."""
    for c in ("image_id", "path"):
        if c not in cohort.columns:
            raise InputError(f"cohort has no {c!r} column", path=cohort_path, column=c,
                             hint="build the cohort with 'cxrdistill cohort import'")
    df = cohort
    if splits:
        if "split" not in df.columns:
            raise InputError("cohort has no 'split' column but --split was given", path=cohort_path, column="split",
                             hint="split it with 'cxrdistill cohort split' or drop --split")
        df = df[df["split"].isin(list(splits))]
    ids = df["image_id"].astype(str).tolist()
    if len(set(ids)) != len(ids):
        dup = df["image_id"][df["image_id"].duplicated()].iloc[0]
        raise InputError(f"duplicate image_id {dup!r}", path=cohort_path, column="image_id",
                         hint="image ids must be unique; fix the cohort table")
    paths = df["path"].tolist()
    bad = [k for k, p in enumerate(paths) if not isinstance(p, str) or not p]
    if bad:
        raise InputError("empty or missing path", path=cohort_path, column="path", row=int(bad[0]),
                         hint="every row needs an image path relative to --images-root")
    root = Path(images_root)
    by_id = dict(zip(ids, paths))
    return [(i, root / by_id[i]) for i in select_shard(ids, shard)]


def cap_long_side(img: np.ndarray, max_side: int) -> np.ndarray:
    """``img`` downscaled (aspect kept, antialiased) so that its long side is at most ``max_side``."""
    h, w = img.shape
    if max(h, w) <= max_side:
        return img
    from PIL import Image

    s = max_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(img, mode="L").resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0))


def _load_batch(paths: Sequence[Path], size: int | None, mode: str, on_error: str, max_side: int | None = None
                ) -> tuple[Any, list[int], list[tuple[int, str]]]:
    """Decode + preprocess; returns (pixels of the good ones, their positions, [(position, error)]). Pixels are one
    ``(B, size, size)`` array, or with ``size`` None a list of images whose long side is capped at ``max_side``."""
    imgs, ok, bad = [], [], []
    for k, p in enumerate(paths):
        try:
            if size is None:
                imgs.append(cap_long_side(load_gray(p, draft=max_side), max_side))
            else:
                imgs.append(preprocess(load_gray(p, draft=2 * size), size, mode))
            ok.append(k)
        except InputError as e:
            if on_error == "raise":
                raise
            bad.append((k, str(e)))
    if size is None:
        return imgs, ok, bad
    arr = np.stack(imgs) if imgs else np.zeros((0, size, size), np.uint8)
    return arr, ok, bad


class _Sink:
    """The store, created at the first embeddings when only they tell the shape (an API without an info call)."""

    def __init__(self, out, shape: tuple[int, ...] | None, dtype: str, info: dict[str, Any], writer: str):
        self.out, self.dtype, self.info, self.writer = out, dtype, info, writer
        self.store = None
        if shape:
            self.store = EmbeddingStore.open_or_create(out, shape, dtype, info, writer=writer)
        elif (Path(out) / "manifest.json").exists():
            have = EmbeddingStore.open(out)
            self.store = EmbeddingStore.open_or_create(out, have.item_shape, dtype, info, writer=writer)
        if self.store is not None:
            _check_same_run(self.store, info, out)

    def __contains__(self, image_id: str) -> bool:
        return self.store is not None and image_id in self.store

    def __len__(self) -> int:
        return len(self.store) if self.store is not None else 0

    def append(self, ids: list[str], emb: np.ndarray) -> None:
        if self.store is None:
            info = {**self.info, "embedding_shape": [int(s) for s in emb.shape[1:]]}
            self.store = EmbeddingStore.open_or_create(self.out, emb.shape[1:], self.dtype, info, writer=self.writer)
        elif tuple(emb.shape[1:]) != self.store.item_shape:
            raise CxrError(f"teacher returned embeddings of shape {list(emb.shape[1:])} but the store at {self.out} "
                           f"holds {list(self.store.item_shape)}; use a new --out for this teacher or output")
        self.store.append(ids, emb)


def _check_same_run(store, info: dict[str, Any], out) -> None:
    """A resumed store must be filled the same way: same pixels, same API output."""
    prev, now = store.info.get("preprocess"), info.get("preprocess")
    if prev and now and {k: prev.get(k) for k in now} != now:
        raise InputError(f"store was filled with images preprocessed as {prev}, this run uses {now}", path=out,
                         hint="use the same --size as before, or a new --out")
    pa, na = store.info.get("api") or {}, info.get("api") or {}
    for k in ("protocol", "output_key"):  # a store filled in-process or by an older client records no API
        if pa and na and pa.get(k) != na.get(k):
            raise InputError(f"store was filled with {k} {pa.get(k)!r}, this run uses {na.get(k)!r}", path=out,
                             hint="use the same teacher and --output-key as before, or a new --out")


async def _extract(backend, items: list[tuple[str, Path]], store: _Sink, *, batch_size: int, concurrency: int,
                   size: int | None, max_side: int | None, mode: str, on_error: str,
                   progress: Callable[[int], None], skipped: list) -> int:
    """Batches go out ``concurrency`` at a time and are stored strictly in cohort order: a finished batch waits for
    those before it (at most ``2 × concurrency`` batches are started and not yet stored). Decoding runs ahead of the
    requests: while ``concurrency`` batches are with the teacher, the next ones are decoded and encoded, so that a
    worker whose answer arrives sends its next batch at once."""
    loop = asyncio.get_running_loop()
    batches = enumerate(items[s:s + batch_size] for s in range(0, len(items), batch_size))
    ready: asyncio.Queue = asyncio.Queue(maxsize=max(1, concurrency))  # prepared batches waiting for a worker
    results: dict[int, tuple[list[tuple[str, str]], list[str], Any]] = {}
    window = asyncio.Semaphore(2 * max(1, concurrency))
    store_lock = asyncio.Lock()
    state = {"next": 0, "done": 0}
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency) + 1, thread_name_prefix="embed-prep")  # + the store

    def prepare(batch):
        pixels, ok, bad = _load_batch([p for _, p in batch], size, mode, on_error, max_side)
        return ok, bad, (backend.encode(pixels) if len(pixels) else None)

    async def commit() -> None:
        async with store_lock:  # appends are serialised and in order; each one is durable when it returns
            while state["next"] in results:
                bad, ids, emb = results.pop(state["next"])
                state["next"] += 1
                if ids:
                    await loop.run_in_executor(pool, store.append, ids, emb)
                    state["done"] += len(ids)
                skipped.extend(bad)
                progress(len(ids) + len(bad))
                window.release()

    async def feeder():
        for k, batch in batches:
            await window.acquire()
            await ready.put((k, batch, loop.run_in_executor(pool, prepare, batch)))
        for _ in range(max(1, concurrency)):
            await ready.put(None)  # one end marker per worker

    async def worker():
        while True:
            item = await ready.get()
            if item is None:
                return
            k, batch, prepared = item
            ok, bad, payload = await prepared
            bad = [(batch[j][0], err) for j, err in bad]
            ids: list[str] = []
            emb = None
            if payload is not None:
                ans = await backend.embed(payload)
                ids = [batch[ok[j]][0] for j in ans.ok]
                emb = ans.emb
                for j, err in ans.errors:
                    if on_error == "raise":
                        raise CxrError(f"teacher could not embed image {batch[ok[j]][0]!r}: {err} — fix or drop the "
                                       "image, or pass --on-error skip to skip (and report) such images")
                    bad.append((batch[ok[j]][0], err))
            results[k] = (bad, ids, emb)
            await commit()

    tasks = [asyncio.create_task(feeder()), *(asyncio.create_task(worker()) for _ in range(max(1, concurrency)))]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return state["done"]


def embed_cohort(teacher: "str | Teacher", cohort: str | os.PathLike, images_root: str | os.PathLike,
                 out: str | os.PathLike, *,
                 concurrency: int = 4, batch_size: int = 32, size: int | None = None, mode: str = "resize",
                 token: str | None = None, token_command: str | None = None, deadline: float | None = None,
                 shard: str | None = None, splits: Sequence[str] | None = None, dtype: str = "float32",
                 on_error: str = "raise", retry: RetryPolicy | None = None, progress: bool = True,
                 seed: int | None = None, max_rps: float | None = None, max_request_mb: float | None = None,
                 output_key: str | None = None, normalize: str | None = None) -> EmbedResult:
    """Embed the cohort's images with ``teacher`` (``http://HOST:PORT``, ``vertex:URL``, ``kserve:URL``,
    ``torch:CKPT``, ``timm:NAME[:W]``, or a loaded :class:`~cxrdistill.teachers.local.Teacher`) into the store at
    ``out``, skipping ids already stored. Returns what was done; raises ``CxrError`` on fatal errors (the store keeps
    every batch finished before)."""
    if batch_size < 1 or concurrency < 1:
        raise InputError("--batch-size and --concurrency must be ≥ 1")
    if on_error not in ("raise", "skip"):
        raise InputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if max_rps is not None and max_rps <= 0:
        raise InputError(f"--max-rps must be > 0, got {max_rps:g}")
    if max_request_mb is not None and max_request_mb <= 0:
        raise InputError(f"--max-request-mb must be > 0, got {max_request_mb:g}")
    api = None
    if isinstance(teacher, str) and api_spec(teacher):
        opts = {k: v for k, v in (("max_rps", max_rps), ("output_key", output_key), ("normalize", normalize),
                                  ("token_command", token_command)) if v is not None}
        if max_request_mb is not None:
            opts["max_request_bytes"] = int(max_request_mb * 2**20)
        api = open_api(teacher, token, concurrency=concurrency, retry=retry, seed=seed, **opts)
    elif token_command or output_key or max_rps or normalize:
        raise InputError("--token-command, --output-key, --max-rps and --normalize apply to a teacher reached as an "
                         "API (http://…, vertex:URL, kserve:URL)")
    df = read_table(cohort)
    items = select_items(df, images_root, splits=splits, shard=shard, cohort_path=cohort)
    return asyncio.run(_embed_items(api or teacher, items, out, concurrency=concurrency, batch_size=batch_size,
                                    size=size, mode=mode, deadline=deadline, shard=shard, dtype=dtype,
                                    on_error=on_error, progress=progress))


async def _embed_items(teacher, items, out, *, concurrency, batch_size, size, mode, deadline, shard, dtype,
                       on_error, progress) -> EmbedResult:
    t0 = time.monotonic()
    api = teacher if isinstance(teacher, ApiTeacher) else None
    try:
        if api is not None:
            await api.__aenter__()
            info = await _with_deadline(api.info(), deadline, t0, 0, len(items))
            limits = getattr(api, "limits", {})
            if limits.get("max_batch"):
                batch_size = min(batch_size, int(limits["max_batch"]))
            px, max_side = api.pixel_size(size, info)
            backend: Any = api
        else:
            local = resolve_teacher(teacher, image_size=size) if isinstance(teacher, str) else teacher
            info = local.info
            px, max_side = int(size or info.image_size), None
            backend = _LocalBackend(local)
        pre = {"size": px, "mode": mode} if px else {"size": None, "max_side": max_side, "mode": "keep-aspect"}
        store_info = {**info.to_dict(), "preprocess": pre, **({"api": api.describe()} if api is not None else {})}
        store = _Sink(out, tuple(info.embedding_shape), dtype, store_info, shard_writer(shard))
        pending = [it for it in items if it[0] not in store]
        result = EmbedResult(store=str(out), total=len(items), already=len(items) - len(pending),
                             teacher=info.to_dict())
        with Progress(progress, unit="img") as bar:
            bar.start("embedding", len(items), done=result.already)
            skipped: list = []
            try:
                coro = _extract(backend, pending, store, batch_size=batch_size, concurrency=concurrency, size=px,
                                max_side=max_side, mode=mode, on_error=on_error, progress=bar.advance,
                                skipped=skipped)
                result.embedded = await _with_deadline(coro, deadline, t0, result.already, len(items), store)
            finally:
                result.skipped = skipped
        result.seconds = time.monotonic() - t0
        if api is not None:
            s = api.stats
            result.requests, result.retries, result.bytes_sent = s["requests"], s["retries"], s["bytes_sent"]
            result.failures = dict(s["failures"])
            if api._shape is not None and not info.embedding_shape:
                result.teacher["embedding_shape"] = list(api._shape)
        return result
    finally:
        if api is not None:
            await api.__aexit__(None, None, None)


async def _with_deadline(coro, deadline: float | None, t0: float, already: int, total: int, store=None):
    if not deadline:
        return await coro
    left = deadline - (time.monotonic() - t0)
    try:
        return await asyncio.wait_for(coro, timeout=max(0.0, left))
    except asyncio.TimeoutError:
        have = len(store) if store is not None else already
        raise CxrError(f"deadline of {deadline:g} s reached with {have} image(s) stored (of {total} selected); "
                       "rerun the same command to resume") from None
