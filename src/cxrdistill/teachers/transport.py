"""HTTP for every teacher API: one async client with retries, bearer-token auth and a request-rate cap.

Each API protocol (:mod:`.client` for ours, :mod:`.vertex`, :mod:`.kserve`) sends its requests through
:class:`HttpTransport`, so they all share one behaviour:

* transient failures — 429, 500, 502, 503, 504, timeouts, dropped connections — are retried with exponential
  backoff and full jitter, honouring ``Retry-After``, a bounded number of times;
* other 4xx stop at once with the service's own message, read from any of the error bodies in use: ours and
  FastAPI's ``{"detail": …}``, Google's ``{"error": {"code", "message", "status"}}``, and the Open Inference
  Protocol's ``{"error": "…"}``;
* the token (``--token-env`` or ``--token-command``) travels in the ``Authorization`` header only; a token from a
  command is fetched again once when a 401 arrives mid-job (cloud access tokens expire) and the request retried;
* ``max_rps`` caps how many requests start per second (quotas), alongside the concurrency limit.

Tokens never appear in messages, exceptions or reprs; URLs in messages lose their query string and user info.
"""
from __future__ import annotations

import asyncio
import random
import shlex
import subprocess
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cxrdistill.errors import CxrError, InputError

RETRY_STATUS = {429, 500, 502, 503, 504}


def _no_sniffio_lookups() -> None:
    """httpcore asks ``import sniffio`` several times per request; when sniffio is not installed, each failed import
    searches the whole ``sys.path`` again (about 0.1 ms a time, ~15% of a loopback request's client CPU). Recording
    the absence once makes that import fail at once, exactly as it would have (httpcore then assumes asyncio)."""
    import importlib.util
    import sys

    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]  # "import sniffio" raises ImportError at once


_no_sniffio_lookups()


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


class PayloadTooLarge(CxrError):
    """The service refused a request body as too large (HTTP 413, or Vertex AI's 400 "payload size exceeds")."""


def redact_url(url: str) -> str:
    """``url`` without user info, query string or fragment (where API keys and signatures live)."""
    p = urlsplit(url)
    host = p.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{p.port}" if p.port else host
    return urlunsplit((p.scheme, netloc, p.path, "", ""))


class TokenSource:
    """The bearer token: fixed (``--token-env``), or printed by a command (``--token-command``, e.g.
    ``gcloud auth print-access-token``; split like a shell would, run without one) and fetched again on 401."""

    def __init__(self, token: str | None = None, command: str | None = None, timeout: float = 120.0):
        if token and command:
            raise InputError("give the API token one way: --token-env or --token-command, not both")
        self._token = token
        self.command = command
        self.timeout = timeout
        self.runs = 0
        self._lock = asyncio.Lock()
        if command is not None and not shlex.split(command):
            raise InputError("--token-command is empty", hint='e.g. --token-command "gcloud auth print-access-token"')

    def __repr__(self) -> str:  # never shows the token
        return f"TokenSource({'command' if self.command else 'fixed' if self._token else 'none'})"

    @property
    def present(self) -> bool:
        return bool(self._token or self.command)

    @property
    def refreshable(self) -> bool:
        return self.command is not None

    def _run(self) -> str:
        argv = shlex.split(self.command)
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout, check=False)
        except FileNotFoundError:
            raise CxrError(f"--token-command: {argv[0]!r} not found; install it or give its full path") from None
        except subprocess.TimeoutExpired:
            raise CxrError(f"--token-command {argv[0]!r} did not finish within {self.timeout:g} s") from None
        self.runs += 1
        if p.returncode != 0:
            # stderr only (stdout would hold a token); its last line is usually the reason
            why = (p.stderr or "").strip().splitlines()
            raise CxrError(f"--token-command {argv[0]!r} failed (exit {p.returncode})"
                           f"{': ' + why[-1][:200] if why else ''}")
        tok = (p.stdout or "").strip()
        if not tok or any(c.isspace() for c in tok):
            raise CxrError(f"--token-command {argv[0]!r} printed {'nothing' if not tok else 'more than one word'}; "
                           "it must print the access token alone")
        return tok

    async def get(self) -> str | None:
        if self._token is None and self.command is not None:
            async with self._lock:
                if self._token is None:
                    self._token = await asyncio.to_thread(self._run)
        return self._token

    async def refresh(self, stale: str | None) -> str | None:
        """A new token after ``stale`` was refused; concurrent callers share one run of the command."""
        async with self._lock:
            if self._token == stale:
                self._token = await asyncio.to_thread(self._run)
        return self._token


class RateLimiter:
    """At most ``rps`` request starts per second (evenly spaced); ``None`` or 0: no limit."""

    def __init__(self, rps: float | None):
        self.interval = 1.0 / rps if rps else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            if self._next > now:
                await asyncio.sleep(self._next - now)
            self._next = max(now, self._next) + self.interval


