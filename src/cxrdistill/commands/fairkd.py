"""``cxrdistill fair distill-study``: can a student distilled from a biased black-box teacher be fairer than it?
Thin: parse options, call :func:`cxrdistill.fairkd.experiment.run_study`.

Settings: the defaults, then ``--config FILE`` (YAML, the keys of ``FairKDStudyConfig``), then options, then ``--set``
overrides: ``teacher.epochs=4``, ``student.backbone=resnet10t`` (teacher / student fields), ``fairdi.lam=0.9`` (an
objective's parameter), ``probe_l2=0.1`` (a top-level key).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cxrdistill.commands import _common as C


def build_settings(config: Optional[Path], options: dict, sets: Optional[List[str]]) -> dict:
    """YAML < options (dotted keys; None or [] not given) < --set, as a plain dict (the experiment's pydantic model
    adds the defaults and validates it)."""
    from cxrdistill.storage.config import layers

    def route(key: str) -> str:  # teacher.epochs / student.lr → their section; fairdi.lam → an objective's parameter
        head, _, rest = key.partition(".")
        return key if not rest or head in ("teacher", "student") else f"method_params.{key}"

    return layers(path=config, options={k: None if v == [] else v for k, v in options.items()}, sets=sets,
                  example="teacher.epochs=4", route=route)


def fair_distill_study(
    scenario: Optional[List[str]] = typer.Option(None, "--scenario", help="synthetic scenario (repeatable) "
                                                 "[acquisition, shortcut, manifestation, mixed, underdiagnosis]"),
    seeds: Optional[str] = C.seeds_option(help="Student seeds, comma-separated, e.g. 0,1,2 [0,1,2]"),
    n: Optional[int] = typer.Option(None, "--n", min=60, help="images per scenario cohort [1500]"),
    size: Optional[int] = typer.Option(None, "--size", min=16, help="image side in px [48]"),
    attribute: Optional[List[str]] = C.attribute_option(False, help="sex | race | auto (the scenario's) [auto]"),
    method: Optional[List[str]] = typer.Option(None, "--method", help="fair objective(s) besides plain KD "
                                               "[balanced, adversarial, fairdi, mmd]"),
    tasks: Optional[List[str]] = typer.Option(None, "--tasks", help="findings to score (comma-separated)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="student epochs [8]"),
    teacher_epochs: Optional[int] = typer.Option(None, "--teacher-epochs", min=1, help="teacher epochs [6]"),
    student: Optional[str] = typer.Option(None, "--student",
                                          help="student backbone (timm name) [mobilenetv3_small_050]"),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="teacher backbone (timm name) [resnet18]"),
    out: Path = C.out_option(help="Output directory (cached: a re-run reuses finished models)."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML with the study's settings"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="override: teacher.epochs=4, fairdi.lam=0.9, "
                                             "probe_l2=0.1 (repeatable)"),
    jobs: Optional[int] = typer.Option(None, "--jobs", min=1, help="scenarios run in parallel processes [1]"),
    device: Optional[str] = C.device_option(None, help=C.DEVICE_HELP + " [cpu]"),
    fresh: bool = typer.Option(False, "--fresh", help="Retrain the teachers and students instead of reusing the "
                               "finished ones in OUT (the rendered cohorts are kept)."),
    quiet: bool = C.quiet_option(),
) -> None:
    """Teacher vs plain-KD vs fairness-aware students on synthetic planted-bias scenarios: AUC, worst-group AUC,
    gap, ES-AUC, feature-space KS tests and attribute probes against observed and true labels (writes
    OUT/fairkd_table.md, fairkd_results.parquet, fairkd.json, fairkd_tradeoff.png, report.html)."""
    import sys

    from cxrdistill.fairkd.experiment import make_config, run_study

    data = build_settings(config, {
        "scenarios": C.csv_list(scenario), "seeds": C.parse_seeds(seeds), "n": n, "size": size,
        "attribute": C.single_attribute(attribute, "fair distill-study"),
        "methods": C.csv_list(method), "tasks": C.csv_list(tasks), "jobs": jobs, "device": device,
        "student.epochs": epochs, "student.backbone": student, "teacher.epochs": teacher_epochs,
        "teacher.backbone": teacher}, set_)
    cfg = make_config(data, path=config)

    def log(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    if fresh:
        import shutil

        for name in ("teachers", "runs"):
            shutil.rmtree(out / name, ignore_errors=True)
    run_study(config=cfg, out=out, log=log)
    typer.echo((out / "fairkd_table.md").read_text(encoding="utf-8"))
    C.summary("fair distill-study", out, scenarios=cfg.scenarios, methods=cfg.methods, seeds=cfg.seeds)


def register(app: typer.Typer) -> None:
    C.family(app, "fair").command("distill-study")(fair_distill_study)
    app.command("fair-distill-study", hidden=True, help="Old spelling of 'fair distill-study'.")(fair_distill_study)
