"""The study report: one self-contained HTML file (figures embedded, every string escaped) telling the whole story —
teacher, student, where each is biased, whether the bias propagated, and what the fairness methods changed."""
from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from cxrdistill.errors import CxrError
from cxrdistill.report.feature_report import side_by_side, verdict_rule
from cxrdistill.report.html import (bullets, esc, figure, markdown_tables, page, pair, paragraph, section, table,
                                    toc)
from cxrdistill.storage.io import atomic_open
from cxrdistill.synth.scenario import scenario_from_dict


def _png(path: Path, caption: str) -> str:
    """Embed an existing PNG file with its one-line reading."""
    if not path.exists():
        return ""
    uri = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img src="{uri}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'


def _f(v, fmt="{:.3f}") -> str:
    return "—" if v is None else fmt.format(v)


def _headline(res: dict) -> str:
    import pandas as pd

    t, s = res.get("teacher", {}), res.get("student", {})
    rows = [
        ("parameters", f"{t.get('params', 0):,}" if t.get("params") else "—",
         f"{s.get('params', 0):,}" if s.get("params") else "—"),
        ("images / s (same resolution, 1 thread each)", _f(t.get("throughput_img_s"), "{:.0f}"),
         _f(s.get("throughput_img_s"), "{:.0f}")),
        ("mean AUC, test, observed labels", _f(t.get("mean_auc")), _f(s.get("mean_auc"))),
        ("mean AUC, test, ground-truth labels", _f(t.get("mean_auc_true_labels")),
         _f(s.get("mean_auc_true_labels"))),
    ]
    df = pd.DataFrame(rows, columns=["", "teacher (black box)", "student (ours)"])
    ret, sp = res.get("retention"), res.get("speedup")
    reading = (f"The student keeps {ret:.1%} of the teacher's mean AUC" if ret else "Retention not computed") + \
              (f" and runs {sp:.1f}× faster." if sp else ".")
    return section("Teacher and student at a glance", [table(df)], reading=reading, anchor="headline")


def _cohort(run_dir: Path, res: dict) -> str:
    import pandas as pd

    c = res.get("cohort") or {}
    summ = c.get("summary") or {}
    parts = []
    rows = []
    for attr in ("sex", "race"):
        for g, n in (summ.get(attr) or {}).items():
            rows.append((attr, g, n))
    if rows:
        parts.append(table(pd.DataFrame(rows, columns=["attribute", "group", "images"])))
    labels = summ.get("labels") or {}
    tasks = res.get("tasks") or []
    prev = [(t, labels[t]["pos"], labels[t].get("uncertain"), labels[t]["prevalence"]) for t in tasks if t in labels]
    if prev:
        parts.append(table(pd.DataFrame(prev, columns=["finding", "positive", "uncertain", "prevalence"])))
    planted = c.get("planted")
    if planted:
        parts.append(_planted(planted))
    parts.append(_png(run_dir / "figures" / "synth_preview.png",
                      "Synthetic radiographs with their labels: a look at what the models see."))
    splits = c.get("splits") or {}
    split_txt = " · ".join(f"{k} {v:,}" for k, v in sorted(splits.items(), key=lambda kv: _SPLIT_ORDER.get(kv[0], 9)))
    reading = (f"{summ.get('images', '?')} images of {summ.get('patients', '?')} patients"
               + (f"; split by patient: {split_txt}." if split_txt else "."))
    return section("The cohort", parts, reading=reading, anchor="cohort")


_SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


def _planted(planted: dict) -> str:
    """The synthetic cohort's planted mechanisms as a table (the raw scenario JSON folded underneath)."""
    import pandas as pd

    raw = planted.get("scenario", planted)
    out = []
    try:
        scen = scenario_from_dict(raw)
    except CxrError:
        scen = None
    if scen is not None:
        out.append(f"<p><b>Planted bias</b> (scenario <code>{esc(scen.name)}</code>, by {esc(scen.attribute)}): "
                   f"{esc(scen.description)}</p>")
        out.append(table(pd.DataFrame(scen.mechanisms())))
    out.append("<details><summary>The scenario as recorded (scenario.json)</summary><pre>"
               f"{esc(json.dumps(raw, indent=1)[:6000])}</pre></details>")
    return "".join(out)


