"""Fault injection for the teacher server, to test that clients survive a flaky API.

``--faults "5xx=0.1,429=0.05,delay=0.05:0.3,drop=0.05,seed=1"`` — on each embedding request (``POST /v1/embed``,
``/predict`` or ``/v2/models/NAME/infer``), independently:
  * ``delay=LO:HI`` (or ``delay=HI``): sleep a uniform time in [LO, HI] seconds before handling;
  * ``5xx=P``: with probability P answer 500, 502 or 503 without computing anything;
  * ``429=P``: with probability P answer 429 with ``Retry-After: 0``;
  * ``drop=P``: with probability P compute the embeddings, then cut the connection half-way through the response
    (the client has paid for the work but receives nothing usable);
  * ``seed=S``: the faults' random stream (the order still depends on request timing when requests overlap).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import threading
from dataclasses import dataclass

from cxrdistill.errors import InputError


def _is_embedding_request(path: str, exact: tuple[str, ...]) -> bool:
    return path in exact or (path.startswith("/v2/models/") and path.endswith("/infer"))


@dataclass
class FaultSpec:
    p5xx: float = 0.0
    p429: float = 0.0
    delay: tuple[float, float] = (0.0, 0.0)
    drop: float = 0.0
    seed: int = 0

    @classmethod
    def parse(cls, text: str | None) -> "FaultSpec | None":
        """``"5xx=0.1,delay=0.05:0.3,drop=0.05,seed=1"`` → FaultSpec; None or "" → None."""
        if not text:
            return None
        spec = cls()
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, val = item.partition("=")
            key = key.strip().lower()
            try:
                if not sep:
                    raise ValueError("missing '='")
                if key == "5xx":
                    spec.p5xx = _prob(val)
                elif key == "429":
                    spec.p429 = _prob(val)
                elif key == "drop":
                    spec.drop = _prob(val)
                elif key == "delay":
                    lo, _, hi = val.partition(":")
                    spec.delay = (float(lo), float(hi)) if hi else (0.0, float(lo))
                    if not 0 <= spec.delay[0] <= spec.delay[1]:
                        raise ValueError("need 0 ≤ LO ≤ HI")
                elif key == "seed":
                    spec.seed = int(val)
                else:
                    raise ValueError(f"unknown fault {key!r}")
            except ValueError as e:
                raise InputError(f"bad --faults item {item!r} ({e})",
                                 hint='use e.g. "5xx=0.1,429=0.05,delay=0.05:0.3,drop=0.05,seed=1"') from None
        return spec


def _prob(v: str) -> float:
    p = float(v)
    if not 0 <= p <= 1:
        raise ValueError("probability must be in [0, 1]")
    return p


class InjectedDrop(Exception):
    """Raised after a partial response so that uvicorn aborts the connection (a simulated network failure)."""


class _QuietDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, InjectedDrop)


class FaultInjector:
    """ASGI middleware applying a :class:`FaultSpec` to the embedding endpoint; counts what it injected."""

    def __init__(self, app, spec: FaultSpec):
        self.app, self.spec = app, spec
        # read once, as the server reads it when it creates its routes
        self._exact_paths = ("/v1/embed", os.environ.get("AIP_PREDICT_ROUTE") or "/predict")
        self.rng = random.Random(spec.seed)
        self.lock = threading.Lock()
        self.counts = {"requests": 0, "5xx": 0, "429": 0, "drop": 0, "delayed": 0}
        logging.getLogger("uvicorn.error").addFilter(_QuietDrops())

    def _draw(self) -> tuple[float, float, float, float, int]:
        with self.lock:
            r = self.rng
            return r.random(), r.random(), r.random(), r.uniform(*self.spec.delay), r.choice((500, 502, 503))

    async def __call__(self, scope, receive, send):
        if (scope["type"] != "http" or scope["method"] != "POST"
                or not _is_embedding_request(scope["path"], self._exact_paths)):
            return await self.app(scope, receive, send)
        u5, u429, udrop, delay, code = self._draw()
        self.counts["requests"] += 1
        if delay > 0:
            self.counts["delayed"] += 1
            await asyncio.sleep(delay)
        if u5 < self.spec.p5xx:
            self.counts["5xx"] += 1
            return await _reply(receive, send, code, {"detail": f"injected fault {code}"})
        if u429 < self.spec.p429:
            self.counts["429"] += 1
            return await _reply(receive, send, 429, {"detail": "injected rate limit"}, [(b"retry-after", b"0")])
        if udrop < self.spec.drop:
            self.counts["drop"] += 1
            return await self.app(scope, receive, _dropping(send))
        return await self.app(scope, receive, send)


async def _reply(receive, send, status: int, body: dict, headers: list | None = None) -> None:
    while True:  # drain the request first so that the connection stays usable (keep-alive)
        msg = await receive()
        if msg["type"] != "http.request" or not msg.get("more_body"):
            break
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


def _dropping(send):
    async def wrapped(msg):
        if msg["type"] == "http.response.body":
            body = msg.get("body", b"")
            await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
            raise InjectedDrop("connection dropped by fault injection")
        await send(msg)

    return wrapped
