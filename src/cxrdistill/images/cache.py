"""A preprocessed uint8 image cache: decode every image once, then read memory-mapped pixels for every epoch.

Layout of ``CACHE_DIR/``::

    images.u8      raw uint8 array (N, size, size), C order — open with ``np.memmap``
    index.parquet  one row per cache row: image_id, path, ok (decoded), error (message when skipped)
    meta.json      format, version, n, size, mode, source_hash, n_ok, n_skipped, created

The build writes into ``CACHE_DIR.partial/`` and renames it to ``CACHE_DIR`` only when complete (atomic publish).
Killed mid-way, the next build with the same inputs resumes: ``done.bitmap`` (one bit per row, written atomically
after the pixels of each chunk are flushed) says which rows are finished.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from cxrdistill.errors import InputError
from cxrdistill.images.preprocess import PREPROCESS, load_preprocessed
from cxrdistill.progress import Progress
from cxrdistill.storage.io import atomic_path, fsync_dir, write_json, write_parquet

CACHE_FORMAT = "cxrdistill-image-cache"
CACHE_VERSION = 1


# ------------------------------------------------------------------------------------------------------ workers
def _init_worker() -> None:
    import signal

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates the pool


def _decode_one(task: tuple[int, str, int, str]) -> tuple[int, bytes | None, str | None]:
    """Decode + preprocess one file. Never raises: a bad file comes back as an error message."""
    row, path, size, mode = task
    try:
        return row, load_preprocessed(path, size, mode).tobytes(), None
    except InputError as e:
        return row, None, str(e)
    except Exception as e:  # noqa: BLE001 - a decoder bug on one file must not kill the whole build
        return row, None, f"{path}: unexpected decoding error ({type(e).__name__}: {e})"


# -------------------------------------------------------------------------------------------------------- cache
class ImageCache:
    """A built cache (read-only). Picklable cheaply: the memory map is reopened lazily in each process."""

    def __init__(self, cache_dir: str | os.PathLike):
        self.dir = Path(cache_dir)
        meta_path = self.dir / "meta.json"
        if not meta_path.exists():
            raise InputError("is not an image cache (meta.json missing)", path=self.dir,
                             hint="build it with ImageCache.build (or the command that builds caches)")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"cache meta.json is unreadable ({e})", path=meta_path,
                             hint="delete the cache directory and rebuild it") from None
        if self.meta.get("format") != CACHE_FORMAT:
            raise InputError("is not a cxrdistill image cache", path=self.dir)
        self.size = int(self.meta["size"])
        self.mode = str(self.meta["mode"])
        self.n = int(self.meta["n"])
        import pandas as pd

        index = pd.read_parquet(self.dir / "index.parquet")
        if len(index) != self.n:
            raise InputError(f"cache index has {len(index)} rows, meta.json says {self.n}", path=self.dir,
                             hint="delete the cache directory and rebuild it")
        expected = self.n * self.size * self.size
        actual = (self.dir / "images.u8").stat().st_size
        if actual != expected:
            raise InputError(f"images.u8 has {actual} bytes, expected {expected}", path=self.dir,
                             hint="delete the cache directory and rebuild it")
        self.index = index
        self.ids: np.ndarray = index["image_id"].to_numpy(dtype=object)
        self.ok: np.ndarray = index["ok"].to_numpy(dtype=bool)
        self._pos: dict[str, int] | None = None
        self._array: np.memmap | None = None

    # ------------------------------------------------------------------ reading
    @classmethod
    def open(cls, cache_dir: str | os.PathLike) -> "ImageCache":
        return cls(cache_dir)

    @property
    def array(self) -> np.memmap:
        """The pixels, ``np.memmap`` of shape (N, size, size), uint8, read-only."""
        if self._array is None:
            self._array = np.memmap(self.dir / "images.u8", dtype=np.uint8, mode="r",
                                    shape=(self.n, self.size, self.size))
        return self._array

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, rows):
        return self.array[rows]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.n, self.size, self.size)

    def _positions(self) -> dict[str, int]:
        if self._pos is None:
            self._pos = {k: i for i, k in enumerate(self.ids)}
        return self._pos

    def has(self, ids: Iterable[str]) -> np.ndarray:
        """Boolean mask: the id is in the cache *and* decoded successfully."""
        pos = self._positions()
        out = []
        for i in ids:
            j = pos.get(i)
            out.append(j is not None and bool(self.ok[j]))
        return np.asarray(out, dtype=bool)

    def index_of(self, ids: Iterable[str]) -> np.ndarray:
        """Cache rows (int64) of ``ids``; unknown or skipped (undecodable) ids raise an ``InputError`` listing them."""
        pos = self._positions()
        ids = list(ids)
        rows = np.fromiter((pos.get(i, -1) for i in ids), dtype=np.int64, count=len(ids))
        missing = [ids[k] for k in np.flatnonzero(rows < 0)[:5]]
        if missing:
            n = int((rows < 0).sum())
            raise InputError(f"{n} image id(s) are not in the image cache, e.g. {missing}", path=self.dir,
                             hint="rebuild the cache for this cohort")
        bad = rows[~self.ok[rows]]
        if len(bad):
            ex = [f"{self.ids[r]} ({self.index['error'].iat[r]})" for r in bad[:3]]
            raise InputError(f"{len(bad)} image(s) could not be decoded when the cache was built: {ex}",
                             path=self.dir, hint="drop them from the cohort (see ImageCache.has / skipped)")
        return rows

    @property
    def skipped(self):
        """DataFrame of the rows that failed to decode (image_id, path, error)."""
        return self.index.loc[~self.index["ok"], ["image_id", "path", "error"]].reset_index(drop=True)

    def __getstate__(self) -> dict:
        d = self.__dict__.copy()
        d["_array"] = None  # reopen the map in the worker instead of pickling the pixels
        d["_pos"] = None
        return d

    def __repr__(self) -> str:
        return f"ImageCache({str(self.dir)!r}, n={self.n}, size={self.size}, mode={self.mode!r})"

    # ----------------------------------------------------------------- building
    @classmethod
    def build(cls, cohort_df, images_root: str | os.PathLike, size: int, cache_dir: str | os.PathLike, *,
              mode: str = "resize", workers: int = 2, progress: bool = True, on_error: str = "raise",
              chunk_size: int = 256, overwrite: bool = False, start_method: str = "spawn") -> "ImageCache":
        """Decode and preprocess every image of ``cohort_df`` (columns ``image_id``, ``path``) into ``cache_dir``.

        Returns at once if ``cache_dir`` already holds this exact cache; resumes a killed build of the same inputs.
        ``on_error="raise"`` stops at the first bad file (progress is kept: fix it and rerun to continue);
        ``"skip"`` records it (``ok=False`` in the index, pixels left black) and goes on.
        """
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if mode not in PREPROCESS:
            PREPROCESS.get(mode)  # raises with the list of modes
        size = int(size)
        if size < 1:
            raise InputError(f"cache image size must be ≥ 1, got {size}")
        ids, paths = _cohort_paths(cohort_df)
        root = Path(images_root)
        cache_dir = Path(cache_dir)
        src_hash = source_hash(ids, paths, size, mode)
        n = len(ids)

        if (cache_dir / "meta.json").exists():
            with contextlib.suppress(InputError):
                existing = cls(cache_dir)
                if existing.meta.get("source_hash") == src_hash:
                    return existing
            if not overwrite:
                raise InputError("already holds an image cache built from other images or settings", path=cache_dir,
                                 hint="choose another cache directory or pass overwrite=True")
        elif cache_dir.exists() and any(cache_dir.iterdir()) and not overwrite:
            raise InputError("exists and is not an image cache", path=cache_dir,
                             hint="choose an empty or new directory")

        partial = cache_dir.with_name(cache_dir.name + ".partial")
        state = _BuildState.open_or_create(partial, n, size, mode, src_hash)
        try:
            state.run(ids, [str(root / p) for p in paths], workers=workers, progress=progress, on_error=on_error,
                      chunk_size=chunk_size, start_method=start_method)
        finally:
            state.close()
        state.finish(ids, paths)
        _publish_dir(partial, cache_dir)
        return cls(cache_dir)


class ImageRows:
    """Images ``images[rows[i]]`` of a larger uint8 array, read only when asked: an index into the (memory-mapped)
    cache instead of a copy of its pixels, so a stage over N images holds N row numbers, not N images.

    ``images``: an :class:`ImageCache`, an ``np.memmap`` or any (N, H, W) uint8 array. Indexing with an int gives one
    image; with a slice, mask or index array a uint8 array of those images, read in file order. ``take`` narrows
    the view without reading pixels. Pickled as the cache's location and the row numbers, never the pixels."""

    def __init__(self, images: Any, rows: Any = None):
        if isinstance(images, ImageRows):
            images, rows = images.images, (images.rows if rows is None else images.rows[np.asarray(rows)])
        self.images = images
        n = len(images)
        self.rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(self.rows) and (self.rows.min() < 0 or self.rows.max() >= n):
            raise IndexError(f"rows out of range for {n} images")

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.images.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if isinstance(self.images, ImageCache) else self.images.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def take(self, idx: Any) -> "ImageRows":
        """The view of items ``idx`` (positions, or a boolean mask over the items); no pixels are read."""
        idx = np.asarray(idx)
        return ImageRows(self.images, self.rows[np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64)])

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return np.asarray(self.images[int(self.rows[key])])
        rows = self.rows[key]
        order = np.argsort(rows, kind="stable")  # sequential reads of the memory map
        out = np.empty((len(rows), *self.images.shape[1:]), dtype=self.dtype)
        out[order] = self.images[rows[order]]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        a = self[slice(None)]
        return a if dtype is None else a.astype(dtype)

    def __getstate__(self) -> dict:
        d = self.__dict__.copy()
        m = d["images"]
        if isinstance(m, np.memmap) and m.filename:
            d["images"] = ("memmap", str(m.filename), m.dtype.str, tuple(m.shape), int(m.offset))
        return d

    def __setstate__(self, d: dict) -> None:
        m = d["images"]
        if isinstance(m, tuple) and m and m[0] == "memmap":
            d["images"] = np.memmap(m[1], dtype=np.dtype(m[2]), mode="r", shape=m[3], offset=m[4])
        self.__dict__.update(d)

    def __repr__(self) -> str:
        return f"ImageRows({len(self)} of {len(self.images)} images)"