def _performance(run_dir: Path, res: dict) -> str:
    from cxrdistill.report.plots import bar_compare

    t, s = res.get("teacher", {}), res.get("student", {})
    tasks = [k for k in (t.get("auc") or {})]
    if not tasks:
        return ""
    vals = {k: {"teacher": t["auc"].get(k), "student": (s.get("auc") or {}).get(k)} for k in tasks}
    cis = {k: {"teacher": (t.get("auc_ci") or {}).get(k), "student": (s.get("auc_ci") or {}).get(k)} for k in tasks}
    ft = res.get("student_finetuned") or {}
    if ft.get("auc"):
        for k in tasks:
            vals[k]["student fine-tuned"] = ft["auc"].get(k)
            cis[k]["student fine-tuned"] = (ft.get("auc_ci") or {}).get(k)
    fig = bar_compare(vals, "test AUC (95% bootstrap CI)", "Per-finding AUC", ref=0.5, cis=cis,
                      labels=MODEL_LABELS)
    worst = min(tasks, key=lambda k: (vals[k]["student"] or 0) - (vals[k]["teacher"] or 0))
    reading = (f"Largest loss from distillation: {worst} ({_f(vals[worst]['teacher'])} → "
               f"{_f(vals[worst]['student'])}).")
    import pandas as pd

    rows = [(k, _f(t["auc"].get(k)), _ci((t.get("auc_ci") or {}).get(k)), _f((s.get("auc") or {}).get(k)),
             _ci((s.get("auc_ci") or {}).get(k))) for k in tasks]
    tab = table(pd.DataFrame(rows, columns=["finding", "teacher AUC", "95% CI", "student AUC", "95% CI"]))
    how = ("Teacher and student: a linear probe on each model's frozen embeddings"
           + ("; the fine-tuned student: the whole network trained end to end" if ft.get("auc") else "")
           + ". Test split; bars show 95% bootstrap CIs; dashed line: chance.")
    return section("Disease detection: teacher vs student", [figure(fig, reading), tab], reading=how,
                   anchor="performance")


MODEL_LABELS = {"teacher": "teacher (linear probe on its embeddings)",
                "student": "student (linear probe on its embeddings)",
                "student fine-tuned": "student fine-tuned (end to end)"}


def _ci(ci) -> str:
    if not ci or ci[0] is None:
        return "—"
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _subgroups(run_dir: Path, res: dict) -> str:
    import pandas as pd

    from cxrdistill.report.plots import roc_by_group, subgroup_forest

    parts = []
    models = {}
    for who in ("teacher", "student"):
        p = run_dir / "audit" / who / "audit_by_group.parquet"
        if p.exists():
            d = pd.read_parquet(p)
            if "labels" in d.columns:
                d = d[d["labels"] == "observed"]
            models[who] = d[~d["group"].isin(["(overall)", "(summary)"])]
    if not models:
        return ""
    for metric, what in (("auc", "AUC"), ("tpr", "TPR at the global threshold"), ("fpr", "FPR at the threshold")):
        if any((d["metric"] == metric).any() for d in models.values()):
            fig = subgroup_forest(None, metric, models, f"Subgroup {what}, teacher vs student")
            parts.append(figure(fig, f"Subgroup {what} with 95% bootstrap CIs: non-overlapping bars of one colour "
                                     f"mark groups the model serves unequally."))
    rows = []
    for who in ("teacher", "student"):
        for attr, per in (res.get(who, {}).get("audit") or {}).items():
            for task, v in per.items():
                rows.append((who, attr, task, v.get("auc_gap"), v.get("worst_group_auc"), v.get("es_auc")))
    if rows:
        parts.append(table(pd.DataFrame(rows, columns=["model", "attribute", "task", "AUC gap", "worst-group AUC",
                                                       "ES-AUC"])))
    attr = res.get("fairness_attribute") or (res.get("attributes") or ["sex"])[0]
    task = _widest_gap(res, attr) or (res.get("tasks") or [None])[0]
    rocs = []
    for who in ("teacher", "student"):
        pp = _pred_path(run_dir, who)
        if pp and task:
            preds = pd.read_parquet(pp)
            if attr in preds.columns and f"p_{task}" in preds.columns:
                rocs.append(figure(roc_by_group(preds, task, attr, f"{who}: {task} by {attr}"),
                                   f"ROC curves of the {who} per {attr} group for {task} (the teacher's widest "
                                   f"{attr} gap): a curve below the others is a group detected less well at every "
                                   "threshold."))
    parts.append(pair(rocs))
    return section("Where is each model biased? Subgroup performance", parts,
                   reading="One global threshold at 20% overall FPR (Glocker et al. 2023); groups compared with "
                           "DeLong tests, FDR-controlled.", anchor="subgroups")


