"""Extract teacher embeddings for a cohort into an embedding store: over HTTP (async httpx) or in-process.

One loop serves both: ``concurrency`` workers each take the next batch of images, decode + preprocess them from
disk (a thread pool), have the backend embed them, and append the result to the store — one durable chunk per
batch. A crash or kill loses at most the batches in flight; a rerun skips every id already in the store.

Only pixels leave the machine: each image is decoded with ``images.decode.load_gray``, preprocessed, and re-encoded
with ``encode_png`` (no text/time/EXIF chunks); the request carries no file names, ids or DICOM headers
(:mod:`cxrdistill.teachers.wire`). Transient failures (429, 5xx, timeouts, dropped connections, truncated
responses) are retried with exponential backoff and full jitter, a bounded number of times, within an overall
deadline.
"""
from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cxrdistill.errors import CxrError, InputError
from cxrdistill.teachers import wire
from cxrdistill.teachers.local import Teacher, TeacherInfo, is_remote, resolve_teacher

RETRY_STATUS = {429, 500, 502, 503, 504}


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And Jitter", 2015):
    sleep ``uniform(0, min(cap, base · 2^attempt))``; a server's ``Retry-After`` is honoured up to ``cap``."""

    max_attempts: int = 8
    base: float = 0.2
    cap: float = 10.0
    timeout: float = 120.0  # per request (read), seconds
    connect_timeout: float = 10.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        d = rng.uniform(0, min(self.cap, self.base * 2 ** attempt))
        if retry_after is not None:
            d = max(d, min(self.cap, retry_after))
        return d


class RemoteTeacher:
    """Async client of a teacher server (``cxrdistill teacher serve``). Use as ``async with RemoteTeacher(url) as t``.

    ``token``: the bearer token (sent as a header only; it never appears in messages or exceptions).
    """

    def __init__(self, url: str, token: str | None = None, *, concurrency: int = 4,
                 retry: RetryPolicy | None = None, seed: int | None = None):
        self.url = url.rstrip("/")
        self._token = token
        self.retry = retry or RetryPolicy()
        self.concurrency = int(concurrency)
        self.rng = random.Random(seed)
        self.stats = {"requests": 0, "retries": 0, "failures": {}}
        self._client = None
        self.limits: dict[str, Any] = {}

    def __repr__(self) -> str:  # never shows the token
        return f"RemoteTeacher({self.url!r}, auth={'yes' if self._token else 'no'})"

    async def __aenter__(self) -> "RemoteTeacher":
        import httpx

        headers = {"User-Agent": "cxrdistill"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        r = self.retry
        self._client = httpx.AsyncClient(
            base_url=self.url, headers=headers,
            timeout=httpx.Timeout(r.timeout, connect=r.connect_timeout),
            limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # ------------------------------------------------------------------ requests with retries
    async def _request(self, method: str, path: str, **kw):
        """One request with retries on transient failures; returns the response (status < 400)."""
        import httpx

        last = ""
        for attempt in range(self.retry.max_attempts):
            retry_after = None
            try:
                self.stats["requests"] += 1
                resp = await self._client.request(method, path, **kw)
                if resp.status_code < 400:
                    return resp
                if resp.status_code not in RETRY_STATUS:
                    raise CxrError(self._refusal(resp, path))
                last = f"HTTP {resp.status_code}"
                retry_after = _retry_after(resp.headers.get("retry-after"))
            except httpx.TimeoutException as e:
                last = f"timeout ({type(e).__name__})"
            except (httpx.NetworkError, httpx.RemoteProtocolError) as e:
                last = f"connection failed ({type(e).__name__}: {_first_line(e)})"
            key = last.split(" (")[0]
            self.stats["failures"][key] = self.stats["failures"].get(key, 0) + 1
            if attempt + 1 < self.retry.max_attempts:
                self.stats["retries"] += 1
                await asyncio.sleep(self.retry.delay(attempt, self.rng, retry_after))
        raise CxrError(f"teacher at {self.url} failed {self.retry.max_attempts} times on {path} (last: {last}); "
                       "rerun the same command later to resume")

    def _refusal(self, resp, path: str) -> str:
        try:
            detail = str(resp.json().get("detail", ""))[:300]
        except ValueError:
            detail = resp.text[:300]
        msg = f"teacher at {self.url} refused {path} (HTTP {resp.status_code}): {detail or 'no detail'}"
        if resp.status_code == 401:
            msg += " — set the API token in the environment variable named by --token-env"
        return msg

    async def info(self) -> TeacherInfo:
        resp = await self._request("GET", "/v1/info")
        try:
            d = resp.json()
        except ValueError:
            raise CxrError(f"{self.url}/v1/info did not return JSON; is this a cxrdistill teacher server?") from None
        self.limits = dict(d.get("limits") or {})
        return TeacherInfo.from_dict(d)

    async def embed_pngs(self, pngs: Sequence[bytes]) -> np.ndarray:
        """Embeddings of PNG-encoded images (in order). Truncated responses are retried like dropped connections."""
        body = wire.pack_images(list(pngs))
        max_bytes = int(self.limits.get("max_request_bytes") or 0)
        if max_bytes and len(body) > max_bytes and len(pngs) > 1:  # split rather than be refused
            h = len(pngs) // 2
            return np.concatenate([await self.embed_pngs(pngs[:h]), await self.embed_pngs(pngs[h:])])
        for attempt in range(self.retry.max_attempts):
            resp = await self._request("POST", "/v1/embed", content=body,
                                       headers={"Content-Type": wire.PNG_BATCH, "Accept": wire.EMBEDDINGS})
            try:
                out = wire.decode_embeddings(resp.content, resp.headers.get("x-embedding-shape"),
                                             resp.headers.get("x-embedding-dtype"))
            except wire.WireError as e:
                self.stats["failures"]["bad response"] = self.stats["failures"].get("bad response", 0) + 1
                if attempt + 1 == self.retry.max_attempts:
                    raise CxrError(f"teacher at {self.url} sent an unreadable response ({e})") from None
                await asyncio.sleep(self.retry.delay(attempt, self.rng))
                continue
            if out.shape[0] != len(pngs):
                raise CxrError(f"teacher at {self.url} returned {out.shape[0]} embeddings for {len(pngs)} images")
            return out
        raise AssertionError("unreachable")


def _retry_after(v: str | None) -> float | None:
    try:
        return max(0.0, float(v)) if v is not None else None
    except ValueError:
        return None


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0][:200] if s else ""


# ---------------------------------------------------------------------------------------------------- backends
class _LocalBackend:
    """In-process teacher: the batch's pixels go straight to the model (one forward at a time)."""

    remote = False

    def __init__(self, teacher):
        self.teacher = teacher
        self.lock = threading.Lock()

    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        return pixels

    def _embed(self, pixels: np.ndarray) -> np.ndarray:
        with self.lock:
            return self.teacher.embed(pixels)

    async def embed(self, payload: np.ndarray) -> np.ndarray:
        return await asyncio.to_thread(self._embed, payload)


class _RemoteBackend:
    remote = True

    def __init__(self, client: RemoteTeacher):
        self.client = client

    def prepare(self, pixels: np.ndarray) -> list[bytes]:
        from cxrdistill.images.decode import encode_png

        return [encode_png(p) for p in pixels]

    async def embed(self, payload: list[bytes]) -> np.ndarray:
        return await self.client.embed_pngs(payload)


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
    teacher: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"store": self.store, "total": self.total, "already": self.already, "embedded": self.embedded,
                "skipped": len(self.skipped), "seconds": round(self.seconds, 3), "images_per_s": round(self.rate, 2),
                "requests": self.requests, "retries": self.retries, "failures": self.failures,
                "teacher": self.teacher}


