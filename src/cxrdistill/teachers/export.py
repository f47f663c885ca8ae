"""Export an embedding store to .npy (+ ids), Parquet, or per-image CXR Foundation-style .npz — streaming."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cxrdistill.errors import InputError
from cxrdistill.storage.io import atomic_open, atomic_path
from cxrdistill.storage.store import EmbeddingStore


def export_store(store, out: str | os.PathLike, *, fmt: str | None = None, wide: bool = False,
                 batch_size: int = 16384) -> int:
    """Write every embedding of ``store`` (a path or an open store) to ``out``; returns the row count.

    ``npy``: ``out`` (N, *shape) + ``<out stem>.ids.txt``; ``parquet``: ``image_id`` + a list column ``embedding``
    (or ``emb_0 …`` with ``wide``, 1-D only); ``cxr-foundation-npz``: ``out/<image_id>.npz`` with key ``embedding``.
    """
    st = store if isinstance(store, EmbeddingStore) else EmbeddingStore.open(store, "r")
    out = Path(out)
    if fmt is None:
        suf = out.suffix.lower()
        fmt = {".npy": "npy", ".parquet": "parquet", ".pq": "parquet"}.get(suf)
        if fmt is None:
            raise InputError("cannot tell the export format from the extension", path=out,
                             hint="use .npy or .parquet, or give --format")
    if fmt == "npy":
        return _to_npy(st, out, batch_size)
    if fmt == "parquet":
        return _to_parquet(st, out, wide, batch_size)
    if fmt == "cxr-foundation-npz":
        return _to_npz_dir(st, out, batch_size)
    raise InputError(f"unknown export format {fmt!r}", hint="use npy, parquet or cxr-foundation-npz")


def _to_npy(st, out: Path, batch_size: int) -> int:
    n = len(st)
    ids_path = out.with_name(out.stem + ".ids.txt")
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(st.dtype),
                                                      "fortran_order": False, "shape": (n, *st.item_shape)})
            for _, arr in st.iter_batches(batch_size):
                fh.write(np.ascontiguousarray(arr).tobytes())
        with atomic_open(ids_path, "w", encoding="utf-8") as fh:
            for i in st.ids:
                fh.write(i + "\n")
    return n


def _to_parquet(st, out: Path, wide: bool, batch_size: int) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if wide and len(st.item_shape) != 1:
        raise InputError(f"--wide needs 1-D embeddings, this store holds {st.item_shape}",
                         hint="export without --wide (a list column)")
    n = 0
    with atomic_path(out) as tmp:
        writer = None
        try:
            for bids, arr in st.iter_batches(batch_size):
                a = np.asarray(arr, dtype=np.float32)
                if wide:
                    cols = {"image_id": pa.array(bids, pa.string())}
                    cols.update({f"emb_{j}": pa.array(a[:, j]) for j in range(a.shape[1])})
                    tbl = pa.table(cols)
                else:
                    flat = pa.array(a.reshape(-1))
                    col = pa.FixedSizeListArray.from_arrays(flat, int(a.shape[-1]))
                    if a.ndim == 3:
                        col = pa.FixedSizeListArray.from_arrays(col, int(a.shape[1]))
                    tbl = pa.table({"image_id": pa.array(bids, pa.string()), "embedding": col})
                if writer is None:
                    writer = pq.ParquetWriter(tmp, tbl.schema)
                writer.write_table(tbl)
                n += len(bids)
            if writer is None:
                raise InputError("store is empty: nothing to export", path=st.path)
        finally:
            if writer is not None:
                writer.close()
    return n


def _to_npz_dir(st, out: Path, batch_size: int) -> int:
    n = 0
    out.mkdir(parents=True, exist_ok=True)
    for bids, arr in st.iter_batches(batch_size):
        for i, a in zip(bids, arr):
            parts = i.split("/")
            if i.startswith("/") or "\\" in i or any(x in ("", ".", "..") for x in parts):
                raise InputError(f"image id {i!r} cannot be used as a file path", path=out,
                                 hint="export to npy or parquet instead")
            p = out / f"{i}.npz"
            p.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(p) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, embedding=np.asarray(a, dtype=np.float32))
            n += 1
    return n