def _gaps(res: dict, who: str = "teacher") -> list[tuple[float, str, str]]:
    """(AUC gap, attribute, task) of a model's audit, widest first."""
    out = []
    for attr, per in ((res.get(who) or {}).get("audit") or {}).items():
        for task, v in per.items():
            if v.get("auc_gap") is not None:
                out.append((float(v["auc_gap"]), attr, task))
    return sorted(out, reverse=True)


def _widest_gap(res: dict, attr: str) -> str | None:
    return next((task for _, a, task in _gaps(res) if a == attr), None)


def _pred_path(run_dir: Path, who: str) -> Path | None:
    p = run_dir / "probe" / who / "predictions" / "test.parquet"
    return p if p.exists() else None


def _features(run_dir: Path, res: dict) -> str:
    parts = []
    figs: dict[str, dict[str, Path]] = {}
    for who in ("teacher", "student"):
        ft = res.get(who, {}).get("feature_tests") or {}
        if ft.get("n_tests"):
            parts.append(paragraph(f"{who}: {ft.get('n_significant')} of {ft.get('n_tests')} KS tests significant "
                                   f"after correction; bias score {_f(ft.get('bias_score'))}."))
        for png in sorted((run_dir / "audit" / who).glob("features_*.png")):
            figs.setdefault(png.stem.removeprefix("features_"), {})[who] = png
    order = sorted(figs, key=lambda k: (k != "ks_heatmap", k.startswith("tsne"), k == "pca_variance", k))
    for kind in order:  # the same figure of teacher and student side by side
        parts.append(pair(_png(figs[kind][w], f"{w} — {_feature_caption(kind)}") for w in ("teacher", "student")
                          if w in figs[kind]))
    if not parts:
        return ""
    return section("Feature space: do the embeddings differ by group?", parts,
                   reading="PCA modes of the test embeddings, two-sample KS tests between groups (BY-corrected), "
                           "t-SNE, and the variance-weighted bias score (the share of embedding variance in modes "
                           "that differ between groups).", anchor="features")


def _feature_caption(kind: str) -> str:
    """The one-line reading of a feature-audit figure, from its file name (ks_heatmap, pca12_sex, tsne_race …)."""
    import re

    if kind == "ks_heatmap":
        return ("−log10 BY-adjusted p of the KS test per PCA mode and group pair (stars: significant): dark "
                "cells are modes along which the groups' embeddings differ.")
    if kind == "pca_variance":
        return "variance explained per PCA mode: the bias score weights the significant modes by these fractions."
    m = re.fullmatch(r"pca(\d)(\d)_(.+)", kind)
    if m:
        return (f"PCA modes {m[1]} and {m[2]} coloured by {m[3]}, with marginal densities: marginals that separate "
                f"mean the embedding encodes {m[3]} along that mode.")
    m = re.fullmatch(r"tsne_(.+)", kind)
    if m:
        return (f"t-SNE of the test embeddings coloured by {m[1]}: regions of one colour mean {m[1]} can be read "
                f"from the embedding.")
    return kind.replace("_", " ")


