"""The embedding store: an append-only, crash-safe directory of teacher embeddings keyed by ``image_id``.

Layout of ``STORE/``::

    manifest.json                 format, version, teacher info, per-item shape, dtype, created, chunk list
                                  (name, rows, sha256, writer) — rewritten atomically after each chunk
    chunks/<writer>-<seq>.npy     (n, *shape) float16/float32 array, plain .npy (np.load(..., mmap_mode="r"))
    chunks/<writer>-<seq>.ids     JSON: the chunk's ids in row order + the .npy's sha256 — its *commit record*

Crash safety. A chunk is written to a temporary file, fsynced, then published under its final name with
``os.link`` (never clobbers: two writers can share a directory); the ``.npy`` first, the ``.ids`` last. A reader
only sees chunks whose ``.ids`` exists, and those are complete. The manifest is updated after each chunk under a
file lock; if a writer dies between publishing a chunk and updating the manifest, the next ``open`` adopts the chunk
(its ``.ids`` file carries its checksum). A ``.npy`` without ``.ids`` (writer killed in between) is invisible and is
cleaned up later. Sharded extraction: each shard writes with its own ``writer`` name into the same directory.

Duplicate ids: ``append`` skips ids already stored (first write wins; this makes re-running an extraction
idempotent) and rejects ids repeated within one call. If two writers stored the same id, readers keep the first
chunk in name order and ``verify`` reports it; ``compact``/``merge`` drop the extra rows.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from cxrdistill.errors import InputError
from cxrdistill.storage.io import atomic_open, fsync_dir

STORE_FORMAT = "cxrdistill-embeddings"
STORE_VERSION = 1
DTYPES = ("float16", "float32")
MAX_CHUNK_BYTES = 128 * 2**20  # a large append is split into chunks of at most this size
_WRITER_RE = re.compile(r"^[A-Za-z0-9_.]{1,64}$")
_CHUNK_RE = re.compile(r"^([A-Za-z0-9_.]{1,64})-(\d{6,})$")


#: the steps of a chunk write at which the crash-safety tests kill the writer
FAILPOINTS = ("after_tmp", "after_npy", "after_ids", "after_manifest")
_kill_at: str | None = None  # set only by kill_at_for_testing(); never from the environment or a configuration


def kill_at_for_testing(step: str | None) -> None:
    """Testing hook of the crash-safety tests: from now on, this process kills itself (SIGKILL) when a chunk write
    reaches ``step`` (one of :data:`FAILPOINTS`); ``None`` turns it off. Nothing in cxrdistill calls it: only a
    test's writer process does, so no environment variable or option can trigger it by accident."""
    global _kill_at
    if step is not None and step not in FAILPOINTS:
        raise ValueError(f"unknown failpoint {step!r}; choose one of {', '.join(FAILPOINTS)}")
    _kill_at = step


def _failpoint(name: str) -> None:
    if _kill_at == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _publish_exclusive(tmp: Path, final: Path) -> bool:
    """Give ``tmp`` the name ``final`` unless ``final`` exists (then return False). Atomic and never clobbering."""
    try:
        os.link(tmp, final)
    except FileExistsError:
        return False
    except OSError as e:  # file systems without hard links: rename (a same-name race is then the caller's problem)
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if final.exists():
            return False
        os.replace(tmp, final)
        return True
    tmp.unlink()
    return True


class _HashWriter:
    """File-like wrapper that hashes what it writes (np.lib.format.write_array writes through it in blocks)."""

    def __init__(self, fh):
        self.fh, self.h, self.n = fh, hashlib.sha256(), 0

    def write(self, b) -> int:
        mv = memoryview(b).cast("B")
        self.h.update(mv)
        self.fh.write(mv)
        self.n += len(mv)
        return len(mv)


