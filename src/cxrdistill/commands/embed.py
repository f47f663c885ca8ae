"""``cxrdistill embed``: fill an embedding store from a teacher (HTTP API or in-process), resumable and sharded."""
from __future__ import annotations

from typing import List, Optional

import typer


def embed(
    teacher: str = typer.Option(..., "--teacher", help="http://HOST:PORT, torch:CHECKPOINT or timm:NAME[:WEIGHTS]"),
    cohort: str = typer.Option(..., "--cohort", help="cohort table (Parquet/CSV) with image_id and path"),
    images_root: str = typer.Option(..., "--images-root", help="directory the cohort's paths are relative to"),
    out: str = typer.Option(..., "--out", help="embedding store directory (created, or resumed if it exists)"),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="requests (batches) in flight"),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="images per request"),
    size: Optional[int] = typer.Option(None, "--size", min=8, help="image side in pixels (default: the teacher's)"),
    preprocess: str = typer.Option("resize", "--preprocess", help="resize | center-crop | pad"),
    token_env: Optional[str] = typer.Option(None, "--token-env", help="environment variable holding the API token"),
    deadline: Optional[float] = typer.Option(None, "--deadline", min=0, help="stop after this many seconds"),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/n: embed only this deterministic share of the ids"),
    split: Optional[List[str]] = typer.Option(None, "--split", help="only rows of this split (repeatable)"),
    dtype: str = typer.Option("float32", "--dtype", help="store dtype: float32 or float16"),
    on_error: str = typer.Option("raise", "--on-error", help="unreadable image: raise (stop) or skip (report)"),
    max_attempts: int = typer.Option(8, "--max-attempts", min=1, help="attempts per request before giving up"),
    timeout: float = typer.Option(120.0, "--timeout", min=0.1, help="seconds to wait for one response"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bar with rate and ETA"),
) -> None:
    """Embed a cohort's images with a teacher into a crash-safe store; rerun the same command to resume."""
    import json

    from cxrdistill.teachers.client import RetryPolicy, embed_cohort
    from cxrdistill.teachers.local import token_from_env

    res = embed_cohort(teacher, cohort, images_root, out, concurrency=concurrency, batch_size=batch_size, size=size,
                       mode=preprocess, token=token_from_env(token_env), deadline=deadline, shard=shard,
                       splits=split or None, dtype=dtype, on_error=on_error,
                       retry=RetryPolicy(max_attempts=max_attempts, timeout=timeout), progress=progress)
    for image_id, err in res.skipped[:5]:
        typer.secho(f"skipped {image_id}: {err}", fg=typer.colors.YELLOW, err=True)
    d = res.to_dict()
    d.pop("teacher")
    typer.echo(json.dumps(d))


def register(app: typer.Typer) -> None:
    app.command("embed")(embed)