def _probes(run_dir: Path, res: dict) -> str:
    from cxrdistill.report.plots import bar_compare

    vals: dict[str, dict[str, float]] = {}
    cis: dict[str, dict[str, tuple]] = {}
    for who in ("teacher", "student"):
        pj = run_dir / "audit" / who / "probes.json"
        full = json.loads(pj.read_text(encoding="utf-8")) if pj.exists() else {}
        for attr, auc in (res.get(who, {}).get("attribute_probes") or {}).items():
            if auc is not None:
                vals.setdefault(attr, {})[who] = auc
                cis.setdefault(attr, {})[who] = ((full.get(attr) or {}).get("auc_ci") if isinstance(full, dict)
                                                 else None)
    if not vals:
        return ""
    fig = bar_compare(vals, "attribute probe AUC, cross-validated (95% CI)",
                      "How much protected information the embeddings hold", ref=0.5, cis=cis, ylim=(0.0, 1.0))
    reading = "; ".join(f"{a}: teacher {_f(v.get('teacher'))} {_ci(cis[a].get('teacher'))}, student "
                        f"{_f(v.get('student'))} {_ci(cis[a].get('student'))}" for a, v in vals.items())
    return section("Attribute probes", [figure(fig, "Bars: 95% bootstrap CIs; dashed line: chance. " + reading)],
                   reading="Logistic regression from frozen embeddings to each attribute, patient-grouped CV.",
                   anchor="probes")


_VERDICT_WORDS = ("reduced", "amplified", "inherited", "inconclusive")
_HEADLINE_GAPS = ["auc_gap", "tpr_gap", "fpr_gap", "n_significant", "bias_score", "probe_auc"]


def _compare_doc(run_dir: Path) -> dict:
    p = run_dir / "audit" / "compare" / "compare.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}


def _propagation(run_dir: Path, res: dict) -> str:
    import pandas as pd

    p = run_dir / "audit" / "compare" / "compare.parquet"
    if not p.exists():
        return ""
    d = pd.read_parquet(p)
    models = list(dict.fromkeys(d["model"]))
    ref = str(d["reference"].iloc[0]) if "reference" in d.columns and len(d) else models[0]
    tables = []
    order = {m: i for i, m in enumerate(_HEADLINE_GAPS)}
    for m in models[1:]:  # one table per model against the reference: narrow enough to read
        wide = side_by_side(d, [ref, m], ref, metrics=_HEADLINE_GAPS)
        if wide.empty:
            continue
        wide = wide.sort_values(["metric", "attribute", "task"], key=lambda c: c.map(order) if c.name == "metric"
                                else c, kind="stable").drop(columns=["groups"])
        tables.append(f"<h3>{esc(m)} against {esc(ref)}</h3>" + table(wide, max_rows=200))
    summary = (res.get("propagation") or {})
    counts = "; ".join(f"{m}: " + ", ".join(f"{v} {k}" for k, v in c.items() if k in _VERDICT_WORDS)
                       for m, c in summary.items()) or "no comparison"
    doc = _compare_doc(run_dir)
    rule = verdict_rule(doc, ref) if doc.get("alpha") is not None else ""
    parts = [_png(run_dir / "audit" / "compare" / "compare_gaps.png",
                  "The bias quantities that changed most between the teacher and each student (95% CIs; further "
                  "right = more bias); the headline ones are in the tables below, all of them in "
                  "audit/compare/report.html."),
             *tables,
             paragraph(f"Headline gaps only (AUC/TPR/FPR gaps per finding, KS tests, bias score, attribute probes); "
                       f"every compared quantity, pairwise differences included, is in "
                       f"audit/compare/report.html and compare.parquet.", cls="muted")]
    return section("Did the student inherit the teacher's bias?", parts,
                   reading=f"Verdicts over every tested quantity — {counts}. {rule}", anchor="propagation")


def _inheritance_sentence(res: dict, prop: dict, run_dir: Path | None) -> str:
    """The findings line on inheritance: the four counts, the margin, and what the data could have detected."""
    doc = _compare_doc(run_dir) if run_dir is not None else {}
    margin = doc.get("margin", 0.02)
    n = {k: int(prop.get(k) or 0) for k in ("reduced", "amplified", "inherited", "inconclusive")}
    text = (f"Inheritance, student against teacher over {sum(n.values())} tested bias quantities: {n['reduced']} "
            f"reduced, {n['amplified']} amplified (significant changes after correction), {n['inherited']} inherited "
            f"(equivalent within ± {margin:g}), {n['inconclusive']} inconclusive (the data cannot tell)")
    mdc = None
    if run_dir is not None and (run_dir / "audit" / "compare" / "compare.parquet").exists():
        import pandas as pd

        d = pd.read_parquet(run_dir / "audit" / "compare" / "compare.parquet")
        if "mdc" in d.columns:
            sel = d[(d["model"] == "student") & (d["metric"] == "auc_gap") & d["mdc"].notna()]
            mdc = float(sel["mdc"].median()) if len(sel) else None
    if mdc is not None:
        text += f"; with this test set an AUC-gap change had to exceed about {mdc:.3f} to be detected"
    return text + "."


