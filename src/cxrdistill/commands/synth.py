"""``cxrdistill synth --out DIR``: write a synthetic CheXpert-layout dataset with planted, known bias.

Thin: options are parsed here, the work is in ``cxrdistill.synth``. Only typer and the standard library are
imported at module level.
"""
import os
from pathlib import Path
from typing import Optional

import typer

from cxrdistill.commands import _common as C


def register(app: typer.Typer) -> None:
    @app.command("synth")
    def synth(
        out_arg: Optional[Path] = typer.Argument(None, metavar="OUT", hidden=True, help="Old spelling of --out."),
        out: Optional[Path] = C.out_option(False, help="Output directory (must be empty or new, unless --overwrite)."),
        n: Optional[int] = typer.Option(None, "--n", help="Number of images (default 1000; with --like: the first N "
                                        "rows of the table, default all)."),
        size: int = typer.Option(128, "--size", help="Image side in pixels (16-1024)."),
        seed: int = C.seed_option(help="Random seed; the same seed gives byte-identical files."),
        scenario: Optional[str] = typer.Option(None, "--scenario", help="Named bias scenario (see --list)."),
        config: Optional[Path] = typer.Option(None, "--config", help="Scenario YAML file (instead of --scenario)."),
        preview: Optional[Path] = typer.Option(None, "--preview", help="Also write a contact sheet PNG here."),
        workers: int = typer.Option(min(2, os.cpu_count() or 1), "--workers", help="Processes rendering images."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty OUT."),
        list_scenarios: bool = typer.Option(False, "--list", help="List the named scenarios and exit."),
        like: Optional[Path] = typer.Option(None, "--like", help="Render one image per row of this cohort table "
                                            "(cohort .parquet or CheXpert-style .csv): its labels, demographics, "
                                            "views and ids kept; a rerun resumes."),
    ) -> None:
        """Synthetic chest X-rays with planted bias → OUT/train.csv (CheXpert columns + Race, true_*, synth_*),
        PNG images, lung/heart masks and OUT/scenario.json."""
        from rich.console import Console

        from cxrdistill.errors import CxrError

        console = Console(soft_wrap=True)
        if list_scenarios:
            from cxrdistill.synth.scenario import SCENARIOS

            for name in SCENARIOS.names():
                sc = SCENARIOS.create(name)
                console.print(f"[bold]{name}[/bold] ({sc.attribute}): {sc.description}", highlight=False)
            C.summary("synth", None, scenarios=SCENARIOS.names())
            return
        if out is not None and out_arg is not None and out != out_arg:
            raise CxrError(f"two output directories: --out {out} and {out_arg}; give one (--out)")
        out = out if out is not None else out_arg
        if out is None:
            raise CxrError("missing output directory: cxrdistill synth --out DIR [--n N --size PX --seed S]")
        if scenario is not None and config is not None:
            raise CxrError("give either --scenario or --config, not both")
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        if like is not None:
            if scenario is not None or config is not None or preview is not None:
                raise CxrError("--like renders the table's own rows: --scenario, --config and --preview do not apply")
            from cxrdistill.synth.like import generate_like

            with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                          TimeRemainingColumn(), console=console, transient=True) as bar:
                task = bar.add_task("rendering", total=None)
                csv = generate_like(out, like, size=size, seed=seed, workers=workers, n=n,
                                    overwrite=overwrite,
                                    progress=lambda done, total: bar.update(task, completed=done, total=total))
            console.print(f"wrote {out}: {len(csv)} images like {like} ({csv['synth_patient_index'].nunique()} "
                          "patients)", highlight=False)
            C.summary("synth", out, images=len(csv), size=size, like=str(like))
            return
        n = 1000 if n is None else n

        from cxrdistill.synth.generate import generate

        spec = config if config is not None else (scenario or "none")
        if config is not None and not Path(config).exists():
            raise CxrError(f"{config}: scenario file not found")
        with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=console, transient=True) as bar:
            task = bar.add_task("rendering", total=n)
            csv = generate(out, n=n, size=size, seed=seed, scenario=spec, workers=workers, preview=preview,
                           overwrite=overwrite, progress=lambda done, total: bar.update(task, completed=done))
        n_pat = csv["Path"].str.split("/").str[2].nunique()
        name = Path(str(spec)).name if config is not None else spec
        console.print(f"wrote {out}: {len(csv)} images of {size}x{size} px, {n_pat} patients, scenario {name}"
                      + (f"; preview {preview}" if preview else ""), highlight=False)
        C.summary("synth", out, images=len(csv), patients=int(n_pat), size=size, scenario=str(name))
