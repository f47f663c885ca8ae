"""Import precomputed embeddings (Google CXR Foundation files, .npy, Parquet) into an :class:`EmbeddingStore`.

CXR Foundation writes one file per image: ``.npz`` with key ``embedding`` or ``.tfrecord`` with a float feature
``embedding``. Known shapes (a leading batch axis of 1 is dropped): v1 ``(1376,)``; ELIXR-B ``(32, 768)`` and
``(32, 128)``; ELIXR-C ``(8, 8, 1376)``, stored as 64 tokens ``(64, 1376)``. Token outputs can be pooled
(``mean``, ``cls`` = token 0, ``flatten``) or kept (``none``).

Ids come from the file names (``stem`` or ``relpath`` without extension) or from the file (npy ids file, Parquet
column). With a cohort, each id is matched to an ``image_id``: exactly, or to the cohort ``path`` without its
extension, or to a unique trailing part of that path (``train/p1/s1/view1`` matches ``CheXpert-v1.0/train/p1/s1/
view1_frontal.jpg`` only if it ends the same way at a ``/``). Unmatched files are skipped and reported.
"""
from __future__ import annotations

import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from cxrdistill.errors import InputError
from cxrdistill.registry import Registry
from cxrdistill.storage.io import read_table
from cxrdistill.storage.store import EmbeddingStore
from cxrdistill.teachers.tfrecord import TFRecordError, decode_example, iter_records

FORMATS: Registry = Registry("embedding file format")
POOLS = ("none", "mean", "cls", "flatten")

# Flat length → per-item shape, for formats that store a flat float list (TFRecord).
KNOWN_FLAT_SHAPES: dict[int, tuple[int, ...]] = {
    1376: (1376,),  # CXR Foundation v1
    32 * 768: (32, 768),  # ELIXR-B image embedding (32 query tokens)
    32 * 128: (32, 128),  # ELIXR-B contrastive image embedding
    8 * 8 * 1376: (8, 8, 1376),  # ELIXR-C spatial feature map
}
VARIANTS: dict[tuple[int, ...], str] = {(1376,): "v1", (32, 768): "elixr-b", (32, 128): "elixr-b-contrastive",
                                        (64, 1376): "elixr-c"}


# ------------------------------------------------------------------------------------------------ array shaping
def item_tokens(a: np.ndarray, where: object = None) -> np.ndarray:
    """One item's embedding → ``(D,)`` or ``(T, D)``: leading 1-axes dropped, a spatial map (H, W, D) → (H·W, D)."""
    a = np.asarray(a)
    while a.ndim > 1 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3:
        a = a.reshape(-1, a.shape[-1])
    if a.ndim not in (1, 2) or a.size == 0:
        raise InputError(f"embedding has unsupported shape {a.shape}", path=where,
                         hint="expected (D,), (T, D) or (H, W, D), optionally with a leading batch axis of 1")
    return a


def batch_tokens(a: np.ndarray, where: object = None) -> np.ndarray:
    """A batch (N, …) → ``(N, D)`` or ``(N, T, D)`` (spatial maps flattened to tokens)."""
    a = np.asarray(a)
    if a.ndim == 4:
        a = a.reshape(a.shape[0], -1, a.shape[-1])
    if a.ndim not in (2, 3) or a.shape[0] == 0:
        raise InputError(f"embedding array has unsupported shape {a.shape}", path=where,
                         hint="expected (N, D), (N, T, D) or (N, H, W, D)")
    return a


def pool_batch(a: np.ndarray, pool: str) -> np.ndarray:
    """Pool token axis of a (N, T, D) batch: ``mean``, ``cls`` (token 0), ``flatten`` (T·D) or ``none``.

    A (N, D) batch has no token axis and is returned unchanged whatever the pooling.
    """
    if pool not in POOLS:
        raise InputError(f"unknown pooling {pool!r}", hint=f"choose one of {', '.join(POOLS)}")
    if a.ndim == 2 or pool == "none":
        return a
    if pool == "mean":
        return a.astype(np.float32).mean(axis=1)
    if pool == "cls":
        return a[:, 0]
    return a.reshape(a.shape[0], -1)


def pooled_shape(shape: tuple[int, ...], pool: str) -> tuple[int, ...]:
    if len(shape) == 1 or pool == "none":
        return tuple(shape)
    if pool in ("mean", "cls"):
        return (shape[1],)
    return (shape[0] * shape[1],)