def _fairness(run_dir: Path, res: dict) -> str:
    import pandas as pd

    fair = res.get("fairness")
    if not fair:
        return ""
    rows = [(m, v.get("auc"), v.get("worst_group_auc"), v.get("auc_gap"), v.get("es_auc")) for m, v in fair.items()]
    df = pd.DataFrame(rows, columns=["method", "AUC", "worst-group AUC", "AUC gap", "ES-AUC"])
    best = df.sort_values("AUC gap").iloc[0]["method"] if len(df) else None
    parts = [table(df)]
    md = run_dir / "fairness" / "fair_table.md"
    parts.append(_png(run_dir / "fairness" / "pareto.png",
                      "Overall AUC against AUC gap per method (further right and lower is better): the Pareto front."))
    if md.exists():
        parts.append("<details><summary>Full table: per-group AUC, mean ± std over seeds, paired tests against "
                     f"ERM</summary>{markdown_tables(md.read_text(encoding='utf-8'))}</details>")
    return section(f"Fair training on the teacher's embeddings (attribute: {res.get('fairness_attribute')})", parts,
                   reading=f"Smallest AUC gap: {best}. Heads trained on the frozen API embeddings — the most a user "
                           f"of a black-box model can do.", anchor="fairness")


def _fair_distill(run_dir: Path, res: dict) -> str:
    fd = res.get("fair_distill")
    if not fd:
        return ""
    html_path = run_dir / "fair_distill" / "section.html"
    if html_path.exists():
        return html_path.read_text(encoding="utf-8")
    return section("Can the student be fairer than its teacher?",
                   ["<details><summary>The results as recorded (JSON)</summary>"
                    f"<pre>{esc(json.dumps(fd, indent=1)[:6000])}</pre></details>"])


def _pretraining(run_dir: Path, res: dict) -> str:
    import pandas as pd

    rows = res.get("pretraining")
    if not rows:
        return ""
    md = run_dir / "pretraining" / "table.md"
    parts = [markdown_tables(md.read_text(encoding="utf-8")) if md.exists() else table(pd.DataFrame(rows))]
    for png in sorted((run_dir / "pretraining").glob("*.png")):
        if png.stem == "auc":
            caption = ("Mean test AUC per initialisation with 95% bootstrap CIs: intervals clear of random init's are "
                       "initialisations that help.")
        else:
            caption = (f"{png.stem.replace('_', ' ')}: train (solid) and validation (dashed) loss per "
                       f"initialisation — curves that diverge mean overfitting.")
        parts.append(_png(png, caption))
    means = [r for r in rows if r.get("task") == "mean" and r.get("labels", "observed") == "observed"]
    best = max(means, key=lambda r: r.get("auc") or 0, default=None)
    lead = (f"Best: {best.get('init_label', best.get('init'))} (mean AUC {_f(best.get('auc'))}). "
            if best else "")
    return section("Which initialisation helps?", parts,
                   reading=lead + "Random vs ImageNet (efficientnet-lite0 weights) vs in-domain supervised vs "
                           "Barlow Twins, fine-tuned on this cohort. Synthetic images are not real ones: read the "
                           "ranking, not the absolute AUCs.", anchor="pretraining")