def sha256_file(path: str | os.PathLike, block: int = 8 * 2**20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(block)
            if not b:
                return h.hexdigest()
            h.update(b)


# --------------------------------------------------------------------------------------------------------- sharding
def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (0 ≤ i < n) → ``(i, n)``; None → None."""
    if spec is None or spec == "":
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
    if not m or not (0 <= int(m.group(1)) < int(m.group(2))):
        raise InputError(f"invalid shard {spec!r}", hint="write it as i/n with 0 ≤ i < n, e.g. --shard 0/4")
    return int(m.group(1)), int(m.group(2))


def shard_of(image_id: str, n: int) -> int:
    """The shard (0..n-1) an id belongs to: a stable hash, the same on every machine and Python version."""
    d = hashlib.blake2b(image_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(d, "little") % n


def select_shard(ids: Iterable[str], spec: str | tuple[int, int] | None) -> list[str]:
    """The ids of shard ``spec`` (``"i/n"``), in their input order; all ids when ``spec`` is None."""
    sh = parse_shard(spec) if isinstance(spec, (str, type(None))) else spec
    ids = list(ids)
    if sh is None:
        return ids
    i, n = sh
    return [x for x in ids if shard_of(x, n) == i]


def shard_writer(spec: str | tuple[int, int] | None, default: str = "main") -> str:
    """The writer name a shard uses in a shared store directory (``shard2of4``)."""
    sh = parse_shard(spec) if isinstance(spec, (str, type(None))) else spec
    return default if sh is None else f"shard{sh[0]}of{sh[1]}"


# ------------------------------------------------------------------------------------------------------------ store
@dataclass
class _Chunk:
    name: str
    n: int
    sha256: str
    writer: str
    ids: list[str]
    offset: int = 0  # byte offset of the data in the .npy
    keep: np.ndarray | None = None  # rows that are not duplicates of an earlier chunk (None: all)
    extra: dict[str, Any] = field(default_factory=dict)


class EmbeddingStore:
    """See the module docstring. Open with :meth:`create`, :meth:`open` or :meth:`open_or_create`."""

    def __init__(self, path: str | os.PathLike, mode: str = "r", writer: str = "main"):
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        if not _WRITER_RE.match(writer):
            raise InputError(f"invalid writer name {writer!r}", hint="use letters, digits, '_' and '.' (≤ 64)")
        self.path = Path(path)
        self.mode = mode
        self.writer = writer
        mpath = self.path / "manifest.json"
        if not mpath.exists():
            what = "does not exist" if not self.path.exists() else "is not an embedding store (no manifest.json)"
            raise InputError(what, path=self.path,
                             hint="create it with 'cxrdistill embed' or 'cxrdistill embeddings import'")
        self._manifest = self._read_manifest()
        m = self._manifest
        if m.get("format") != STORE_FORMAT:
            raise InputError("is not a cxrdistill embedding store", path=mpath)
        if int(m.get("version", 0)) > STORE_VERSION:
            raise InputError(f"store format version {m.get('version')} is newer than this cxrdistill supports",
                             path=mpath, hint="upgrade cxrdistill")
        self.item_shape: tuple[int, ...] = tuple(int(x) for x in m["shape"])
        self.dtype = np.dtype(m["dtype"])
        self.info: dict[str, Any] = dict(m.get("teacher") or {})
        self._row_bytes = int(np.prod(self.item_shape, dtype=np.int64)) * self.dtype.itemsize
        self._maps: dict[str, np.memmap] = {}
        self._next_seq = 1
        self.reload()

    # ------------------------------------------------------------------ opening
    @classmethod
    def create(cls, path: str | os.PathLike, shape_per_item: Sequence[int], dtype: Any = "float32",
               info: dict[str, Any] | None = None, *, writer: str = "main",
               exist_ok: bool = False) -> "EmbeddingStore":
        """Create an empty store (atomically: a directory is renamed into place) and open it for appending.

        ``shape_per_item``: ``(D,)`` or ``(T, D)``; ``dtype``: float16 or float32; ``info``: the teacher's
        description (``name``, ``version``, … JSON-serialisable). With ``exist_ok`` an existing store with the same
        shape, dtype and teacher name/version is opened instead.
        """
        path = Path(path)
        shape = tuple(int(x) for x in shape_per_item)
        dt = np.dtype(dtype).name
        if dt not in DTYPES:
            raise InputError(f"embedding dtype {dt!r} is not supported", hint="use float16 or float32")
        if len(shape) not in (1, 2) or min(shape) < 1:
            raise InputError(f"embedding shape per item {shape} is not supported", hint="use (D,) or (T, D)")
        info = dict(info or {})
        json.dumps(info)  # fail early on non-JSON info
        if (path / "manifest.json").exists():
            if not exist_ok:
                raise InputError("an embedding store already exists here", path=path,
                                 hint="open it, or choose another --out")
            st = cls(path, "a", writer)
            st._check_compatible(shape, dt, info)
            return st
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise InputError("exists and is not an embedding store", path=path, hint="choose a new or empty directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.creating-{uuid.uuid4().hex[:8]}")
        (tmp / "chunks").mkdir(parents=True)
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        manifest = {"format": STORE_FORMAT, "version": STORE_VERSION, "teacher": info, "shape": list(shape),
                    "dtype": dt, "created": now, "updated": now, "n_rows": 0, "chunks": []}
        with atomic_open(tmp / "manifest.json", "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=1)
        fsync_dir(tmp)
        try:
            os.rename(tmp, path)  # replaces only an empty directory; a concurrent creator makes this fail
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if e.errno in (errno.ENOTEMPTY, errno.EEXIST) and (path / "manifest.json").exists() and exist_ok:
                st = cls(path, "a", writer)
                st._check_compatible(shape, dt, info)
                return st
            raise
        fsync_dir(path.parent)
        return cls(path, "a", writer)

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r", *, writer: str = "main") -> "EmbeddingStore":
        """Open an existing store: ``mode="r"`` to read, ``"a"`` to append (as ``writer``, e.g. ``shard0of4``)."""
        return cls(path, mode, writer)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, shape_per_item: Sequence[int], dtype: Any = "float32",
                       info: dict[str, Any] | None = None, *, writer: str = "main") -> "EmbeddingStore":
        """Open ``path`` for appending, creating it if needed; refuses a store of another teacher/shape/dtype."""
        return cls.create(path, shape_per_item, dtype, info, writer=writer, exist_ok=True)

    def _check_compatible(self, shape: tuple[int, ...], dtype: str, info: dict[str, Any]) -> None:
        problems = []
        if self.item_shape != tuple(shape):
            problems.append(f"shape per item {self.item_shape} ≠ {tuple(shape)}")
        if self.dtype.name != dtype:
            problems.append(f"dtype {self.dtype.name} ≠ {dtype}")
        for k in ("name", "version"):
            if k in info and k in self.info and str(info[k]) != str(self.info[k]):
                problems.append(f"teacher {k} {self.info[k]!r} ≠ {info[k]!r}")
        if problems:
            raise InputError("holds embeddings of another kind: " + "; ".join(problems), path=self.path,
                             hint="use a new --out directory for this teacher")

    def _read_manifest(self) -> dict[str, Any]:
        p = self.path / "manifest.json"
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"manifest is unreadable ({e})", path=p,
                             hint="the store is damaged; restore manifest.json from a backup") from None

    def reload(self) -> None:
        """(Re)scan the chunks on disk — picks up chunks written since opening, e.g. by other shard writers."""
        self._manifest = self._read_manifest()
        cdir = self.path / "chunks"
        names = sorted(p.name[:-4] for p in cdir.glob("*.ids") if _CHUNK_RE.match(p.name[:-4]))
        listed = {c["name"]: c for c in self._manifest.get("chunks", [])}
        on_disk = set(names)
        missing = [n for n in listed if n not in on_disk]
        if missing:
            raise InputError(f"{len(missing)} chunk(s) listed in the manifest are missing, e.g. {missing[0]!r}",
                             path=self.path, hint="files were deleted or not copied; restore them from a backup")
        chunks: list[_Chunk] = []
        for name in names:
            rec = self._read_ids(name)
            sha = listed[name]["sha256"] if name in listed else rec["npy_sha256"]
            if sha != rec["npy_sha256"]:
                raise InputError(f"chunk {name}: checksum in the manifest ≠ checksum in its .ids file",
                                 path=self.path, hint="the store is damaged; run 'cxrdistill embeddings info --verify'")
            ch = _Chunk(name, len(rec["ids"]), sha, rec.get("writer", name.rsplit("-", 1)[0]), rec["ids"])
            ch.offset = self._check_npy(ch)
            chunks.append(ch)
        # First occurrence of an id wins (chunks in name order); later duplicates are masked out.
        seen: dict[str, int] = {}
        ids: list[str] = []
        for ch in chunks:
            keep = None
            for r, i in enumerate(ch.ids):
                if i in seen:
                    if keep is None:
                        keep = np.ones(ch.n, dtype=bool)
                    keep[r] = False
                else:
                    seen[i] = len(ids)
                    ids.append(i)
            ch.keep = keep
        self._chunks = chunks
        self._ids = ids
        self._pos = seen
        self._loc: tuple[np.ndarray, np.ndarray] | None = None
        self._maps.clear()
        own = [int(m.group(2)) for p in cdir.iterdir() if (m := _CHUNK_RE.match(p.name.split(".")[0]))
               and m.group(1) == self.writer]
        self._next_seq = max(own, default=0) + 1
        if self.mode == "a":
            unlisted = [c for c in chunks if c.name not in listed]
            if unlisted:
                self._update_manifest(unlisted)  # adopt chunks published just before a crash
            self._clean_stale()

    def _read_ids(self, name: str) -> dict[str, Any]:
        p = self.path / "chunks" / f"{name}.ids"
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
            if not isinstance(rec.get("ids"), list) or not isinstance(rec.get("npy_sha256"), str):
                raise ValueError("missing 'ids' or 'npy_sha256'")
        except (OSError, ValueError) as e:
            raise InputError(f"chunk id file is unreadable ({e})", path=p,
                             hint="the store is damaged; run 'cxrdistill embeddings info --verify'") from None
        return rec

    def _check_npy(self, ch: _Chunk) -> int:
        """Check a chunk's .npy header and size against its ids; return the data offset."""
        p = self.path / "chunks" / f"{ch.name}.npy"
        try:
            with open(p, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(fh)
                offset = fh.tell()
            size = p.stat().st_size
        except (OSError, ValueError) as e:
            raise InputError(f"chunk {ch.name}.npy is missing or unreadable ({e})", path=self.path,
                             hint="the store is damaged; run 'cxrdistill embeddings info --verify'") from None
        want = (ch.n, *self.item_shape)
        if tuple(shape) != want or np.dtype(dtype) != self.dtype or fortran:
            raise InputError(f"chunk {ch.name}.npy holds {dtype} {tuple(shape)}, expected {self.dtype} {want}",
                             path=self.path, hint="the store is damaged")
        if size != offset + ch.n * self._row_bytes:
            raise InputError(f"chunk {ch.name}.npy has {size} bytes, expected {offset + ch.n * self._row_bytes}",
                             path=self.path, hint="the store is damaged (truncated file)")
        return offset

    def _clean_stale(self, age_s: float = 3600.0) -> None:
        """Remove temp files and orphan .npy (no .ids) left by crashed writers more than ``age_s`` ago."""
        now = time.time()
        for p in (self.path / "chunks").iterdir():
            stem = p.name.split(".")[0]
            orphan = p.suffix == ".npy" and not (p.with_suffix(".ids")).exists() and _CHUNK_RE.match(stem)
            if (p.name.startswith(".tmp-") or orphan):
                with contextlib.suppress(OSError):
                    if now - p.stat().st_mtime > age_s:
                        p.unlink()

    # ---------------------------------------------------------------- properties
    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        """The stored ids (unique), in store order (chunks by name, rows in order)."""
        return list(self._ids)

    @property
    def shape(self) -> tuple[int, ...]:
        """``(N, *shape_per_item)``, like a numpy array."""
        return (len(self._ids), *self.item_shape)

    @property
    def chunks(self) -> list[str]:
        return [c.name for c in self._chunks]

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._manifest))

    def nbytes(self) -> int:
        return sum(c.n for c in self._chunks) * self._row_bytes

    def has(self, image_id: str) -> bool:
        return image_id in self._pos

    __contains__ = has

    def missing(self, ids: Iterable[str]) -> list[str]:
        """The ids not stored yet, in input order (what an interrupted extraction still has to do)."""
        return [i for i in ids if i not in self._pos]

    def __repr__(self) -> str:
        return (f"EmbeddingStore({str(self.path)!r}, n={len(self)}, shape={self.item_shape}, dtype={self.dtype.name},"
                f" teacher={self.info.get('name')!r})")

    # ------------------------------------------------------------------- writing
    def append(self, ids: Sequence[str], arr: Any) -> int:
        """Store ``arr[k]`` under ``ids[k]``. Ids already stored are skipped; returns the number of rows written.

        Values must be finite and fit the store dtype. The rows are durable (fsynced) when this returns.
        """
        if self.mode != "a":
            raise InputError("store is open read-only", path=self.path, hint="open it with mode='a' to append")
        ids = list(ids)
        a = np.asarray(arr)
        if a.ndim == 0 or a.shape[0] != len(ids):
            raise InputError(f"{len(ids)} ids but an array of shape {a.shape}", path=self.path)
        if tuple(a.shape[1:]) != self.item_shape:
            raise InputError(f"embeddings of shape {tuple(a.shape[1:])} cannot go into a store of shape "
                             f"{self.item_shape}", path=self.path, hint="check the teacher and the pooling option")
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise InputError(f"embeddings have dtype {a.dtype}, expected floats", path=self.path)
        for i in ids:
            if not isinstance(i, str) or not i or "\n" in i or "\0" in i:
                raise InputError(f"invalid image id {i!r}", path=self.path,
                                 hint="ids are non-empty strings without newlines")
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise InputError(f"image id {dup!r} appears twice in one append", path=self.path,
                             hint="image ids must be unique")
        new = [k for k, i in enumerate(ids) if i not in self._pos]
        if not new:
            return 0
        if len(new) != len(ids):
            ids = [ids[k] for k in new]
            a = a[new]
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.ascontiguousarray(a, dtype=self.dtype)
        finite = np.isfinite(out).reshape(len(ids), -1).all(axis=1)
        if not finite.all():
            bad = ids[int(np.flatnonzero(~finite)[0])]
            src_finite = np.isfinite(np.asarray(a, dtype=np.float64)).reshape(len(ids), -1).all(axis=1)
            why = "contains NaN or infinite values" if not src_finite.all() else f"overflows {self.dtype.name}"
            raise InputError(f"embedding of {bad!r} {why} ({int((~finite).sum())} row(s) affected)", path=self.path,
                             hint="check the teacher's output" + ("; use float32" if src_finite.all() else ""))
        step = max(1, MAX_CHUNK_BYTES // max(1, self._row_bytes))
        for s in range(0, len(ids), step):
            self._write_chunk(ids[s:s + step], out[s:s + step])
        return len(ids)

    def _write_chunk(self, ids: list[str], arr: np.ndarray) -> None:
        cdir = self.path / "chunks"
        tag = uuid.uuid4().hex[:12]
        tmp_npy, tmp_ids = cdir / f".tmp-{tag}.npy", cdir / f".tmp-{tag}.ids"
        try:
            with open(tmp_npy, "wb") as fh:
                hw = _HashWriter(fh)
                np.lib.format.write_array(hw, arr, allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())
            sha = hw.h.hexdigest()
            _failpoint("after_tmp")
            while True:
                name = f"{self.writer}-{self._next_seq:06d}"
                self._next_seq += 1
                if _publish_exclusive(tmp_npy, cdir / f"{name}.npy"):
                    break
            _failpoint("after_npy")
            rec = {"chunk": name, "writer": self.writer, "n": len(ids), "npy_sha256": sha,
                   "shape": list(arr.shape), "dtype": self.dtype.name, "ids": ids}
            with open(tmp_ids, "w", encoding="utf-8") as fh:
                json.dump(rec, fh, separators=(",", ":"))
                fh.flush()
                os.fsync(fh.fileno())
            if not _publish_exclusive(tmp_ids, cdir / f"{name}.ids"):  # pragma: no cover - we own this name
                raise RuntimeError(f"chunk {name}.ids appeared while writing it")
            fsync_dir(cdir)
        finally:
            for t in (tmp_npy, tmp_ids):
                with contextlib.suppress(FileNotFoundError):
                    t.unlink()
        _failpoint("after_ids")
        ch = _Chunk(name, len(ids), sha, self.writer, ids)
        ch.offset = self._check_npy(ch)
        self._update_manifest([ch])
        _failpoint("after_manifest")
        base = len(self._ids)
        for r, i in enumerate(ids):
            self._pos[i] = base + r
        self._ids.extend(ids)
        self._chunks.append(ch)
        self._loc = None  # rebuilt on the next read (appending stays O(chunk))

    def _update_manifest(self, new: list[_Chunk]) -> None:
        """Add chunk entries to manifest.json: read-modify-write under an exclusive lock, written atomically."""
        import fcntl

        with open(self.path / ".lock", "a+") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)
            try:
                m = self._read_manifest()
                names = {c["name"] for c in m.get("chunks", [])}
                for ch in new:
                    if ch.name not in names:
                        m.setdefault("chunks", []).append({"name": ch.name, "rows": ch.n, "sha256": ch.sha256,
                                                           "writer": ch.writer})
                m["chunks"].sort(key=lambda c: c["name"])
                m["n_rows"] = int(sum(c["rows"] for c in m["chunks"]))
                m["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                with atomic_open(self.path / "manifest.json", "w", encoding="utf-8") as fh:
                    json.dump(m, fh, indent=1)
                self._manifest = m
            finally:
                fcntl.flock(lk, fcntl.LOCK_UN)

    # ------------------------------------------------------------------- reading
    def _locs(self) -> tuple[np.ndarray, np.ndarray]:
        """(chunk index, row in chunk) of every store position, built lazily."""
        if self._loc is None:
            loc_chunk = np.empty(len(self._ids), dtype=np.int32)
            loc_row = np.empty(len(self._ids), dtype=np.int64)
            k = 0
            for ci, ch in enumerate(self._chunks):
                rows = np.arange(ch.n) if ch.keep is None else np.flatnonzero(ch.keep)
                loc_chunk[k:k + len(rows)] = ci
                loc_row[k:k + len(rows)] = rows
                k += len(rows)
            self._loc = (loc_chunk, loc_row)
        return self._loc

    def _map(self, ch: _Chunk) -> np.ndarray:
        mm = self._maps.get(ch.name)
        if mm is None:
            mm = np.load(self.path / "chunks" / f"{ch.name}.npy", mmap_mode="r", allow_pickle=False)
            if len(self._maps) >= 64:
                self._maps.pop(next(iter(self._maps)))
            self._maps[ch.name] = mm
        return mm

    def positions(self, ids: Iterable[str]) -> np.ndarray:
        """Store positions (0..N-1) of ``ids``; unknown ids raise an ``InputError`` naming a few."""
        ids = list(ids)
        pos = np.fromiter((self._pos.get(i, -1) for i in ids), dtype=np.int64, count=len(ids))
        if (pos < 0).any():
            bad = [ids[k] for k in np.flatnonzero(pos < 0)[:5]]
            raise InputError(f"{int((pos < 0).sum())} id(s) are not in the embedding store, e.g. {bad}",
                             path=self.path, hint="extract or import them first (see store.missing(ids))")
        return pos

    def get(self, ids: Iterable[str]) -> np.ndarray:
        """Embeddings of ``ids`` in that order, as a new in-memory array (gathered from memory-mapped chunks)."""
        pos = self.positions(ids)
        out = self._empty_rows(pos)

        def read(ch, sel, rows):
            out[sel] = self._map(ch)[rows]

        return self._by_chunk(pos, read, out)

    def __getitem__(self, image_id: str) -> np.ndarray:
        return self.get([image_id])[0]

    def iter_batches(self, batch_size: int = 4096, ids: Iterable[str] | None = None
                     ) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield ``(ids, array)`` batches: all rows in store order, or ``ids`` in the given order.

        Reads with ``pread`` into a fresh buffer per batch (no memory map), so resident memory stays O(batch) even
        for stores far larger than RAM.
        """
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError("batch_size must be ≥ 1")
        if ids is not None:
            ids = list(ids)
            for s in range(0, len(ids), batch_size):
                b = ids[s:s + batch_size]
                yield b, self._read_positions(self.positions(b))
            return
        buf = np.empty((batch_size, *self.item_shape), dtype=self.dtype)
        buf_ids: list[str] = []
        filled = 0
        for ch in self._chunks:
            with open(self.path / "chunks" / f"{ch.name}.npy", "rb", buffering=0) as fh:
                r = 0
                while r < ch.n:
                    take = min(batch_size - filled, ch.n - r)
                    if ch.keep is None:  # read straight into the batch buffer
                        self._pread(fh, ch, r, take, out=buf[filled:filled + take])
                        buf_ids.extend(ch.ids[r:r + take])
                        filled += take
                    else:  # rows duplicated from an earlier chunk are dropped
                        k = ch.keep[r:r + take]
                        m = int(k.sum())
                        buf[filled:filled + m] = self._pread(fh, ch, r, take)[k]
                        buf_ids.extend(i for i, kk in zip(ch.ids[r:r + take], k) if kk)
                        filled += m
                    r += take
                    if filled == batch_size:
                        yield buf_ids, buf
                        buf = np.empty((batch_size, *self.item_shape), dtype=self.dtype)
                        buf_ids, filled = [], 0
        if filled:
            yield buf_ids, buf[:filled]

    def _pread(self, fh, ch: _Chunk, start: int, count: int, out: np.ndarray | None = None) -> np.ndarray:
        """Read rows ``start:start+count`` of a chunk with ``preadv`` (into ``out`` if given, C-contiguous)."""
        if out is None:
            out = np.empty((count, *self.item_shape), dtype=self.dtype)
        mv = memoryview(out.reshape(-1).view(np.uint8))
        off = ch.offset + start * self._row_bytes
        got = 0
        while got < len(mv):
            n = os.preadv(fh.fileno(), [mv[got:]], off + got)
            if n <= 0:
                raise InputError(f"chunk {ch.name}.npy ended early", path=self.path, hint="the store is damaged")
            got += n
        return out

    def _empty_rows(self, pos: np.ndarray) -> np.ndarray:
        return np.empty((len(pos), *self.item_shape), dtype=self.dtype)

    def _by_chunk(self, pos: np.ndarray, read, out: np.ndarray) -> np.ndarray:
        """Call ``read(chunk, out_positions, chunk_rows)`` once per chunk holding some of the store rows ``pos``."""
        if len(pos) == 0:
            return out
        loc_chunk, loc_row = self._locs()
        cidx, rows = loc_chunk[pos], loc_row[pos]
        for ci in np.unique(cidx):
            sel = np.flatnonzero(cidx == ci)
            read(self._chunks[int(ci)], sel, rows[sel])
        return out

    def _read_positions(self, pos: np.ndarray) -> np.ndarray:
        """Gather rows by ``pread`` of contiguous runs (no memory map): O(len(pos)) memory."""
        out = self._empty_rows(pos)

        def read(ch, sel, rows):
            order = np.argsort(rows, kind="stable")
            r_sorted = rows[order]
            breaks = np.flatnonzero(np.diff(r_sorted) != 1) + 1
            with open(self.path / "chunks" / f"{ch.name}.npy", "rb", buffering=0) as fh:
                for grp_o, grp_r in zip(np.split(sel[order], breaks), np.split(r_sorted, breaks)):
                    out[grp_o] = self._pread(fh, ch, int(grp_r[0]), len(grp_r))

        return self._by_chunk(pos, read, out)

    # ------------------------------------------------------------- maintenance
    def verify(self) -> dict[str, Any]:
        """Recompute every chunk's sha256 and check headers, sizes and ids. Returns a report; ``report["ok"]``."""
        problems: list[str] = []
        for ch in self._chunks:
            p = self.path / "chunks" / f"{ch.name}.npy"
            try:
                if sha256_file(p) != ch.sha256:
                    problems.append(f"chunk {ch.name}: sha256 mismatch (data changed or corrupt)")
                self._check_npy(ch)
            except (OSError, InputError) as e:
                problems.append(f"chunk {ch.name}: {e}")
        dups = sum(int((~c.keep).sum()) for c in self._chunks if c.keep is not None)
        cdir = self.path / "chunks"
        orphans = sorted(p.name for p in cdir.iterdir()
                         if (p.suffix == ".npy" and not p.with_suffix(".ids").exists()) or p.name.startswith(".tmp-"))
        listed = {c["name"] for c in self._read_manifest().get("chunks", [])}
        unlisted = [c.name for c in self._chunks if c.name not in listed]
        return {"ok": not problems, "n": len(self), "rows": sum(c.n for c in self._chunks),
                "chunks": len(self._chunks), "problems": problems, "duplicate_rows": dups,
                "orphan_files": orphans, "chunks_not_in_manifest": unlisted}

    def compact(self, out: str | os.PathLike, *, batch_size: int = 16384) -> "EmbeddingStore":
        """Write all rows (duplicates dropped) into a new one-chunk store at ``out``; streams, O(batch) memory."""
        return EmbeddingStore.merge([self], out, batch_size=batch_size)

    @classmethod
    def merge(cls, sources: Sequence["EmbeddingStore | str | os.PathLike"], out: str | os.PathLike, *,
              batch_size: int = 16384, info: dict[str, Any] | None = None) -> "EmbeddingStore":
        """Merge stores (e.g. shards extracted on several machines) into one new single-chunk store at ``out``.

        All sources must share shape, dtype and teacher name/version; an id in several sources is kept once (first).
        """
        stores = [s if isinstance(s, EmbeddingStore) else cls.open(s, "r") for s in sources]
        if not stores:
            raise InputError("nothing to merge", hint="give at least one store")
        first = stores[0]
        for s in stores[1:]:
            if s.item_shape != first.item_shape or s.dtype != first.dtype:
                raise InputError(f"holds {s.dtype.name} {s.item_shape}, but {first.path} holds "
                                 f"{first.dtype.name} {first.item_shape}", path=s.path, hint="merge like with like")
            for k in ("name", "version"):
                if str(s.info.get(k)) != str(first.info.get(k)):
                    raise InputError(f"teacher {k} {s.info.get(k)!r} differs from {first.info.get(k)!r} in "
                                     f"{first.path}", path=s.path, hint="merge embeddings of one teacher only")
        out = Path(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise InputError("output exists", path=out, hint="choose a new directory")
        seen: set[str] = set()
        all_ids: list[str] = []
        for s in stores:
            for i in s._ids:
                if i not in seen:
                    seen.add(i)
                    all_ids.append(i)
        n = len(all_ids)
        tmp = out.with_name(f".{out.name}.merging-{uuid.uuid4().hex[:8]}")
        (tmp / "chunks").mkdir(parents=True)
        try:
            name = "main-000001"
            taken: set[str] = set()
            with open(tmp / "chunks" / f"{name}.npy", "wb") as fh:
                hw = _HashWriter(fh)
                np.lib.format.write_array_header_1_0(hw, {"descr": np.lib.format.dtype_to_descr(first.dtype),
                                                          "fortran_order": False, "shape": (n, *first.item_shape)})
                written = 0
                for s in stores:
                    for bids, arr in s.iter_batches(batch_size):
                        k = [j for j, i in enumerate(bids) if i not in taken]
                        if len(k) != len(bids):
                            arr = arr[k]
                            bids = [bids[j] for j in k]
                        taken.update(bids)
                        hw.write(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))
                        written += len(bids)
                fh.flush()
                os.fsync(fh.fileno())
            assert written == n, (written, n)
            sha = hw.h.hexdigest()
            with atomic_open(tmp / "chunks" / f"{name}.ids", "w", encoding="utf-8") as fh:
                json.dump({"chunk": name, "writer": "main", "n": n, "npy_sha256": sha,
                           "shape": [n, *first.item_shape], "dtype": first.dtype.name, "ids": all_ids}, fh,
                          separators=(",", ":"))
            now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            manifest = {"format": STORE_FORMAT, "version": STORE_VERSION, "teacher": dict(info or first.info),
                        "shape": list(first.item_shape), "dtype": first.dtype.name,
                        "created": first._manifest.get("created", now), "updated": now, "n_rows": n,
                        "merged_from": [str(s.path) for s in stores],
                        "chunks": [{"name": name, "rows": n, "sha256": sha, "writer": "main"}]}
            with atomic_open(tmp / "manifest.json", "w", encoding="utf-8") as fh:
                json.dump(manifest, fh, indent=1)
            fsync_dir(tmp / "chunks")
            fsync_dir(tmp)
            os.rename(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(out.parent)
        return cls.open(out, "r")
