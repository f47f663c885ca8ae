"""``cxrdistill study`` (a whole study from one YAML file) and ``cxrdistill demo`` (the embedded default)."""
from __future__ import annotations

from typing import List, Optional

import typer

from cxrdistill.commands import _common as C

_FRESH = typer.Option(False, "--fresh", help="Re-run every stage instead of reusing the cached ones.")
_QUIET = C.quiet_option()


def _overrides(items: Optional[List[str]], seed: Optional[int] = None) -> dict:
    """``--seed`` < ``--set KEY=VALUE``, as dotted keys for the study's configuration."""
    from cxrdistill.storage.config import parse_set

    out = {} if seed is None else {"seed": seed}
    out.update(parse_set(it, "distill.train.epochs=3") for it in items or [])
    return out


def _force(force: Optional[List[str]], fresh: bool) -> Optional[List[str]]:
    if not fresh:
        return force
    from cxrdistill.study.stages import STAGES

    return [st.name for st in STAGES]


def _log(quiet: bool):
    return (lambda s: None) if quiet else None


def study(
    config: str = typer.Argument(..., help="study YAML (see docs/study.md, 'Study configuration')"),
    out: str = C.out_option(help="Run directory, e.g. runs/NAME (re-runs reuse cached stages)."),
    only: Optional[List[str]] = typer.Option(None, "--only", help="re-run just this stage (repeatable)"),
    force: Optional[List[str]] = typer.Option(None, "--force", help="re-run this stage even if cached"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="override a config key: --set size=96"),
    jobs: Optional[int] = typer.Option(None, "--jobs", min=1, help="stages run at once (default: the config's jobs)"),
    seed: Optional[int] = C.seed_option(None, help="The study's seed (the config's seed key) [0]."),
    fresh: bool = _FRESH,
    quiet: bool = _QUIET,
) -> None:
    """Run a whole study: cohort, split, teacher, embeddings, distillation, probes, audits, fairness, pretraining,
    report. Each stage is cached by a hash of its inputs and config."""
    from cxrdistill.study.run import run_study

    res = run_study(config, out, overrides=_overrides(set_, seed), only=only, force=_force(force, fresh), jobs=jobs,
                    log=_log(quiet))
    _print(res, out, "study")


def demo(
    out: str = typer.Option("runs/demo", "--out", "-o", help="Run directory."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="override a config key of the demo"),
    force: Optional[List[str]] = typer.Option(None, "--force", help="re-run this stage even if cached"),
    jobs: Optional[int] = typer.Option(None, "--jobs", min=1, help="stages run at once (the demo: 2)"),
    fresh: bool = _FRESH,
    quiet: bool = _QUIET,
) -> None:
    """The whole study on the embedded default: a synthetic cohort with planted bias, on 2 CPU cores."""
    from importlib.resources import files

    from cxrdistill.study.run import run_study

    cfg = files("cxrdistill") / "configs" / "demo.yaml"
    res = run_study(str(cfg), out, overrides=_overrides(set_), force=_force(force, fresh), jobs=jobs, log=_log(quiet))
    _print(res, out, "demo")


def _print(res: dict, out: str, command: str) -> None:
    from rich.console import Console
    from rich.table import Table

    def f(v, fmt="{:.3f}"):
        return "—" if v is None else fmt.format(v)

    t = Table(title="cxrdistill study")
    t.add_column("")
    t.add_column("teacher")
    t.add_column("student")
    te, st = res.get("teacher", {}), res.get("student", {})
    t.add_row("mean AUC", f(te.get("mean_auc")), f(st.get("mean_auc")))
    t.add_row("params", f(te.get("params"), "{:,}"), f(st.get("params"), "{:,}"))
    t.add_row("images/s", f(te.get("throughput_img_s"), "{:.0f}"), f(st.get("throughput_img_s"), "{:.0f}"))
    c = Console()
    c.print(t)
    c.print(f"retention {f(res.get('retention'))}, speed-up {f(res.get('speedup'), '{:.1f}')}×")
    for m, v in (res.get("fairness") or {}).items():
        c.print(f"  {m:10s} AUC {f(v.get('auc'))}  worst-group {f(v.get('worst_group_auc'))}  gap "
                f"{f(v.get('auc_gap'))}")
    c.print(f"report: {out}/report.html   results: {out}/results.json")
    C.summary(command, out, report=f"{out}/report.html", results=f"{out}/results.json",
              retention=res.get("retention"), speedup=res.get("speedup"))


def register(app: typer.Typer) -> None:
    app.command("study")(study)
    app.command("demo")(demo)
