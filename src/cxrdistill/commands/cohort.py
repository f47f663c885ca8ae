"""``cxrdistill cohort …``: import a dataset's metadata into a cohort table, split it by patient, inspect it.

Thin: options are parsed here, the work is in ``cxrdistill.cohorts``. Only typer and the standard library are
imported at module level.
"""
from pathlib import Path
from typing import List, Optional

import typer

from cxrdistill.commands import _common as C

_COMMON = "Image check"


def _run_import(reader: str, *, out: Path, images_root: Optional[Path], no_image_check: bool, missing: str,
                check_sample: int, old_missing: Optional[str] = None, **kw) -> None:
    from rich.console import Console

    from cxrdistill.cohorts.importer import import_cohort
    from cxrdistill.cohorts.schema import label_columns

    mode = C.on_error_mode(old_missing or missing, option="--missing" if old_missing else "--on-error")
    missing = {"fail": "error", "skip": "drop"}[mode]
    console = Console(soft_wrap=True, markup=False, highlight=False)
    df, report = import_cohort(reader, out, images_root=images_root, image_check=not no_image_check,
                               missing=missing, sample=check_sample, **kw)
    for note in df.attrs.get("notes", []):
        console.print(f"note: {note}")
    if report is not None:
        console.print(report.summary() if not report.n_dropped else
                      f"warning: {report.summary()} — dropped {report.n_dropped} rows")
    console.print(f"wrote {out}: {len(df)} images, {df['patient_id'].nunique()} patients, "
                  f"{len(label_columns(df))} label columns")
    C.summary(f"cohort import {reader}", out, images=len(df), patients=int(df["patient_id"].nunique()),
              labels=len(label_columns(df)), dropped=int(report.n_dropped) if report is not None else 0)