def parse_shape(spec: str | None) -> tuple[int, ...] | None:
    """``"32x768"`` → ``(32, 768)``."""
    if not spec:
        return None
    try:
        shp = tuple(int(x) for x in str(spec).lower().replace("×", "x").split("x"))
        if not shp or min(shp) < 1:
            raise ValueError
        return shp
    except ValueError:
        raise InputError(f"invalid shape {spec!r}", hint="write it as D or TxD or HxWxD, e.g. 32x768") from None


# ----------------------------------------------------------------------------------------------------- readers
@dataclass
class Source:
    """A set of embeddings on disk: ``ids`` (known before reading values) and batches of values."""
    ids: list[str]
    batches: Callable[[set[str] | None, int], Iterator[tuple[list[str], np.ndarray]]]
    item_shape: tuple[int, ...]
    n_files: int
    notes: list[str] = field(default_factory=list)


def _file_id(p: Path, root: Path, id_from: str) -> str:
    if id_from == "stem":
        name = p.name
        for suf in (".tfrecord.gz", ".tfrecords", ".tfrecord", ".npz", ".npy"):
            if name.lower().endswith(suf):
                return name[: -len(suf)]
        return p.stem
    if id_from == "relpath":
        rel = p.relative_to(root).as_posix()
        return rel.rsplit(".", 1)[0] if "." in p.name else rel
    raise InputError(f"unknown --id-from {id_from!r}", hint="use stem or relpath")


def _list_files(src: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if not src.exists():
        raise InputError("not found", path=src, hint="give a directory of embedding files or one file")
    if src.is_file():
        return [src]
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.name.lower().endswith(suffixes))
    if not files:
        raise InputError(f"holds no {'/'.join(suffixes)} files", path=src, hint="check the directory and --format")
    return files


def _check_unique(ids: list[str], files: list[Path], what: str) -> None:
    seen: dict[str, int] = {}
    for k, i in enumerate(ids):
        if i in seen:
            raise InputError(f"two {what} give the same id {i!r}: {files[seen[i]]} and {files[k]}",
                             hint="use --id-from relpath (ids from paths relative to SRC)")
        seen[i] = k


def _per_file_source(files: list[Path], ids: list[str], load: Callable[[Path], np.ndarray],
                     item_shape: tuple[int, ...]) -> Source:
    def items(keep: set[str] | None) -> Iterator[tuple[str, np.ndarray]]:
        for f, i in zip(files, ids):
            if keep is not None and i not in keep:
                continue
            a = load(f)
            if a.shape != item_shape:
                raise InputError(f"embedding has shape {a.shape}, but the first file has {item_shape}", path=f,
                                 hint="import files of one model output at a time")
            yield i, a

    return Source(ids, lambda keep, bs: _batched(items(keep), bs), item_shape, len(files))