def select_items(cohort, images_root: str | os.PathLike, *, splits: Sequence[str] | None = None,
                 shard: str | None = None, cohort_path: object = None) -> list[tuple[str, Path]]:
    """``(image_id, absolute image path)`` of the cohort rows to embed: chosen splits, then this shard's ids."""
    from cxrdistill.storage.store import select_shard

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


def _load_batch(paths: Sequence[Path], size: int, mode: str, on_error: str
                ) -> tuple[np.ndarray, list[int], list[tuple[int, str]]]:
    """Decode + preprocess; returns (pixels of the good ones, their positions, [(position, error)])."""
    from cxrdistill.images.decode import load_gray
    from cxrdistill.images.preprocess import preprocess

    imgs, ok, bad = [], [], []
    for k, p in enumerate(paths):
        try:
            imgs.append(preprocess(load_gray(p, draft=2 * size), size, mode))
            ok.append(k)
        except InputError as e:
            if on_error == "raise":
                raise
            bad.append((k, str(e)))
    arr = np.stack(imgs) if imgs else np.zeros((0, size, size), np.uint8)
    return arr, ok, bad


async def _extract(backend, items: list[tuple[str, Path]], store, *, batch_size: int, concurrency: int, size: int,
                   mode: str, on_error: str, progress: Callable[[int], None], skipped: list) -> int:
    loop = asyncio.get_running_loop()
    batches = [items[s:s + batch_size] for s in range(0, len(items), batch_size)]
    next_batch = iter(batches)
    store_lock = asyncio.Lock()
    done = 0
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="embed-prep")

    def prepare(batch):
        pixels, ok, bad = _load_batch([p for _, p in batch], size, mode, on_error)
        return pixels, ok, bad, (backend.prepare(pixels) if len(pixels) else None)

    async def worker():
        nonlocal done
        for batch in next_batch:  # a shared iterator: each batch goes to exactly one worker
            pixels, ok, bad, payload = await loop.run_in_executor(pool, prepare, batch)
            skipped.extend((batch[k][0], err) for k, err in bad)
            if payload is None:
                progress(len(batch))
                continue
            emb = await backend.embed(payload)
            ids = [batch[k][0] for k in ok]
            async with store_lock:  # appends are serialised; each one is durable when it returns
                await loop.run_in_executor(pool, store.append, ids, emb)
            done += len(ids)
            progress(len(batch))

    tasks = [asyncio.create_task(worker()) for _ in range(max(1, concurrency))]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return done


