"""``cxrdistill audit``: the performance audit of a predictions table (Glocker et al. 2023)."""
from typing import List, Optional

import typer

from cxrdistill.commands import _common as C


def audit(
    predictions: str = typer.Argument(..., help="Predictions table (CSV or Parquet): image_id, attributes, y_T, p_T."),
    attribute: List[str] = C.attribute_option(),
    tasks: Optional[List[str]] = typer.Option(None, "--tasks", help="Tasks T (need y_T and p_T), comma-separated or "
                                              "repeated; default all."),
    task: Optional[List[str]] = C.hidden("--task", "-t"),
    target_fpr: float = typer.Option(0.2, help="Overall FPR of the one global threshold."),
    n_boot: int = C.n_boot_option(),
    alpha: float = typer.Option(0.05, help="CI level 1 - alpha and significance level."),
    correction: str = typer.Option("by", help="Multiple-testing correction: by|bh|bonferroni|none."),
    seed: int = C.seed_option(help="Seed of the bootstrap and the resampling."),
    resample: str = typer.Option("none", help="none|balanced (Glocker et al.'s test-set resampling)."),
    resample_by: Optional[str] = typer.Option(None, help="Attribute to balance (default: the first --attribute)."),
    age_bins: Optional[str] = C.age_bins_option(),
    labels: str = typer.Option("observed", help="observed (y_T) | true (ytrue_T) | both."),
    min_n: int = typer.Option(20, help="Groups with fewer labelled rows get null metrics."),
    on_error: str = C.on_error_option(help="A labelled row without a score: fail, or skip it (left out, counted)."),
    drop_missing_scores: bool = C.hidden("--drop-missing-scores", default=False),
    out: str = C.out_option(),
) -> None:
    """Audit subgroup performance: AUC, TPR/FPR at one global threshold, gaps, DeLong and KS tests.

    Writes OUT/audit.json, OUT/audit_by_group.parquet, OUT/audit_comparisons.parquet and OUT/report.html.
    """
    from pathlib import Path

    from cxrdistill.evaluation.audit import run_audit
    from cxrdistill.report.audit_html import write_audit
    from cxrdistill.evaluation.predictions import read_predictions
    from cxrdistill.evaluation.resample import parse_bins

    if age_bins is None and "age" in attribute:
        age_bins = C.AGE_BINS
    bins = parse_bins(age_bins) if age_bins else None
    drop_missing_scores = C.on_error_mode(on_error, skip_alias=drop_missing_scores) == "skip"
    df = read_predictions(predictions)
    tasks = C.csv_list([*(tasks or []), *(task or [])]) or None
    res = run_audit(df, attribute, tasks=tasks, target_fpr=target_fpr, n_boot=n_boot, alpha=alpha,
                    correction=correction, seed=seed, resample=resample, min_n=min_n, labels=labels, age_bins=bins,
                    resample_by=resample_by, drop_missing_scores=drop_missing_scores, path=predictions)
    doc = write_audit(res, out, title=f"Performance audit — {Path(predictions).name}")
    for key in ("tasks", "tasks_true"):
        for t, r in (doc.get(key) or {}).items():
            ov = r["overall"]
            gaps = ", ".join(f"{a} gap {v['auc_gap']:.3f}" for a, v in r["attributes"].items()
                             if v.get("auc_gap") is not None)
            auc = "n/a" if ov.get("auc") is None else f"{ov['auc']:.3f}"
            typer.echo(f"{t}{' (true)' if key == 'tasks_true' else ''}: AUC {auc}" + (f"; {gaps}" if gaps else ""))
    typer.echo(f"{doc['n_significant']} of {doc['n_tests']} tests significant ({correction}); wrote {out}/")
    C.summary("audit", out, n_tests=doc["n_tests"], n_significant=doc["n_significant"])


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)
