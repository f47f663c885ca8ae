"""Run a whole study: stages (cached), then ``results.json`` and ``report.html`` from their summaries."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

from cxrdistill.errors import CxrError
from cxrdistill.report import study_report
from cxrdistill.storage.io import atomic_open, clean_json, write_json
from cxrdistill.study.config import StudyConfig, load_config
from cxrdistill.study.engine import StudyContext, file_logger, run_stages
from cxrdistill.study.stages import STAGES


def run_study(config: str | Path | None, out: str | Path, *, overrides: dict | None = None,
              only: list[str] | None = None, force: list[str] | None = None,
              log: Callable[[str], None] | None = None, jobs: int | None = None) -> dict[str, Any]:
    """Run (or resume) the study in ``out``; returns results.json's content. ``jobs``: stages run at once
    (default: the config's ``jobs``)."""
    import yaml

    cfg = load_config(config, overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    logfile = out / "log.txt"
    _log = file_logger(logfile, echo=log or print)

    with atomic_open(out / "config.yaml") as fh:
        yaml.safe_dump(json.loads(cfg.model_dump_json()), fh, sort_keys=False)
    ctx = StudyContext(out=out, cfg=cfg, log=_log, logfile=logfile)
    t0 = time.perf_counter()
    run_stages(ctx, STAGES, only=only, force=force, jobs=cfg.jobs if jobs is None else jobs)
    results = build_results(ctx)
    results["wall_seconds_this_run"] = round(time.perf_counter() - t0, 1)
    write_json(clean_json(results), out / "results.json")

    try:
        study_report.write_report(out, results, cfg)
    except Exception as e:  # a report bug must not hide the finished stages behind a traceback
        import traceback

        err = out / "report.error.txt"
        err.write_text(traceback.format_exc(), encoding="utf-8")
        raise CxrError(f"writing the report failed: {type(e).__name__}: {e} (traceback in {err}); every stage's "
                       f"results and {out / 'results.json'} are kept — re-run the same command once fixed") from None
    _log(f"results: {out / 'results.json'}; report: {out / 'report.html'}")
    return results


def _mean_auc_block(probe: dict | None) -> dict[str, Any]:
    test = ((probe or {}).get("splits") or {}).get("test") or {}
    obs = test.get("observed") or {}
    per = {t: v.get("auc") for t, v in (obs.get("per_task") or {}).items()}
    ci = {t: v.get("ci") for t, v in (obs.get("per_task") or {}).items()}
    out = {"auc": per, "auc_ci": ci, "mean_auc": obs.get("mean_auc")}
    if test.get("true"):
        out["mean_auc_true_labels"] = test["true"].get("mean_auc")
        out["auc_true_labels"] = {t: v.get("auc") for t, v in (test["true"].get("per_task") or {}).items()}
    return out


def _audit_summary(run_dir: Path, who: str) -> dict[str, Any]:
    p = run_dir / "audit" / who / "audit.json"
    if not p.exists():
        return {}
    doc = json.loads(p.read_text())
    out: dict[str, Any] = {}
    for task, r in (doc.get("tasks") or {}).items():
        for attr, a in (r.get("attributes") or {}).items():
            out.setdefault(attr, {})[task] = {"auc_gap": a.get("auc_gap"), "worst_group_auc": a.get("worst_group_auc"),
                                              "es_auc": a.get("es_auc")}
    return out


def build_results(ctx: StudyContext) -> dict[str, Any]:
    """The headline numbers, from the stage summaries (see docs/study.md, 'results.json')."""
    r = ctx.results
    cfg: StudyConfig = ctx.cfg
    res: dict[str, Any] = {"name": cfg.name, "size": cfg.size, "tasks": cfg.tasks, "attributes": cfg.attributes,
                           "stage_seconds": {k: v.get("_seconds") for k, v in r.items()},
                           "stage_cpu_seconds": {k: v.get("_cpu_seconds") for k, v in r.items()}}
    if "cohort" in r:
        res["cohort"] = {"summary": r["cohort"].get("summary"), "planted": r["cohort"].get("planted"),
                         "splits": (r.get("split") or {}).get("splits")}
    speed = r.get("speed") or {}
    for who, stage in (("teacher", "probe_teacher"), ("student", "probe_student")):
        block = {**(speed.get(who) or {}), **_mean_auc_block(r.get(stage))}
        block["audit"] = _audit_summary(ctx.out, who)
        aud = ((r.get("audit") or {}).get(who)) or {}
        block["feature_tests"] = {k: aud.get(k) for k in ("n_tests", "n_significant", "bias_score")}
        block["attribute_probes"] = {a: (v or {}).get("auc") for a, v in (aud.get("probes") or {}).items()
                                     if isinstance(v, dict)}
        res[who] = block
    dist = r.get("distill") or {}
    res["student"].update({"backbone": dist.get("backbone"), "kd_loss": dist.get("loss")})
    if "teacher" in r:
        res["teacher"]["spec"] = r["teacher"].get("spec")
        res["teacher"]["pretrain"] = (r["teacher"].get("summary") or {})
    ta, sa = res["teacher"].get("mean_auc"), res["student"].get("mean_auc")
    res["retention"] = sa / ta if ta and sa is not None else None
    res["speedup"] = speed.get("speedup")  # the median ratio of interleaved timings (see the speed stage)
    if speed.get("speedup_rounds"):
        res["speedup_rounds"] = speed["speedup_rounds"]
    if (r.get("distill") or {}).get("pool_images"):
        res["distill_pool"] = {"images": r["distill"]["pool_images"], "train_images": r["distill"]["train_images"]}
    if "finetune" in r:
        res["student_finetuned"] = {**_mean_auc_block(r["finetune"]),
                                    "audit": _audit_summary(ctx.out, "student_finetuned")}
    if "compare" in r:
        res["propagation"] = r["compare"].get("summary")
    if "fairness" in r:
        fj = r["fairness"].get("json") or {}
        res["fairness_attribute"] = r["fairness"].get("attribute")
        res["fairness"] = {m: {k: v.get(k) for k in ("auc", "worst_group_auc", "auc_gap", "es_auc", "psd",
                                                    "auc_std", "auc_gap_std", "worst_group_auc_std", "vs_erm")
                               if k in v}
                           for m, v in (fj.get("methods") or fj).items() if isinstance(v, dict)}
    if "fair_distill" in r:
        res["fair_distill"] = r["fair_distill"]
    if "pretraining" in r:
        res["pretraining"] = r["pretraining"].get("table")
    return res
