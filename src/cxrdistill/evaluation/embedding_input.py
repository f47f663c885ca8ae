"""Load frozen embeddings (store, .npy/.npz + ids, or a table with ``emb_*`` columns) and align them with a
metadata table by ``image_id``, reporting every id that does not match."""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cxrdistill.errors import InputError
from cxrdistill.storage.io import read_table
from cxrdistill.storage.store import EmbeddingStore

EMB_PREFIX = "emb_"
ID_COLUMN = "image_id"
N_EXAMPLES = 5  # ids shown when reporting mismatches
# pandas names a blank header "Unnamed: 0" (and a repeat "Unnamed: 0.1", …): an index written by DataFrame.to_csv
_UNNAMED = re.compile(r"^Unnamed: \d+(\.\d+)*$")


def drop_unnamed(df: pd.DataFrame) -> pd.DataFrame:
    """The table without the unnamed index columns that ``DataFrame.to_csv`` writes by default."""
    cols = [c for c in df.columns if isinstance(c, str) and _UNNAMED.match(c)]
    return df.drop(columns=cols) if cols else df


def use_id_column(df: pd.DataFrame, id_column: str | None, path: object | None = None, *,
                  what: str = "table") -> pd.DataFrame:
    """The table with its key in ``image_id``: copied from ``id_column`` when the table has that column (e.g.
    ``Path``), else the table's own ``image_id``. Neither is an InputError naming both."""
    if id_column and id_column != ID_COLUMN and id_column in df.columns:
        out = df.drop(columns=[ID_COLUMN]) if ID_COLUMN in df.columns else df.copy()
        out.insert(0, ID_COLUMN, df[id_column].astype(str).to_numpy())
        return out
    if ID_COLUMN in df.columns:
        return df
    named = f"neither {id_column!r} nor {ID_COLUMN!r}" if id_column and id_column != ID_COLUMN else f"no {ID_COLUMN}"
    raise InputError(f"{what} has {named} column", path=path, column=id_column or ID_COLUMN,
                     hint="name the column that identifies each image with --id-column NAME (e.g. Path); "
                          f"available: {', '.join(map(str, list(df.columns)[:20]))}")


@dataclass
class Aligned:
    """Embeddings ``X`` (n × d) and the metadata rows ``meta`` in the same order, plus the matching report."""

    X: np.ndarray
    meta: pd.DataFrame
    ids: dict = field(default_factory=dict)


class ArraySource:
    """Embeddings held in memory, with the store's reading API (``ids``, ``get``)."""

    def __init__(self, ids: list[str], X: np.ndarray):
        self.ids = list(ids)
        self._X = X
        self._pos = {i: k for k, i in enumerate(self.ids)}
        self.note = None

    def get(self, ids) -> np.ndarray:
        return self._X[[self._pos[i] for i in ids]]


class StoreSource:
    """An ``EmbeddingStore`` read lazily: only the images that match the metadata are loaded. Per-token items
    (T × D) are mean-pooled to D."""

    def __init__(self, store):
        self._store = store
        self.ids = [str(i) for i in store.ids]
        shape = tuple(store.item_shape)
        self.note = f"items of shape {shape} mean-pooled over the first axis" if len(shape) == 2 else None

    def get(self, ids) -> np.ndarray:
        a = np.asarray(self._store.get(list(ids)), dtype=np.float64)
        return a.mean(axis=1) if a.ndim == 3 else a


