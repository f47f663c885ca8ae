"""``cxrdistill images cache`` — decode a cohort's images once into a memory-mapped uint8 cache (thin)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cxrdistill.commands import _common as C

sub = typer.Typer(help="Images: build the preprocessed uint8 cache that training reads every epoch.",
                  no_args_is_help=True)


@sub.command("cache")
def cache_cmd(
    cohort: Path = typer.Option(..., help="Cohort table (image_id, path)."),
    images_root: Path = typer.Option(..., help="Directory the cohort's paths are relative to."),
    out: Path = C.out_option(help="Cache directory (images.u8, index.parquet, meta.json)."),
    size: int = typer.Option(256, "--size", min=8, help=C.SIZE_HELP),
    preprocess: str = typer.Option("resize", "--preprocess", help="How an image becomes square: resize | "
                                   "center-crop | pad."),
    mode: Optional[str] = C.hidden("--mode"),
    workers: int = typer.Option(2, help="Decoding processes."),
    split: Optional[str] = typer.Option(None, help="Only rows of this split (train/val/test)."),
    on_error: str = C.on_error_option(help="An undecodable image: fail (stop), or skip it (recorded as ok=False)."),
    skip_bad_images: bool = C.hidden("--skip-bad-images", default=False),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a cache built from other images or settings."),
    progress: bool = C.progress_option(),
    quiet: bool = C.quiet_option(),
) -> None:
    """Build (or resume, or reuse) the cache; a killed build continues where it stopped."""
    from cxrdistill.images.cache import ImageCache
    from cxrdistill.errors import InputError
    from cxrdistill.storage.io import read_table

    skip = C.on_error_mode(on_error, skip_alias=skip_bad_images) == "skip"
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
    c = ImageCache.build(df, images_root, size, out, mode=mode or preprocess, workers=workers,
                         progress=progress and not quiet, on_error="skip" if skip else "raise", overwrite=overwrite)
    typer.echo(f"cache {out}: {len(c)} images at {c.size}×{c.size} ({c.mode}), {int((~c.ok).sum())} skipped")
    if (~c.ok).any():
        for _, r in c.skipped.head(5).iterrows():
            typer.echo(f"  skipped {r.image_id}: {r.error}")
    C.summary("images cache", out, images=len(c), size=c.size, preprocess=c.mode, skipped=int((~c.ok).sum()))


def register(app: typer.Typer) -> None:
    app.add_typer(sub, name="images")