def _batched(items: Iterator[tuple[str, np.ndarray]], bs: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """Group ``(id, embedding)`` pairs into batches of ``bs`` ids with their stacked embeddings (the last shorter)."""
    bid: list[str] = []
    rows: list[np.ndarray] = []
    for i, a in items:
        bid.append(i)
        rows.append(a)
        if len(bid) >= bs:
            yield bid, np.stack(rows)
            bid, rows = [], []
    if bid:
        yield bid, np.stack(rows)


@FORMATS.register("cxr-foundation-npz")
def read_npz(src: Path, *, id_from: str = "relpath", key: str = "embedding", **_: Any) -> Source:
    """A directory of ``.npz`` files (one per image) holding ``key`` (default ``embedding``)."""
    files = _list_files(src, (".npz",))
    root = src if src.is_dir() else src.parent

    def load(p: Path) -> np.ndarray:
        try:
            with np.load(p, allow_pickle=False) as z:
                if key not in z.files:
                    raise InputError(f"has no array {key!r} (it has: {', '.join(z.files) or 'none'})", path=p,
                                     hint="choose the array with --key")
                a = z[key]
        except InputError:
            raise
        except ValueError as e:
            if "pickle" in str(e).lower():
                raise InputError("holds pickled objects, which are refused for safety", path=p,
                                 hint="save embeddings as plain float arrays") from None
            raise InputError(f"cannot be read as .npz ({e})", path=p, hint="re-export this file") from None
        except (OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
            raise InputError(f"cannot be read as .npz ({type(e).__name__}: {e})", path=p,
                             hint="the file is truncated or corrupt; re-export it") from None
        if not np.issubdtype(a.dtype, np.number):
            raise InputError(f"array {key!r} has dtype {a.dtype}, expected floats", path=p)
        return item_tokens(a, p)

    ids = [_file_id(p, root, id_from) for p in files]
    _check_unique(ids, files, "files")
    return _per_file_source(files, ids, load, load(files[0]).shape)


@FORMATS.register("cxr-foundation-tfrecord")
def read_tfrecord(src: Path, *, id_from: str = "relpath", key: str = "embedding", shape: str | None = None,
                  check_crc: bool = False, id_feature: str = "image_id", **_: Any) -> Source:
    """``.tfrecord`` files with a float feature ``key``: one record per file (id from the file name), or several
    records per file each carrying a bytes feature ``id_feature``. The flat float list is reshaped by ``shape``
    (``32x768``), an int64 feature ``<key>/shape`` if present, or the known CXR Foundation lengths."""
    files = _list_files(src, (".tfrecord", ".tfrecords"))
    root = src if src.is_dir() else src.parent
    forced = parse_shape(shape)

    def examples(p: Path) -> list[dict[str, Any]]:
        try:
            return [decode_example(r) for r in iter_records(p, check_crc=check_crc)]
        except (TFRecordError, UnicodeDecodeError) as e:
            raise InputError(f"is not a valid TFRecord of tf.train.Example ({e})", path=p,
                             hint="the file is truncated or not a CXR Foundation output; re-export it") from None
        except OSError as e:
            raise InputError(f"cannot be read ({e})", path=p) from None

    def to_item(ex: dict[str, Any], p: Path) -> np.ndarray:
        v = ex.get(key)
        if not isinstance(v, np.ndarray) or v.dtype != np.float32:
            raise InputError(f"has no float feature {key!r} (features: {', '.join(sorted(ex)) or 'none'})", path=p,
                             hint="choose the feature with --key")
        shp = forced
        if shp is None and isinstance(ex.get(f"{key}/shape"), np.ndarray) and ex[f"{key}/shape"].dtype == np.int64:
            shp = tuple(int(x) for x in ex[f"{key}/shape"])
        if shp is None:
            shp = KNOWN_FLAT_SHAPES.get(v.size)
        if shp is None:
            raise InputError(f"float feature {key!r} has {v.size} values, not a known CXR Foundation shape", path=p,
                             hint="give the shape with --shape, e.g. --shape 32x768")
        if int(np.prod(shp)) != v.size:
            raise InputError(f"feature {key!r} has {v.size} values, which does not fit shape {shp}", path=p)
        return item_tokens(v.reshape(shp), p)

    # Listing pass: ids (file name, or the id feature when a file holds several records).
    entries: list[tuple[Path, int, str]] = []
    for p in files:
        exs = examples(p)
        if len(exs) == 1:
            entries.append((p, 0, _file_id(p, root, id_from)))
        elif not exs:
            raise InputError("holds no records", path=p, hint="re-export it or remove it")
        else:
            for k, ex in enumerate(exs):
                idv = ex.get(id_feature)
                if not isinstance(idv, list) or len(idv) != 1:
                    raise InputError(f"holds {len(exs)} records but record {k} has no bytes feature {id_feature!r}",
                                     path=p, hint="write one record per file, or name the id feature with "
                                                  "--id-feature")
                entries.append((p, k, idv[0].decode("utf-8")))
    ids = [e[2] for e in entries]
    _check_unique(ids, [e[0] for e in entries], "records")
    first = to_item(examples(entries[0][0])[entries[0][1]], entries[0][0])

    def items(keep: set[str] | None) -> Iterator[tuple[str, np.ndarray]]:
        cache: tuple[Path, list[dict[str, Any]]] | None = None
        for p, k, i in entries:
            if keep is not None and i not in keep:
                continue
            if cache is None or cache[0] != p:
                cache = (p, examples(p))
            a = to_item(cache[1][k], p)
            if a.shape != first.shape:
                raise InputError(f"embedding has shape {a.shape}, but the first record has {first.shape}", path=p)
            yield i, a

    return Source(ids, lambda keep, bs: _batched(items(keep), bs), first.shape, len(files))


def _read_id_list(p: Path) -> list[str]:
    name = p.name.lower()
    if name.endswith((".csv", ".parquet", ".pq", ".csv.gz")):
        df = read_table(p, dtype={"image_id": str})
        if "image_id" not in df.columns:
            raise InputError("has no image_id column", path=p, column="image_id")
        return df["image_id"].astype(str).tolist()
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError("is not UTF-8 text", path=p, hint="write one image id per line, UTF-8") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


@FORMATS.register("npy")
def read_npy(src: Path, *, ids_file: str | os.PathLike | None = None, **_: Any) -> Source:
    """One ``.npy`` array (N, D), (N, T, D) or (N, H, W, D) plus an ids file (one id per line, or a CSV/Parquet
    with ``image_id``); default ids file: ``<SRC stem>.ids.txt``, ``<stem>.txt`` or ``<stem>.ids`` next to it."""
    if not src.is_file():
        raise InputError("not found" if not src.exists() else "is not a file", path=src,
                         hint="give the .npy file as SRC")
    try:
        arr = np.load(src, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise InputError(f"cannot be read as .npy ({e})", path=src,
                         hint="save a plain float array with numpy.save (object arrays are refused)") from None
    except (OSError, EOFError) as e:
        raise InputError(f"cannot be read as .npy ({e})", path=src, hint="the file may be truncated") from None
    if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"holds {getattr(arr, 'dtype', type(arr))}, expected a float array", path=src)
    if ids_file is None:
        cands = [src.with_name(src.stem + s) for s in (".ids.txt", ".txt", ".ids")]
        found = [c for c in cands if c.exists()]
        if not found:
            raise InputError("has no ids file next to it", path=src,
                             hint=f"give --ids FILE (one image id per line), e.g. {cands[0].name}")
        ids_file = found[0]
    ids = _read_id_list(Path(ids_file))
    if len(ids) != arr.shape[0]:
        raise InputError(f"ids file has {len(ids)} ids but the array has {arr.shape[0]} rows", path=ids_file,
                         hint="the ids file must list one id per array row, in order")
    _check_unique(ids, [Path(ids_file)] * len(ids), "rows of the ids file")
    shaped = batch_tokens(arr[:1], src)

    def batches(keep: set[str] | None, bs: int) -> Iterator[tuple[list[str], np.ndarray]]:
        sel = np.arange(len(ids)) if keep is None else np.array([k for k, i in enumerate(ids) if i in keep], int)
        for s in range(0, len(sel), bs):
            rows = sel[s:s + bs]
            yield [ids[r] for r in rows], batch_tokens(np.asarray(arr[rows]), src)

    return Source(ids, batches, tuple(shaped.shape[1:]), 1)


@FORMATS.register("parquet")
def read_parquet(src: Path, *, id_column: str = "image_id", key: str | None = None, **_: Any) -> Source:
    """A Parquet table: ``image_id`` plus either columns ``emb_0 … emb_{D-1}`` or one list column (``key``, or the
    only list column) holding (D,) or (T, D) per row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not src.is_file():
        raise InputError("not found" if not src.exists() else "is not a file", path=src)
    try:
        pf = pq.ParquetFile(src)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"cannot be read as Parquet ({e})", path=src) from None
    schema = pf.schema_arrow
    names = schema.names
    if id_column not in names:
        raise InputError("has no id column", path=src, column=id_column, hint="name the column with --id-column")
    emb_cols = sorted((c for c in names if c.startswith("emb_") and c[4:].isdigit()), key=lambda c: int(c[4:]))
    list_cols = [c for c in names if pa.types.is_list(schema.field(c).type)
                 or pa.types.is_large_list(schema.field(c).type) or pa.types.is_fixed_size_list(schema.field(c).type)]
    if key is not None:
        if key not in names:
            raise InputError("has no such column", path=src, column=key)
        cols, mode = [key], "list"
    elif emb_cols:
        if [int(c[4:]) for c in emb_cols] != list(range(len(emb_cols))):
            raise InputError("emb_* columns are not emb_0 … emb_{D-1}", path=src,
                             hint="number them from 0 without gaps")
        cols, mode = emb_cols, "wide"
    elif len(list_cols) == 1:
        cols, mode = list_cols, "list"
    else:
        raise InputError("has neither emb_0 … emb_{D-1} columns nor exactly one list column", path=src,
                         hint="name the embedding column with --key")
    ids = pf.read(columns=[id_column]).column(0).cast(pa.string()).to_pylist()
    if any(i is None for i in ids):
        raise InputError("has empty ids", path=src, column=id_column)
    _check_unique(ids, [src] * len(ids), "rows")

    def to_array(tbl) -> np.ndarray:
        if mode == "wide":
            return np.column_stack([tbl.column(c).to_numpy(zero_copy_only=False) for c in cols]).astype(np.float32)
        col = tbl.column(cols[0])
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        if col.null_count:
            raise InputError("has a row with an empty embedding", path=src, column=cols[0])
        n = len(col)
        dims: list[int] = []
        vals = col
        while pa.types.is_list(vals.type) or pa.types.is_large_list(vals.type) or \
                pa.types.is_fixed_size_list(vals.type):
            lengths = np.asarray(vals.value_lengths()) if not pa.types.is_fixed_size_list(vals.type) \
                else np.full(len(vals), vals.type.list_size)
            if len(lengths) and (lengths != lengths[0]).any():
                raise InputError("rows of the embedding column have different lengths", path=src, column=cols[0])
            dims.append(int(lengths[0]) if len(lengths) else 0)
            vals = vals.flatten()
        a = np.asarray(vals.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(n, *dims)
        return batch_tokens(a, src)

    def batches(keep: set[str] | None, bs: int) -> Iterator[tuple[list[str], np.ndarray]]:
        for rb in pf.iter_batches(batch_size=bs, columns=[id_column, *cols]):
            bid = rb.column(0).cast(pa.string()).to_pylist()
            a = to_array(rb)
            if keep is not None:
                k = [j for j, i in enumerate(bid) if i in keep]
                if not k:
                    continue
                bid, a = [bid[j] for j in k], a[k]
            yield bid, a

    first = next(pf.iter_batches(batch_size=1, columns=[id_column, *cols]), None)
    if first is None:
        raise InputError("has no rows", path=src)
    return Source(ids, batches, tuple(to_array(first).shape[1:]), 1)


# ----------------------------------------------------------------------------------------------------- matching
@dataclass
class Matching:
    """File ids matched to cohort image ids."""
    to_image_id: dict[str, str]  # file id → cohort image_id
    unmatched_in_files: list[str]
    missing_from_files: list[str]
    ambiguous: list[str] = field(default_factory=list)


def match_ids(file_ids: Iterable[str], cohort_df) -> Matching:
    """Match ids from files to a cohort: exact image_id, path without extension, or a unique trailing path part."""
    for c in ("image_id",):
        if c not in cohort_df.columns:
            raise InputError("cohort has no such column", column=c)
    cids = cohort_df["image_id"].astype(str).tolist()
    exact: dict[str, str] = {i: i for i in cids}
    if "path" in cohort_df.columns:
        for i, p in zip(cids, cohort_df["path"].astype(str).tolist()):
            stem = p.rsplit(".", 1)[0] if "." in p.rsplit("/", 1)[-1] else p
            exact.setdefault(stem, i)
    file_ids = list(file_ids)
    out: dict[str, str] = {}
    rest: list[str] = []
    for f in file_ids:
        j = exact.get(f)
        if j is None:
            rest.append(f)
        else:
            out[f] = j
    ambiguous: list[str] = []
    if rest and "path" in cohort_df.columns:
        suffix: dict[str, str | None] = {}
        for i, p in zip(cids, cohort_df["path"].astype(str).tolist()):
            stem = p.rsplit(".", 1)[0] if "." in p.rsplit("/", 1)[-1] else p
            parts = stem.split("/")
            for k in range(1, len(parts)):
                s = "/".join(parts[k:])
                suffix[s] = None if (s in suffix and suffix[s] != i) else i
        still = []
        for f in rest:
            if f in suffix:
                if suffix[f] is None:
                    ambiguous.append(f)
                else:
                    out[f] = suffix[f]  # type: ignore[assignment]
            else:
                still.append(f)
        rest = still
    # Two files mapped to one image: keep the first, report the others as unmatched.
    taken: dict[str, str] = {}
    for f in list(out):
        if out[f] in taken:
            rest.append(f)
            del out[f]
        else:
            taken[out[f]] = f
    missing = [i for i in cids if i not in taken]
    return Matching(out, rest + ambiguous, missing, ambiguous)


# ------------------------------------------------------------------------------------------------------ import
@dataclass
class ImportReport:
    """What an import did. ``unmatched_in_files``: ids in files but not in the cohort (skipped);
    ``missing_from_files``: cohort images with no embedding file."""
    store: str
    format: str
    n_source: int
    n_files: int
    source_shape: tuple[int, ...]
    stored_shape: tuple[int, ...]
    pool: str
    matched: int
    imported: int
    already_stored: int
    unmatched_in_files: list[str]
    missing_from_files: list[str]
    cohort: bool

    def as_dict(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d["n_unmatched_in_files"] = len(self.unmatched_in_files)
        d["n_missing_from_files"] = len(self.missing_from_files)
        return d


def import_embeddings(fmt: str, src: str | os.PathLike, out: str | os.PathLike, *, cohort=None,
                      id_from: str = "relpath", pool: str = "none", key: str | None = None, shape: str | None = None,
                      ids_file: str | os.PathLike | None = None, dtype: str = "float32", strict: bool = False,
                      name: str | None = None, version: str | None = None, check_crc: bool = False,
                      id_column: str = "image_id", id_feature: str = "image_id", batch_size: int = 512,
                      progress: bool = False) -> ImportReport:
    """Read embeddings in format ``fmt`` from ``src`` and append them to the store ``out`` (created if needed).

    Resumable: ids already in the store are skipped. With ``cohort`` (a DataFrame with ``image_id``[, ``path``])
    only matched ids are imported, stored under the cohort's ``image_id``; ``strict`` turns any unmatched or missing
    id into an error before anything is written.
    """
    if pool not in POOLS:
        raise InputError(f"unknown pooling {pool!r}", hint=f"choose one of {', '.join(POOLS)}")
    reader = FORMATS.get(fmt)
    kw: dict[str, Any] = {"id_from": id_from, "shape": shape, "ids_file": ids_file, "check_crc": check_crc,
                          "id_column": id_column, "id_feature": id_feature}
    if key is not None:
        kw["key"] = key
    source: Source = reader(Path(src), **kw)
    src_shape = tuple(source.item_shape)
    stored_shape = pooled_shape(src_shape, pool)

    if cohort is not None:
        m = match_ids(source.ids, cohort)
        if strict and (m.unmatched_in_files or m.missing_from_files):
            raise InputError(f"{len(m.unmatched_in_files)} id(s) in the files are not in the cohort (e.g. "
                             f"{m.unmatched_in_files[:3]}) and {len(m.missing_from_files)} cohort image(s) have no "
                             f"embedding (e.g. {m.missing_from_files[:3]})", path=src,
                             hint="fix the ids (see --id-from) or drop --strict to import the matches only")
        if not m.to_image_id:
            raise InputError(f"none of the {len(source.ids)} ids in the files match the cohort (file ids look like "
                             f"{source.ids[:2]}, cohort ids like {list(cohort['image_id'].astype(str)[:2])})",
                             path=src, hint="choose --id-from stem|relpath so that ids match the cohort")
        mapping = m.to_image_id
        unmatched, missing = m.unmatched_in_files, m.missing_from_files
    else:
        mapping = {i: i for i in source.ids}
        unmatched, missing = [], []

    if fmt.startswith("cxr-foundation"):
        default_name = "cxr-foundation"
    else:
        default_name = "imported"
    info = {"name": name or default_name, "version": version or VARIANTS.get(src_shape, "custom"),
            "source_format": fmt, "source_shape": list(src_shape), "pool": pool}
    store = EmbeddingStore.open_or_create(out, stored_shape, dtype, info)
    already = {f for f, i in mapping.items() if store.has(i)}
    keep = set(mapping) - already
    imported = 0
    bar = _bar(progress, len(keep))
    try:
        if keep:
            for bid, arr in source.batches(keep, batch_size):
                imported += store.append([mapping[i] for i in bid], pool_batch(arr, pool))
                if bar:
                    bar[0].advance(bar[1], len(bid))
    finally:
        if bar:
            bar[0].stop()
    return ImportReport(str(out), fmt, len(source.ids), source.n_files, src_shape, stored_shape, pool,
                        len(mapping), imported, len(already), unmatched, missing, cohort is not None)


def _bar(enabled: bool, total: int):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    p = Progress(TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    p.start()
    return p, p.add_task("import", total=total)