def read_ids(path: str | Path, id_column: str | None = None) -> list[str]:
    """Image ids from a text file (one per line) or a table with an ``image_id`` (or ``id_column``) column."""
    p = Path(path)
    if not p.exists():
        raise InputError("ids file not found", path=p, hint="give one image_id per line, or a table with image_id")
    if p.suffix.lower() in {".txt", ".ids"}:
        ids = [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        df = use_id_column(read_table(p, dtype={ID_COLUMN: str}), id_column, p, what="ids table")
        ids = df[ID_COLUMN].astype(str).tolist()
    return ids


def _sidecar_ids(p: Path) -> Path | None:
    for cand in (p.with_suffix(".ids.txt"), p.with_name(p.stem + "_ids.txt"), p.with_suffix(".ids.csv")):
        if cand.exists():
            return cand
    return None


def _from_table(df: pd.DataFrame, path: Path, columns: list[str] | None = None,
                id_column: str | None = None) -> tuple[list[str], np.ndarray]:
    df = use_id_column(drop_unnamed(df), id_column, path, what="embedding table")
    cols = columns or [c for c in df.columns if str(c).startswith(EMB_PREFIX)]
    if not cols and "embedding" in df.columns:  # `cxrdistill embeddings export` without --wide: a list column
        try:
            X = np.stack([np.asarray(v, dtype=np.float64).ravel() for v in df["embedding"]])
        except (TypeError, ValueError):
            raise InputError("column 'embedding' must hold equal-length numeric lists", path=path,
                             column="embedding") from None
        return df["image_id"].astype(str).tolist(), X
    if not cols:
        raise InputError(f"embedding table has no {EMB_PREFIX}* columns", path=path,
                         hint=f"name the embedding columns {EMB_PREFIX}0, {EMB_PREFIX}1, …")
    X = numeric_matrix(df, cols, path)
    return df["image_id"].astype(str).tolist(), X


def open_embeddings(path: str | Path, ids_path: str | Path | None = None, id_column: str | None = None):
    """An embedding source with ``.ids`` and ``.get(ids) -> float64 array (n × d)`` from any supported input.

    Inputs: an ``EmbeddingStore`` directory (``cxrdistill.storage.store``), a ``.npy`` matrix with
    its ids in ``ids_path`` or a sidecar ``<name>.ids.txt``, an ``.npz`` with ``embeddings`` (or ``X``) and ``ids``
    arrays, or a CSV/Parquet table with ``image_id`` and ``emb_*`` columns. ``id_column`` names the key of an ids
    table or an embedding table when it is not ``image_id`` (e.g. ``Path``). Pickled objects are never loaded.
    """
    p = Path(path)
    if not p.exists():
        raise InputError("embeddings not found", path=p, hint="give an embedding store, a .npy/.npz, or a table")
    name = p.name.lower()
    if p.is_dir():
        try:
            store = EmbeddingStore.open(p)
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"cannot be opened as an embedding store ({e})", path=p) from None
        return StoreSource(store)
    if name.endswith(".npy"):
        try:
            X = np.load(p, allow_pickle=False)
        except ValueError as e:
            raise InputError(f"cannot be read as a numeric .npy ({e})", path=p) from None
        idp = Path(ids_path) if ids_path else _sidecar_ids(p)
        if idp is None:
            raise InputError("a .npy matrix needs its image ids", path=p,
                             hint="pass --embedding-ids FILE or put them next to it in "
                                  f"{p.with_suffix('.ids.txt').name}")
        ids = read_ids(idp, id_column)
    elif name.endswith(".npz"):
        try:
            with np.load(p, allow_pickle=False) as z:
                key = next((k for k in ("embeddings", "X", "x", "emb") if k in z.files), None)
                if key is None:
                    raise InputError("has no 'embeddings' array", path=p, hint=f"arrays found: {', '.join(z.files)}")
                X = z[key]
                ids = [str(i) for i in z["ids"]] if "ids" in z.files else None
        except ValueError as e:
            raise InputError(f"cannot be read without pickle ({e})", path=p) from None
        if ids is None:
            if ids_path is None:
                raise InputError("has no 'ids' array", path=p, hint="pass --embedding-ids FILE")
            ids = read_ids(ids_path, id_column)
    else:
        dtype = {ID_COLUMN: str, **({id_column: str} if id_column else {})}
        ids, X = _from_table(read_table(p, dtype=dtype), p, id_column=id_column)
    X = np.asarray(X)
    if X.ndim != 2:
        raise InputError(f"embeddings must be a 2-D matrix (images × dims), got shape {X.shape}", path=p)
    if not np.issubdtype(X.dtype, np.number):
        raise InputError(f"embeddings must be numeric, got {X.dtype}", path=p)
    if len(ids) != X.shape[0]:
        raise InputError(f"{len(ids)} ids for {X.shape[0]} embedding rows", path=p,
                         hint="the ids file must list one id per embedding row, in order")
    if len(set(ids)) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise InputError(f"image_id {dup!r} appears more than once among the embeddings", path=p)
    return ArraySource(ids, X.astype(np.float64, copy=False))


