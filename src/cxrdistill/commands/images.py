"""``cxrdistill images cache`` — decode a cohort's images once into a memory-mapped uint8 cache (thin)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

sub = typer.Typer(help="Images: build the preprocessed uint8 cache that training reads every epoch.",
                  no_args_is_help=True)


@sub.command("cache")
def cache_cmd(
    cohort: Path = typer.Option(..., help="Cohort table (image_id, path)."),
    images_root: Path = typer.Option(..., help="Directory the cohort's paths are relative to."),
    out: Path = typer.Option(..., "--out", "-o", help="Cache directory (images.u8, index.parquet, meta.json)."),
    size: int = typer.Option(256, help="Square side in pixels."),
    mode: str = typer.Option("resize", help="resize | center-crop | pad"),
    workers: int = typer.Option(2, help="Decoding processes."),
    split: Optional[str] = typer.Option(None, help="Only rows of this split (train/val/test)."),
    skip_bad_images: bool = typer.Option(False, help="Record undecodable files (ok=False) instead of stopping."),
    overwrite: bool = typer.Option(False, help="Replace a cache built from other images or settings."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Build (or resume, or reuse) the cache; a killed build continues where it stopped."""
    from cxrdistill.images.cache import ImageCache
    from cxrdistill.errors import InputError
    from cxrdistill.storage.io import read_table

    df = read_table(cohort)
    if "image_id" in df.columns and df["image_id"].astype(str).duplicated().any():
        dup = df["image_id"].astype(str)[df["image_id"].astype(str).duplicated()]
        raise InputError(f"{len(dup)} duplicate image_id(s), e.g. {str(dup.iloc[0])!r}: ids must be unique",
                         path=cohort, column="image_id", hint="de-duplicate the cohort table")
    if split is not None:
        if "split" not in df.columns:
            raise InputError("cohort has no split column", path=cohort, column="split",
                             hint="split it with 'cxrdistill cohort split' or drop --split")
        df = df[df["split"] == split]
    c = ImageCache.build(df, images_root, size, out, mode=mode, workers=workers, progress=progress,
                         on_error="skip" if skip_bad_images else "raise", overwrite=overwrite)
    typer.echo(f"cache {out}: {len(c)} images at {c.size}×{c.size} ({c.mode}), {int((~c.ok).sum())} skipped")
    if (~c.ok).any():
        for _, r in c.skipped.head(5).iterrows():
            typer.echo(f"  skipped {r.image_id}: {r.error}")


def register(app: typer.Typer) -> None:
    app.add_typer(sub, name="images")