class _Progress:
    """A rich progress bar with rate and ETA on a terminal; quiet otherwise."""

    def __init__(self, enabled: bool, total: int, desc: str, start: int = 0):
        import sys

        self.enabled = enabled and sys.stderr.isatty()
        self.total, self.desc, self.start = total, desc, start
        self._p = self._task = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
            from rich.text import Text

            class Rate(ProgressColumn):
                def render(self, task) -> Text:
                    return Text(f"{task.speed:6.1f} img/s" if task.speed else "     … img/s",
                                style="progress.data.speed")

            self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(),
                               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                               console=Console(stderr=True))
            self._p.__enter__()
            self._task = self._p.add_task(self.desc, total=self.total, completed=self.start)
        return self

    def advance(self, n: int) -> None:
        if self._p is not None:
            self._p.advance(self._task, n)

    def __exit__(self, *exc):
        if self._p is not None:
            self._p.__exit__(*exc)


def embed_cohort(teacher: "str | Teacher", cohort: str | os.PathLike, images_root: str | os.PathLike,
                 out: str | os.PathLike, *,
                 concurrency: int = 4, batch_size: int = 32, size: int | None = None, mode: str = "resize",
                 token: str | None = None, deadline: float | None = None, shard: str | None = None,
                 splits: Sequence[str] | None = None, dtype: str = "float32", on_error: str = "raise",
                 retry: RetryPolicy | None = None, progress: bool = True, seed: int | None = None) -> EmbedResult:
    """Embed the cohort's images with ``teacher`` (``http://HOST:PORT``, ``torch:CKPT``, ``timm:NAME[:W]``, or a
    loaded :class:`~cxrdistill.teachers.local.Teacher`) into the store at ``out``, skipping ids already stored.
    Returns what was done; raises ``CxrError`` on fatal errors (the store keeps every batch finished before)."""
    from cxrdistill.storage.io import read_table

    if batch_size < 1 or concurrency < 1:
        raise InputError("--batch-size and --concurrency must be ≥ 1")
    if on_error not in ("raise", "skip"):
        raise InputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    df = read_table(cohort)
    items = select_items(df, images_root, splits=splits, shard=shard, cohort_path=cohort)
    return asyncio.run(_embed_items(teacher, items, out, concurrency=concurrency, batch_size=batch_size, size=size,
                                    mode=mode, token=token, deadline=deadline, shard=shard, dtype=dtype,
                                    on_error=on_error, retry=retry, progress=progress, seed=seed))


async def _embed_items(teacher, items, out, *, concurrency, batch_size, size, mode, token, deadline, shard,
                       dtype, on_error, retry, progress, seed) -> EmbedResult:
    from cxrdistill.storage.store import EmbeddingStore, shard_writer

    t0 = time.monotonic()
    client = None
    try:
        if isinstance(teacher, str) and is_remote(teacher):
            client = RemoteTeacher(teacher, token, concurrency=concurrency, retry=retry, seed=seed)
            await client.__aenter__()
            info = await _with_deadline(client.info(), deadline, t0, 0, len(items))
            if client.limits.get("max_batch"):
                batch_size = min(batch_size, int(client.limits["max_batch"]))
            backend: Any = _RemoteBackend(client)
        else:
            local = resolve_teacher(teacher, image_size=size) if isinstance(teacher, str) else teacher
            info = local.info
            backend = _LocalBackend(local)
        px = int(size or info.image_size)
        store_info = {**info.to_dict(), "preprocess": {"size": px, "mode": mode}}
        store = EmbeddingStore.open_or_create(out, info.embedding_shape, dtype, store_info,
                                              writer=shard_writer(shard))
        prev = store.info.get("preprocess")
        if prev and (int(prev.get("size", px)), prev.get("mode", mode)) != (px, mode):
            raise InputError(f"store was filled with images preprocessed as {prev}, this run uses "
                             f"{{'size': {px}, 'mode': {mode!r}}}", path=out,
                             hint="use the same --size as before, or a new --out")
        pending = [it for it in items if it[0] not in store]
        result = EmbedResult(store=str(out), total=len(items), already=len(items) - len(pending),
                             teacher=info.to_dict())
        with _Progress(progress, len(items), "embedding", start=result.already) as bar:
            skipped: list = []
            try:
                coro = _extract(backend, pending, store, batch_size=batch_size, concurrency=concurrency, size=px,
                                mode=mode, on_error=on_error, progress=bar.advance, skipped=skipped)
                result.embedded = await _with_deadline(coro, deadline, t0, result.already, len(items), store)
            finally:
                result.skipped = skipped
        result.seconds = time.monotonic() - t0
        if client is not None:
            result.requests, result.retries = client.stats["requests"], client.stats["retries"]
            result.failures = dict(client.stats["failures"])
        return result
    finally:
        if client is not None:
            await client.__aexit__(None, None, None)


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