def load_embeddings(source: str | Path, ids: Sequence[str]) -> tuple[np.ndarray, dict]:
    """The embeddings of ``ids``, in that order, and what is known about them: the one embeddings loader of the
    training stages and the study.

    ``source``: an embedding store (``cxrdistill embed`` / ``embeddings import``; items keep their shape, (N, D) or
    (N, T, D), and dtype, and the info carries the teacher's), or a ``.npy`` (+ ids) / ``.npz`` / table with
    ``emb_*`` columns (float32). Returns ``(X, info)`` with ``info["shape"]`` (one item's) and ``info["source"]``.
    Ids without an embedding are an error that says how many and which.
    """
    ids = [str(i) for i in ids]
    p = Path(source)
    if p.is_dir() and (p / "manifest.json").exists():
        st = EmbeddingStore.open(p)
        miss = st.missing(ids)
        if miss:
            raise InputError(f"{len(miss)} of {len(ids)} cohort images have no embedding in the store, e.g. "
                             f"{miss[:3]}", path=source,
                             hint="embed them first (`cxrdistill embed` resumes where it stopped)")
        return st.get(ids), {**dict(st.info), "shape": list(st.item_shape), "source": str(source)}
    src = open_embeddings(p)
    pos = {i: k for k, i in enumerate(src.ids)}
    miss = [i for i in ids if i not in pos]
    if miss:
        raise InputError(f"{len(miss)} of {len(ids)} cohort images have no embedding, e.g. {miss[:3]}", path=source,
                         hint="the embeddings must cover every image of the splits used")
    X = src.get(ids).astype(np.float32)
    return X, {"shape": list(X.shape[1:]), "source": str(source)}


def numeric_matrix(df: pd.DataFrame, columns: list[str], path: object | None = None) -> np.ndarray:
    """Columns as a float matrix; a missing or non-numeric column is an InputError naming it."""
    for c in columns:
        if c not in df.columns:
            raise InputError("column not found", path=path, column=c,
                             hint=f"available: {', '.join(map(str, list(df.columns)[:20]))}")
        s = df[c]
        if not pd.api.types.is_numeric_dtype(s):
            raise InputError(f"is not numeric (dtype {s.dtype})", path=path, column=c,
                             hint="only numeric feature columns can be tested")
    return df[columns].to_numpy(dtype=np.float64, na_value=np.nan)


def expand_columns(df: pd.DataFrame, patterns: list[str], path: object | None = None) -> list[str]:
    """Column names from names or shell-style patterns (``emb_*``), in table order, without duplicates."""
    out: list[str] = []
    for pat in patterns:
        if any(ch in pat for ch in "*?["):
            hits = [c for c in df.columns if fnmatch.fnmatchcase(str(c), pat)]
            if not hits:
                raise InputError(f"no column matches {pat!r}", path=path)
        else:
            if pat not in df.columns:
                raise InputError("column not found", path=path, column=pat,
                                 hint=f"available: {', '.join(map(str, list(df.columns)[:20]))}")
            hits = [pat]
        out.extend(h for h in hits if h not in out)
    return out