class HttpTransport:
    """Async HTTP with retries, auth and a rate cap. ``url`` is the API's base; request paths are appended as given
    (so a Vertex AI predict URL ending in ``…/endpoints/E:predict`` is used as it is)."""

    def __init__(self, url: str, auth: TokenSource | str | None = None, *, concurrency: int = 4,
                 retry: RetryPolicy | None = None, seed: int | None = None, max_rps: float | None = None,
                 token_hint: str = "set the API token in the environment variable named by --token-env"):
        self.url = url.rstrip("/")
        self.shown = redact_url(self.url)
        self.auth = auth if isinstance(auth, TokenSource) else TokenSource(auth)
        self.retry = retry or RetryPolicy()
        self.concurrency = int(concurrency)
        self.rng = random.Random(seed)
        self.rate = RateLimiter(max_rps)
        self.token_hint = token_hint
        self.stats: dict[str, Any] = {"requests": 0, "retries": 0, "failures": {}, "bytes_sent": 0}
        self._client = None

    def __repr__(self) -> str:
        return f"HttpTransport({self.shown!r}, auth={self.auth!r})"

    async def open(self) -> None:
        import httpx

        r = self.retry
        self._client = httpx.AsyncClient(
            headers={"User-Agent": "cxrdistill"}, timeout=httpx.Timeout(r.timeout, connect=r.connect_timeout),
            limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def count(self, failure: str) -> None:
        self.stats["failures"][failure] = self.stats["failures"].get(failure, 0) + 1

    async def request(self, method: str, path: str = "", *, content: bytes | None = None,
                      headers: dict[str, str] | None = None):
        """One request with retries on transient failures; returns the response (status < 400). Raises
        :class:`PayloadTooLarge` when the body was refused for its size, ``CxrError`` otherwise."""
        import httpx

        last, refreshed = "", False
        attempt = 0
        while attempt < self.retry.max_attempts:
            retry_after = None
            token = await self.auth.get()
            hdrs = dict(headers or {})
            if token:
                hdrs["Authorization"] = f"Bearer {token}"
            await self.rate.wait()
            try:
                self.stats["requests"] += 1
                self.stats["bytes_sent"] += len(content or b"")
                resp = await self._client.request(method, self.url + path, content=content, headers=hdrs)
                if resp.status_code < 400:
                    return resp
                if resp.status_code == 401 and self.auth.refreshable and not refreshed:
                    refreshed = True  # the token expired mid-job: one new token, then the same request again
                    self.count("HTTP 401")
                    await self.auth.refresh(token)
                    continue
                if resp.status_code not in RETRY_STATUS:
                    msg = self._refusal(resp, path)
                    if resp.status_code == 413 or (resp.status_code == 400 and "payload size" in msg.lower()):
                        raise PayloadTooLarge(msg)
                    raise CxrError(msg)
                last = f"HTTP {resp.status_code}"
                retry_after = _retry_after(resp.headers.get("retry-after"))
            except httpx.TimeoutException as e:
                last = f"timeout ({type(e).__name__})"
            except (httpx.NetworkError, httpx.RemoteProtocolError) as e:
                last = f"connection failed ({type(e).__name__}: {_first_line(e)})"
            self.count(last.split(" (")[0])
            attempt += 1
            if attempt < self.retry.max_attempts:
                self.stats["retries"] += 1
                await asyncio.sleep(self.retry.delay(attempt - 1, self.rng, retry_after))
        raise CxrError(f"teacher at {self.shown} failed {self.retry.max_attempts} times on {path or 'its URL'} "
                       f"(last: {last}); rerun the same command later to resume")

    def _refusal(self, resp, path: str) -> str:
        detail = error_message(resp)
        msg = f"teacher at {self.shown} refused {path or 'the request'} (HTTP {resp.status_code}): " \
              f"{detail or 'no detail'}"
        if resp.status_code == 401:
            msg += (" — the token from --token-command was refused again right after a fresh one was fetched"
                    if self.auth.refreshable else f" — {self.token_hint}")
        elif resp.status_code == 403:
            msg += " — the token is valid but lacks permission for this endpoint (IAM role, project)"
        return msg


def error_message(resp) -> str:
    """The service's own error text from any of the error bodies in use (see the module docstring)."""
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:300]
    if not isinstance(body, dict):
        return str(body)[:300]
    err = body.get("error", body.get("detail"))
    if isinstance(err, dict):  # Google: {"error": {"code": 429, "message": "...", "status": "RESOURCE_EXHAUSTED"}}
        text = str(err.get("message") or err.get("description") or "")
        status = err.get("status")
        return (f"{status}: {text}" if status and text else text or str(status or ""))[:300]
    return str(err if err is not None else "")[:300]


def _retry_after(v: str | None) -> float | None:
    try:
        return max(0.0, float(v)) if v is not None else None
    except ValueError:
        return None


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0][:200] if s else ""
