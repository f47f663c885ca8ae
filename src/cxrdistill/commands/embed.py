"""``cxrdistill embed``: fill an embedding store from a teacher (an API — ours, Vertex AI, KServe — or in-process),
resumable and sharded."""
from __future__ import annotations

from typing import List, Optional

import typer

from cxrdistill.commands._common import (DEVICE_HELP, device_option, on_error_mode, on_error_option, out_option,
                                         progress_option, quiet_option, summary)


def embed(
    teacher: str = typer.Option(..., "--teacher", help="http://HOST:PORT, vertex:PREDICT_URL, kserve:MODEL_URL, "
                                                       "torch:CHECKPOINT or timm:NAME[:WEIGHTS]"),
    cohort: str = typer.Option(..., "--cohort", help="cohort table (Parquet/CSV) with image_id and path"),
    images_root: str = typer.Option(..., "--images-root", help="directory the cohort's paths are relative to"),
    out: str = out_option(help="Embedding store directory (created, or resumed if it exists)."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="requests (batches) in flight"),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="images per request"),
    size: Optional[int] = typer.Option(None, "--size", min=8,
                                       help="image side in pixels (default: the teacher's; vertex: each image's own "
                                            "size, long side ≤ 1024)"),
    preprocess: str = typer.Option("resize", "--preprocess", help="resize | center-crop | pad"),
    token_env: Optional[str] = typer.Option(None, "--token-env", help="environment variable holding the API token"),
    token_command: Optional[str] = typer.Option(None, "--token-command",
                                                help="command printing the API token (run again once on HTTP 401), "
                                                     'e.g. "gcloud auth print-access-token"'),
    output_key: Optional[str] = typer.Option(None, "--output-key",
                                             help="the API output to store (vertex default: general_img_emb)"),
    max_request_mb: Optional[float] = typer.Option(None, "--max-request-mb", min=0.001,
                                                   help="largest request body in MiB (vertex default: 1.5)"),
    max_rps: Optional[float] = typer.Option(None, "--max-rps", min=0.001, help="at most this many requests per second"),
    normalize: Optional[str] = typer.Option(None, "--normalize",
                                            help="kserve FP32 input: none (0-255), unit (0-1; default) or imagenet"),
    deadline: Optional[float] = typer.Option(None, "--deadline", min=0, help="stop after this many seconds"),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/n: embed only this deterministic share of the ids"),
    split: Optional[List[str]] = typer.Option(None, "--split", help="only rows of this split (repeatable)"),
    dtype: str = typer.Option("float32", "--dtype", help="store dtype: float32 or float16"),
    on_error: str = on_error_option(help="Image that cannot be used (unreadable, or refused by the API): fail "
                                         "(stop) or skip (report it, store the rest)."),
    max_attempts: int = typer.Option(8, "--max-attempts", min=1, help="attempts per request before giving up"),
    timeout: float = typer.Option(120.0, "--timeout", min=0.1, help="seconds to wait for one response"),
    device: str = device_option(help=DEVICE_HELP + " Only for a teacher run in this process (torch:, timm:)."),
    progress: bool = progress_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Embed a cohort's images with a teacher into a crash-safe store; rerun the same command to resume."""
    from cxrdistill.teachers.client import RetryPolicy, embed_cohort
    from cxrdistill.teachers.local import device_for, is_remote, resolve_teacher, token_from_env

    device = device_for(teacher, device)
    local = None  # a teacher run in this process, placed on --device
    if not is_remote(teacher) and not (token_command or output_key or max_rps or normalize):
        local = resolve_teacher(teacher, image_size=size, device=device)
    res = embed_cohort(local or teacher, cohort, images_root, out, concurrency=concurrency, batch_size=batch_size,
                       size=size, mode=preprocess, token=token_from_env(token_env), token_command=token_command,
                       deadline=deadline, shard=shard, splits=split or None, dtype=dtype,
                       on_error="skip" if on_error_mode(on_error) == "skip" else "raise",
                       retry=RetryPolicy(max_attempts=max_attempts, timeout=timeout), progress=progress and not quiet,
                       max_rps=max_rps, max_request_mb=max_request_mb, output_key=output_key, normalize=normalize)
    for image_id, err in res.skipped[:5]:
        typer.secho(f"skipped {image_id}: {err}", fg=typer.colors.YELLOW, err=True)
    d = res.to_dict()
    d.pop("teacher")
    if local is not None:
        d["device"] = str(local.device)
    summary("embed", d.pop("store"), **d)


def register(app: typer.Typer) -> None:
    app.command("embed")(embed)