def read_metadata(path: str | Path, split: str | None = None, *, id_column: str | None = None,
                  require_id: bool = True) -> pd.DataFrame:
    """A cohort or predictions table keyed by a unique ``image_id`` (or ``id_column``, copied into ``image_id``),
    optionally filtered to one split. Unnamed index columns are dropped. With ``require_id=False`` (a single table,
    nothing to join) a table without an id column is keyed by its data line numbers instead."""
    p = Path(path)
    dtype = {ID_COLUMN: str, "patient_id": str, **({id_column: str} if id_column else {})}
    df = drop_unnamed(read_table(p, dtype=dtype))
    if not require_id and ID_COLUMN not in df.columns and not (id_column and id_column in df.columns):
        df = df.copy()
        df.insert(0, ID_COLUMN, [f"line {i + 2}" for i in range(len(df))])
        return filter_split(df, split, p)
    df = use_id_column(df, id_column, p, what="metadata").copy()
    df[ID_COLUMN] = df[ID_COLUMN].astype(str)
    dup = df[ID_COLUMN].duplicated()
    if dup.any():
        key = id_column if id_column and id_column != ID_COLUMN and id_column in df.columns else ID_COLUMN
        raise InputError(f"id {df[ID_COLUMN][dup].iloc[0]!r} appears more than once", path=p,
                         column=key, row=int(np.flatnonzero(dup.to_numpy())[0]) + 2,
                         hint="the metadata table must have one row per image")
    return filter_split(df, split, p)


def filter_split(df: pd.DataFrame, split: str | None, path: object | None = None) -> pd.DataFrame:
    if split is None:
        return df
    if "split" not in df.columns:
        raise InputError("has no split column to filter on", path=path, column="split",
                         hint="drop --split or add a split column (train/val/test)")
    out = df[df["split"].astype(str) == split]
    if out.empty:
        vals = sorted(map(str, df["split"].dropna().unique()))
        raise InputError(f"no rows with split == {split!r}", path=path, column="split",
                         hint=f"splits present: {', '.join(vals) or 'none'}")
    return out


def align(source, meta: pd.DataFrame, *, path: object | None = None) -> Aligned:
    """Keep the images present in both the embedding source and the metadata, in metadata order, loading only
    those rows. Ids on one side only are counted and a few listed, so a wrong file or split shows at once;
    no overlap at all is an InputError. ``source`` is anything with ``.ids`` and ``.get(ids)`` (or an
    ``(ids, X)`` tuple)."""
    if isinstance(source, tuple):
        source = ArraySource(*source)
    ids = source.ids
    emb_set = set(ids)
    meta_ids = meta["image_id"].astype(str).tolist()
    meta_set = set(meta_ids)
    keep = [k for k, i in enumerate(meta_ids) if i in emb_set]
    only_emb = [i for i in ids if i not in meta_set]
    only_meta = [i for i in meta_ids if i not in emb_set]
    report = {
        "n_embeddings": len(ids),
        "n_metadata": len(meta_ids),
        "n_matched": len(keep),
        "n_only_in_embeddings": len(only_emb),
        "only_in_embeddings_examples": only_emb[:N_EXAMPLES],
        "n_only_in_metadata": len(only_meta),
        "only_in_metadata_examples": only_meta[:N_EXAMPLES],
    }
    if getattr(source, "note", None):
        report["note"] = source.note
    if not keep:
        raise InputError("no image_id is shared by the embeddings and the metadata", path=path,
                         hint=f"embedding ids look like {ids[:3]}, metadata ids like {meta_ids[:3]}")
    sub = meta.iloc[keep].reset_index(drop=True)
    X = np.asarray(source.get(sub["image_id"].tolist()), dtype=np.float64)
    return Aligned(X=X, meta=sub, ids=report)


def one_image_per_patient(meta: pd.DataFrame, seed: int = 0, path: object | None = None) -> pd.DataFrame:
    """Keep one random image per patient (seeded), so that tests treat independent patients, not images."""
    if "patient_id" not in meta.columns:
        raise InputError("has no patient_id column", path=path, column="patient_id",
                         hint="drop --one-per-patient or add patient ids")
    m = meta[meta["patient_id"].notna()]
    shuffled = m.sample(frac=1.0, random_state=seed)
    return shuffled.drop_duplicates("patient_id").sort_index()