def _cohort_paths(df) -> tuple[list[str], list[str]]:
    for c in ("image_id", "path"):
        if c not in df.columns:
            raise InputError("cohort has no such column", column=c,
                             hint="image caches need the cohort columns image_id and path")
    if len(df) == 0:
        raise InputError("cohort is empty: no images to cache", hint="check the cohort filters")
    ids = df["image_id"].astype(str).tolist()
    dup = df["image_id"].astype(str).duplicated()
    if dup.any():
        raise InputError(f"{int(dup.sum())} duplicate image_id(s), e.g. {df['image_id'][dup].iloc[0]!r}",
                         column="image_id", hint="image ids must be unique")
    nullp = df["path"].isna()
    if nullp.any():
        raise InputError(f"{int(nullp.sum())} image(s) have no path", column="path",
                         row=int(np.flatnonzero(nullp.to_numpy())[0]), hint="fill the path column or drop them")
    return ids, df["path"].astype(str).tolist()


def source_hash(ids: Sequence[str], paths: Sequence[str], size: int, mode: str) -> str:
    """What a cache depends on: ids, paths, size, mode and the cache format version (not the file contents)."""
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_FORMAT, CACHE_VERSION, int(size), mode]).encode())
    for i, p in zip(ids, paths):
        h.update(i.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
        h.update(p.encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.hexdigest()


class _BuildState:
    """The ``.partial`` directory of a build in progress: pixels, done bitmap and recorded errors."""

    def __init__(self, d: Path, n: int, size: int, mode: str, src_hash: str):
        self.d, self.n, self.size, self.mode, self.src_hash = d, n, size, mode, src_hash
        self.done = np.zeros(n, dtype=bool)
        self.errors: dict[int, str] = {}
        self.mm: np.memmap | None = None

    @classmethod
    def open_or_create(cls, d: Path, n: int, size: int, mode: str, src_hash: str) -> "_BuildState":
        st = cls(d, n, size, mode, src_hash)
        build_json = d / "build.json"
        resumable = False
        if build_json.exists():
            try:
                b = json.loads(build_json.read_text(encoding="utf-8"))
                resumable = (b.get("source_hash") == src_hash
                             and (d / "images.u8").stat().st_size == n * size * size)
            except (OSError, ValueError):
                resumable = False
        if not resumable:
            if d.exists():
                shutil.rmtree(d)
            d.mkdir(parents=True)
            with open(d / "images.u8", "wb") as fh:
                fh.truncate(n * size * size)  # sparse; every row is written before publish
            write_json({"source_hash": src_hash, "n": n, "size": size, "mode": mode}, build_json)
        else:
            bm = d / "done.bitmap"
            if bm.exists():
                bits = np.unpackbits(np.fromfile(bm, dtype=np.uint8), count=n).astype(bool)
                if len(bits) == n:
                    st.done = bits
            err = d / "errors.json"
            if err.exists():
                with contextlib.suppress(ValueError, OSError):
                    st.errors = {int(k): v for k, v in json.loads(err.read_text(encoding="utf-8")).items()}
            st.errors = {k: v for k, v in st.errors.items() if st.done[k]}
        st.mm = np.memmap(d / "images.u8", dtype=np.uint8, mode="r+", shape=(n, size, size))
        return st

    def checkpoint(self) -> None:
        """Pixels first (msync), then the errors, then the bitmap: a row is marked done only once it is on disk."""
        assert self.mm is not None
        self.mm.flush()
        write_json({str(k): v for k, v in sorted(self.errors.items())}, self.d / "errors.json")
        with atomic_path(self.d / "done.bitmap") as tmp:
            np.packbits(self.done).tofile(tmp)

    def run(self, ids, abs_paths, *, workers, progress, on_error, chunk_size, start_method) -> None:
        todo = np.flatnonzero(~self.done)
        if len(todo) == 0:
            return
        tasks = ((int(r), abs_paths[r], self.size, self.mode) for r in todo)
        bar = Progress(progress, unit="img").__enter__()
        bar.start("caching images", self.n, done=int(self.done.sum()))
        since = 0
        last = time.monotonic()
        pool = None
        try:
            if workers <= 1:
                results: Iterable = map(_decode_one, tasks)
            else:
                ctx = mp.get_context(start_method)
                pool = ctx.Pool(workers, initializer=_init_worker)
                results = pool.imap_unordered(_decode_one, tasks, chunksize=4)
            for row, data, err in results:
                if err is not None:
                    if on_error == "raise":
                        self.checkpoint()
                        raise InputError(f"cannot cache image {ids[row]!r}: {err}",
                                         hint="fix or remove the file and rerun (finished images are kept), or "
                                              "skip bad files (on_error='skip' / --on-error skip)")
                    self.errors[row] = err
                else:
                    self.mm[row] = np.frombuffer(data, dtype=np.uint8).reshape(self.size, self.size)
                self.done[row] = True
                since += 1
                bar.advance()
                if since >= chunk_size or time.monotonic() - last > 5.0:
                    self.checkpoint()
                    since, last = 0, time.monotonic()
            self.checkpoint()
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
            bar.close()

    def close(self) -> None:
        if self.mm is not None:
            self.mm.flush()
            del self.mm
            self.mm = None

    def finish(self, ids: list[str], paths: list[str]) -> None:
        import pandas as pd

        if not self.done.all():  # pragma: no cover - run() either completes or raises
            raise RuntimeError("cache build incomplete")
        ok = np.ones(self.n, dtype=bool)
        err: list[str | None] = [None] * self.n
        for r, msg in self.errors.items():
            ok[r] = False
            err[r] = msg
        write_parquet(pd.DataFrame({"image_id": ids, "path": paths, "ok": ok,
                                    "error": pd.Series(err, dtype="string")}), self.d / "index.parquet")
        with open(self.d / "images.u8", "rb+") as fh:
            os.fsync(fh.fileno())
        write_json({"format": CACHE_FORMAT, "version": CACHE_VERSION, "n": self.n, "size": self.size,
                    "mode": self.mode, "dtype": "uint8", "shape": [self.n, self.size, self.size],
                    "source_hash": self.src_hash, "n_ok": int(ok.sum()), "n_skipped": int((~ok).sum()),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, self.d / "meta.json")
        for f in ("build.json", "done.bitmap", "errors.json"):
            with contextlib.suppress(FileNotFoundError):
                (self.d / f).unlink()


def _publish_dir(src: Path, dst: Path) -> None:
    """Rename a finished directory into place; an older ``dst`` is moved aside first and then removed."""
    fsync_dir(src)
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
    os.replace(src, dst)
    fsync_dir(dst.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
