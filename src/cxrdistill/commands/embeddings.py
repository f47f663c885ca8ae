"""``cxrdistill embeddings import|info|export|merge|compact`` — manage embedding stores (thin; see storage.store)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cxrdistill.commands import _common as C

sub = typer.Typer(help="Embedding stores: import CXR Foundation / npy / Parquet files, inspect, verify, export, "
                       "merge shards.", no_args_is_help=True)


@sub.command("import")
def import_cmd(
    src: Path = typer.Argument(..., help="Directory of per-image files (.npz/.tfrecord), or one .npy/.parquet file."),
    fmt: Optional[str] = typer.Option(None, "--format", help="cxr-foundation-npz | cxr-foundation-tfrecord | npy | "
                                                             "parquet [required]"),
    fmt_old: Optional[str] = C.hidden("-f"),
    out: Path = C.out_option(help="Embedding store directory (created, or appended to)."),
    cohort: Optional[Path] = typer.Option(None, help="Cohort table: import only ids matching its image_id/path."),
    id_from: str = typer.Option("relpath", help="Per-file formats: id = file 'stem' or 'relpath' (no extension)."),
    pool: str = typer.Option("none", help="Token outputs (T, D): none | mean | cls (token 0) | flatten."),
    key: Optional[str] = typer.Option(None, help="Array/feature/column holding the embedding (default: embedding)."),
    shape: Optional[str] = typer.Option(None, help="TFRecord: per-item shape of the flat float list, e.g. 32x768."),
    ids: Optional[Path] = typer.Option(None, "--ids", help="npy: ids file (one id per line, or CSV/Parquet)."),
    dtype: str = typer.Option("float32", help="Stored dtype: float32 or float16."),
    strict: bool = typer.Option(False, help="Error (before writing) if any id is unmatched or missing."),
    name: Optional[str] = typer.Option(None, "--teacher-name", help="Teacher name recorded in the manifest."),
    version: Optional[str] = typer.Option(None, "--teacher-version",
                                          help="Teacher version (default: v1 / elixr-b / elixr-c by shape)."),
    old_name: Optional[str] = C.hidden("--name"),
    old_version: Optional[str] = C.hidden("--version"),
    check_crc: bool = typer.Option(False, help="TFRecord: also verify each record's data CRC32C (slower)."),
    id_column: str = typer.Option("image_id", help="Parquet: the id column."),
    id_feature: str = typer.Option("image_id", help="TFRecord with several records per file: the id feature."),
    report: Optional[Path] = typer.Option(None, help="Write the matching report as JSON here."),
    progress: bool = C.progress_option(),
    quiet: bool = C.quiet_option(),
) -> None:
    """Import precomputed embeddings into a store; prints matched / unmatched / missing ids."""
    from cxrdistill.storage.io import read_table, write_json
    from cxrdistill.teachers.importers import import_embeddings

    fmt = fmt or fmt_old
    if fmt is None:
        from cxrdistill.errors import InputError

        raise InputError("--format is required", hint="cxr-foundation-npz | cxr-foundation-tfrecord | npy | parquet")
    cdf = read_table(cohort) if cohort is not None else None
    rep = import_embeddings(fmt, src, out, cohort=cdf, id_from=id_from, pool=pool, key=key, shape=shape,
                            ids_file=ids, dtype=dtype, strict=strict, name=name or old_name,
                            version=version or old_version, check_crc=check_crc, id_column=id_column,
                            id_feature=id_feature, progress=progress and not quiet)
    _print_report(rep)
    if report is not None:
        write_json(rep.as_dict(), report)
    C.summary("embeddings import", out, imported=rep.imported, already_stored=rep.already_stored,
              matched=rep.matched if rep.cohort else None, missing_from_files=len(rep.missing_from_files or []))


def _print_report(rep) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"import {rep.format} → {rep.store}", show_header=True)
    t.add_column("what")
    t.add_column("count", justify="right")
    t.add_column("examples")
    t.add_row("ids in files", str(rep.n_source), f"{rep.n_files} file(s), shape {rep.source_shape}")
    if rep.cohort:
        t.add_row("matched to cohort", str(rep.matched), "")
        t.add_row("unmatched in files (skipped)", str(len(rep.unmatched_in_files)),
                  ", ".join(rep.unmatched_in_files[:3]))
        t.add_row("missing from files", str(len(rep.missing_from_files)), ", ".join(rep.missing_from_files[:3]))
    t.add_row("imported now", str(rep.imported), f"stored as {rep.stored_shape} (pool={rep.pool})")
    t.add_row("already in the store", str(rep.already_stored), "")
    Console().print(t)


@sub.command("info")
def info_cmd(
    store: Path = typer.Argument(..., help="Embedding store directory."),
    verify: bool = typer.Option(False, "--verify", help="Recompute every chunk's sha256 and check the files."),
    as_json: bool = typer.Option(False, "--json", help="Print the description only as the JSON summary line."),
) -> None:
    """Describe a store (teacher, shape, dtype, rows, chunks, writers); with --verify check its checksums."""
    import json

    from cxrdistill.errors import CxrError
    from cxrdistill.storage.store import EmbeddingStore

    st = EmbeddingStore.open(store, "r")
    m = st.manifest
    writers = sorted({c["writer"] for c in m.get("chunks", [])})
    d = {"path": str(store), "n": len(st), "shape": list(st.item_shape), "dtype": st.dtype.name, "teacher": st.info,
         "chunks": len(st.chunks), "writers": writers, "bytes": st.nbytes(), "created": m.get("created"),
         "updated": m.get("updated")}
    if verify:
        d["verify"] = st.verify()
    if not as_json:
        from rich.console import Console
        from rich.table import Table

        t = Table(show_header=False, title=str(store))
        for k in ("n", "shape", "dtype", "chunks", "writers", "bytes", "created", "updated"):
            t.add_row(k, str(d[k]))
        t.add_row("teacher", json.dumps(st.info))
        if verify:
            v = d["verify"]
            t.add_row("verify", "OK" if v["ok"] else "FAILED: " + "; ".join(v["problems"][:5]))
            t.add_row("duplicate rows", str(v["duplicate_rows"]))
            t.add_row("orphan files", str(len(v["orphan_files"])))
        Console().print(t)
    if verify and not d["verify"]["ok"]:
        raise CxrError(f"{store}: verification failed: {'; '.join(d['verify']['problems'][:3])}")
    C.summary("embeddings info", None, **d)


@sub.command("export")
def export_cmd(
    store: Path = typer.Argument(..., help="Embedding store directory."),
    out: Path = C.out_option(help="FILE.npy (+ FILE.ids.txt), FILE.parquet, or a directory with --format "
                             "cxr-foundation-npz."),
    fmt: Optional[str] = typer.Option(None, "--format", help="npy | parquet | cxr-foundation-npz (default: by "
                                                             "extension)."),
    fmt_old: Optional[str] = C.hidden("-f"),
    wide: bool = typer.Option(False, help="Parquet: emb_0 … emb_{D-1} columns instead of one list column."),
    batch_size: int = typer.Option(16384, help="Rows per streamed batch."),
) -> None:
    """Export a store, streaming (O(batch) memory)."""
    from cxrdistill.teachers.export import export_store

    n = export_store(store, out, fmt=fmt or fmt_old, wide=wide, batch_size=batch_size)
    typer.echo(f"exported {n} embeddings to {out}")
    C.summary("embeddings export", out, n=n)


@sub.command("merge")
def merge_cmd(
    sources: List[Path] = typer.Argument(..., help="Stores to merge (e.g. one per machine/shard)."),
    out: Path = C.out_option(help="New store directory."),
) -> None:
    """Merge stores of one teacher into a new single-chunk store (an id present twice is kept once)."""
    from cxrdistill.storage.store import EmbeddingStore

    st = EmbeddingStore.merge(sources, out)
    typer.echo(f"merged {len(sources)} store(s): {len(st)} embeddings in {out}")
    C.summary("embeddings merge", out, n=len(st), sources=len(sources))


@sub.command("compact")
def compact_cmd(
    store: Path = typer.Argument(..., help="Store to compact."),
    out: Path = C.out_option(help="New store directory (one chunk, duplicates dropped)."),
) -> None:
    """Rewrite a store with many chunks (or several shard writers) as one chunk."""
    from cxrdistill.storage.store import EmbeddingStore

    st = EmbeddingStore.open(store, "r").compact(out)
    typer.echo(f"compacted {len(st)} embeddings into {out}")
    C.summary("embeddings compact", out, n=len(st))


def register(app: typer.Typer) -> None:
    app.add_typer(sub, name="embeddings")