def register(app: typer.Typer) -> None:
    cohort = typer.Typer(help="Cohort tables: import datasets, split by patient, inspect.", no_args_is_help=True)
    imp = typer.Typer(help="Import a dataset's metadata as a cohort table (Parquet).", no_args_is_help=True)
    cohort.add_typer(imp, name="import")

    # the options every importer takes after its own (its metadata files): where the table goes, and the image check
    shared = C.with_options({
        "out": (Path, C.out_option(help="Cohort table to write (.parquet).")),
        "images_root": (Optional[Path], typer.Option(None, "--images-root", help="Folder the image paths are relative "
                        "to (default: next to the metadata csv).", rich_help_panel=_COMMON)),
        "no_image_check": (bool, typer.Option(False, "--no-image-check", help="Build the table from metadata alone.",
                           rich_help_panel=_COMMON)),
        "missing": (str, typer.Option("fail", "--on-error", help="Missing or unreadable images: fail (stop), or skip "
                    "them (the rows are dropped and reported).", rich_help_panel=_COMMON)),
        "check_sample": (int, typer.Option(32, "--check-sample", help="How many images (seeded sample) to open as "
                         "well as stat; -1 = all, 0 = none.", rich_help_panel=_COMMON)),
        "old_missing": (Optional[str], C.hidden("--missing")),
    })

    @imp.command("chexpert")
    @shared
    def import_chexpert(
        csv: Path = typer.Option(..., "--csv", help="CheXpert train.csv / valid.csv (or .csv.gz), or a synthetic "
                                 "dataset's train.csv."),
        demographics: Optional[Path] = typer.Option(None, "--demographics", help="CHEXPERT DEMO.xlsx or .csv "
                                                    "(race and ethnicity, joined on patient id)."),
        **common,
    ) -> None:
        """CheXpert (and the synthetic dataset, which uses CheXpert's layout)."""
        _run_import("chexpert", csv=csv, demographics=demographics, **common)

    @imp.command("mimic")
    @shared
    def import_mimic(
        metadata: Path = typer.Option(..., "--metadata", help="mimic-cxr-2.0.0-metadata.csv[.gz]."),
        labels: Path = typer.Option(..., "--labels", help="mimic-cxr-2.0.0-chexpert.csv[.gz] or -negbio.csv[.gz]."),
        patients: Optional[Path] = typer.Option(None, "--patients", help="MIMIC-IV patients.csv[.gz] (sex, age)."),
        admissions: Optional[Path] = typer.Option(None, "--admissions", help="MIMIC-IV admissions.csv[.gz] (race)."),
        exclude_inconsistent_race: bool = typer.Option(False, "--exclude-inconsistent-race",
                                                       help="Drop patients whose race differs across admissions."),
        split_csv: Optional[Path] = typer.Option(None, "--split-csv", help="Official mimic-cxr-2.0.0-split.csv[.gz] "
                                                 "(validate → val)."),
        **common,
    ) -> None:
        """MIMIC-CXR-JPG with MIMIC-IV demographics."""
        _run_import("mimic", metadata=metadata, labels=labels, patients=patients, admissions=admissions,
                    exclude_inconsistent_race=exclude_inconsistent_race, split_csv=split_csv, **common)

    @imp.command("nih")
    @shared
    def import_nih(
        csv: Path = typer.Option(..., "--csv", help="Data_Entry_2017_v2020.csv[.gz] (or Data_Entry_2017.csv)."),
        **common,
    ) -> None:
        """NIH ChestX-ray14."""
        _run_import("nih", csv=csv, **common)

    @imp.command("padchest")
    @shared
    def import_padchest(
        csv: Path = typer.Option(..., "--csv", help="PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv[.gz]."),
        all_findings: bool = typer.Option(False, "--all-findings", help="Also one column per other PadChest term."),
        keep_unlabelled: bool = typer.Option(False, "--keep-unlabelled", help="Keep images with a blank Labels "
                                             "cell (labels NaN)."),
        **common,
    ) -> None:
        """PadChest."""
        _run_import("padchest", csv=csv, all_findings=all_findings, keep_unlabelled=keep_unlabelled, **common)

    @cohort.command("split")
    def split(
        cohort_path: Path = typer.Argument(..., metavar="COHORT", help="Cohort table (.parquet)."),
        out: Path = typer.Option(..., "--out", "-o", help="Where to write the split cohort (may be COHORT)."),
        fractions: str = typer.Option("0.7,0.1,0.2", "--fractions", help="train,val,test (or train,test)."),
        stratify: Optional[List[str]] = typer.Option(None, "--stratify", help="Label or attribute to stratify by "
                                                     "(repeatable): e.g. pleural_effusion, sex, race, age."),
        seed: int = C.seed_option(),
        from_file: Optional[Path] = typer.Option(None, "--from-file", help="Fixed split: a csv with image_id or "
                                                 "patient_id, and split."),
    ) -> None:
        """Assign train/val/test by patient (stratified, seeded), or from a file; checks no patient leaks."""
        from rich.console import Console

        from cxrdistill.cohorts.splits import assign_splits, check_no_leakage, split_from_file, split_summary
        from cxrdistill.cohorts.validate import load_cohort, save_cohort

        console = Console(soft_wrap=True, markup=False, highlight=False)
        df = load_cohort(cohort_path)
        strat = list(stratify or [])
        if from_file is not None:
            df, stats = split_from_file(df, from_file)
            console.print(f"split from {from_file} by {stats['key']}: {stats['matched']} rows assigned, "
                          f"{stats['unlisted']} not listed (split null), {stats['unknown_ids']} ids not in the cohort",
                          highlight=False)
        else:
            df = assign_splits(df, fractions, stratify=strat, seed=seed)
        check_no_leakage(df, from_file or cohort_path)
        save_cohort(df, out)
        _print_frame(console, split_summary(df, strat), f"{out}")
        C.summary("cohort split", out, images=len(df),
                  splits={str(k): int(v) for k, v in df["split"].value_counts().sort_index().items()})

    @cohort.command("info")
    def info(
        cohort_path: Path = typer.Argument(..., metavar="COHORT", help="Cohort table (.parquet or .csv)."),
        out: Optional[Path] = C.out_option(False, help="Also write the summary as JSON to this file."),
        json_out: Optional[Path] = C.hidden("--json"),
    ) -> None:
        """Summarize a cohort: images, patients, views, sex/race counts, splits, label prevalences."""
        from rich.console import Console
        from rich.table import Table

        from cxrdistill.cohorts.importer import cohort_summary
        from cxrdistill.cohorts.validate import load_cohort
        from cxrdistill.storage.io import clean_json, write_json

        s = cohort_summary(load_cohort(cohort_path))
        console = Console(soft_wrap=True, markup=False, highlight=False)
        t = Table(title=str(cohort_path), show_header=True)
        t.add_column("what")
        t.add_column("count", justify="right")
        t.add_row("images", str(s["images"]))
        t.add_row("patients", str(s["patients"]))
        if s["studies"] is not None:
            t.add_row("studies", str(s["studies"]))
        for key in ("datasets", "views", "sex", "race", "split"):
            for k, n in s[key].items():
                t.add_row(f"{key}: {k}", f"{n} ({100 * n / s['images']:.1f}%)")
        t.add_row("frontal", str(s["frontal"]))
        if s["age"]["mean"] is not None:
            t.add_row("age mean (min–max)", f"{s['age']['mean']:.1f} ({s['age']['min']:g}–{s['age']['max']:g})")
        t.add_row("age missing", str(s["age"]["missing"]))
        console.print(t)
        lt = Table(title="labels (1 / 0 / -1 / blank)", show_header=True)
        for c in ("label", "pos", "neg", "uncertain", "blank", "prevalence"):
            lt.add_column(c, justify="left" if c == "label" else "right")
        for name, v in s["labels"].items():
            lt.add_row(name, str(v["pos"]), str(v["neg"]), str(v["uncertain"]), str(v["blank"]),
                       f"{100 * v['prevalence']:.2f}%")
        console.print(lt)
        for note in s["notes"]:
            console.print(f"note: {note}")
        out = out or json_out
        if out is not None:
            write_json(clean_json(s), out)
        C.summary("cohort info", out, images=s["images"], patients=s["patients"], splits=s["split"])

    app.add_typer(cohort, name="cohort")


def _print_frame(console, frame, title: str) -> None:
    """Split summary transposed (one column per split) so that many characteristics still fit the terminal."""
    from rich.table import Table

    t = Table(title=title)
    t.add_column("")
    for name in frame["split"]:
        t.add_column(str(name), justify="right")
    for col in frame.columns[1:]:
        vals = frame[col].tolist()
        t.add_row(str(col), *[f"{v:.3f}" if isinstance(v, float) else str(v) for v in vals])
    console.print(t)