def findings(res: dict, run_dir: str | Path | None = None) -> list[str]:
    """The study in a few sentences, one per question, each from the numbers of its section."""
    run_dir = Path(run_dir) if run_dir is not None else None
    out = []
    t, s = res.get("teacher") or {}, res.get("student") or {}
    if res.get("retention") is not None:
        sp = res.get("speedup")
        out.append(f"Distillation: the student ({s.get('backbone') or 'student'}, {_params(s.get('params'))}) keeps "
                   f"{res['retention']:.1%} of the teacher's mean AUC ({_f(t.get('mean_auc'))} → "
                   f"{_f(s.get('mean_auc'))})" + (f" and runs {sp:.1f}× faster." if sp else "."))
    gaps = _gaps(res)
    if gaps:
        g, attr, task = gaps[0]
        sg = ((s.get("audit") or {}).get(attr) or {}).get(task, {}).get("auc_gap")
        out.append(f"Teacher's bias: its widest AUC gap is by {attr} on {task} ({g:.3f}; worst group AUC "
                   f"{_f(((t.get('audit') or {}).get(attr) or {}).get(task, {}).get('worst_group_auc'))}); the "
                   f"student's gap there is {_f(sg)}.")
    prop = (res.get("propagation") or {}).get("student")
    if prop:
        out.append(_inheritance_sentence(res, prop, run_dir))
    fair = res.get("fairness") or {}
    if fair:
        best = min(fair, key=lambda m: fair[m].get("auc_gap") if fair[m].get("auc_gap") is not None else 9)
        erm = fair.get("erm") or {}
        p = (((fair[best].get("vs_erm") or {}).get("auc_gap")) or {}).get("p")
        out.append(f"Fair training on the API embeddings ({res.get('fairness_attribute')}): smallest AUC gap "
                   f"{best} ({_f(fair[best].get('auc_gap'))} at AUC {_f(fair[best].get('auc'))})"
                   + (f" vs ERM {_f(erm.get('auc_gap'))} at {_f(erm.get('auc'))}"
                      + (f" (paired t-test over seeds p = {p:.2g})." if p is not None else ".")
                      if erm and best != "erm" else " — no method narrowed ERM's gap."))
    fd = (res.get("fair_distill") or {}).get("goal_lines") or []
    if fd:
        out.append("Fair distillation: " + fd[0])
    means = [r for r in (res.get("pretraining") or []) if r.get("task") == "mean"
             and r.get("labels", "observed") == "observed"]
    if means:
        b = max(means, key=lambda r: r.get("auc") or 0)
        out.append(f"Pretraining: best initialisation {b.get('init_label', b.get('init'))} (mean AUC "
                   f"{_f(b.get('auc'))}) of {len(means)}.")
    return out


def _params(n) -> str:
    return f"{n / 1e6:.2f} M parameters" if n else "? parameters"


_TOC = [("headline", "At a glance"), ("cohort", "Cohort"), ("performance", "Disease detection"),
        ("subgroups", "Subgroups"), ("features", "Feature space"), ("probes", "Attribute probes"),
        ("propagation", "Inheritance"), ("fairness", "Fair training"), ("fairkd", "Fair distillation"),
        ("pretraining", "Pretraining")]


def render_report(run_dir: str | Path, res: dict, cfg: Any = None) -> str:
    run_dir = Path(run_dir)
    sections = [_headline(res), _cohort(run_dir, res), _performance(run_dir, res), _subgroups(run_dir, res),
                _features(run_dir, res), _probes(run_dir, res), _propagation(run_dir, res), _fairness(run_dir, res),
                _fair_distill(run_dir, res), _pretraining(run_dir, res)]
    sections = [x for x in sections if x]
    body = "".join(sections)
    nav = toc((a, t) for a, t in _TOC if f'id="{a}"' in body)
    lines = findings(res, run_dir)
    summary = section("Findings", [bullets(lines, "findings")], anchor="findings") if lines else ""
    secs = res.get("stage_seconds") or {}
    timing = paragraph("Stage times (s): " + ", ".join(f"{k} {v}" for k, v in secs.items() if v is not None)
                       + (f"; wall time of this run {res['wall_seconds_this_run']} s"
                          if res.get("wall_seconds_this_run") is not None else ""), cls="muted")
    return page(f"cxrdistill study: {res.get('name', '')}", [nav, summary, *sections, timing],
                subtitle="Distilling a black-box chest X-ray foundation model, and auditing both for bias.")


def write_report(run_dir: str | Path, res: dict, cfg: Any = None) -> Path:
    out = Path(run_dir) / "report.html"
    html = render_report(run_dir, res, cfg)
    with atomic_open(out, "w", encoding="utf-8") as fh:
        fh.write(html)
    return out
