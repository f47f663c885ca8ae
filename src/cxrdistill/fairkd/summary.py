"""Summaries and renderings of the fair-distillation measurement: per-seed task means, mean ± std over seeds with the
paired test against plain KD, the goal check, the Markdown/CSV tables, ``fairkd.json``, the retention-vs-gap-reduction
plot and the HTML section "Can the student be fairer than its teacher?" (also used by the study report)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrdistill.errors import InputError
from cxrdistill.fairness.metrics import OVERALL, SUMMARY
from cxrdistill.report import html as H
from cxrdistill.storage.io import atomic_open, atomic_path, clean_json, write_json, write_parquet, write_table

TEACHER = "teacher"
KD = "kd"
LABELS = ("observed", "true")
EMB_METRICS = ("ks_significant", "ks_tests", "attribute_probe_auc")
SECTION_TITLE = "Can the student be fairer than its teacher?"
TEST_NAME = "two-sided paired t-test across seeds against the plain-KD student (scipy.stats.ttest_rel)"
TESTED = ("auc", "worst_group_auc", "auc_gap", "es_auc", "ks_significant", "attribute_probe_auc")
# The goal of fair distillation: keep the teacher's AUC with a smaller gap. How far the attribute probe moved toward
# chance is reported but not part of it: a student that hides the attribute is not fairer for it, and group-aware
# methods (FairDi) need the student to keep the group readable.
GOAL = {"retention": 0.97, "gap_reduction": 0.5}


def labels_in(table: pd.DataFrame) -> list[str]:
    """The label sources a table has rows for, in :data:`LABELS` order (a real cohort has no ``true`` labels)."""
    have = set(table["labels"]) if "labels" in table else set()
    return [lab for lab in LABELS if lab in have]


# ------------------------------------------------------------------------------------------------------- summaries
def per_seed(tidy: pd.DataFrame) -> pd.DataFrame:
    """One row per (scenario, model, eval, labels, seed): means over tasks of the AUC metrics, the embedding
    metrics, and retention / gap reduction / probe-distance reduction against the teacher (probe, same labels)."""
    sc = tidy[tidy["eval"] != "embedding"]
    emb = tidy[tidy["eval"] == "embedding"].pivot_table(index=["scenario", "model", "seed"], columns="metric",
                                                         values="value", aggfunc="first")
    rows = []
    for (scen, attr, model, ev, labels, seed), part in sc.groupby(
            ["scenario", "attribute", "model", "eval", "labels", "seed"], sort=False):
        r: dict[str, Any] = {"scenario": scen, "attribute": attr, "model": model, "eval": ev, "labels": labels,
                             "seed": int(seed)}
        auc = part[(part["metric"] == "auc") & (part["group"] == OVERALL)]["value"]
        r["auc"] = _nanmean(auc)
        for m in ("worst_group_auc", "auc_gap", "es_auc", "psd"):
            r[m] = _nanmean(part[(part["group"] == SUMMARY) & (part["metric"] == m)]["value"])
        key = (scen, model, int(seed))
        for m in EMB_METRICS:
            r[m] = float(emb.loc[key, m]) if key in emb.index and m in emb.columns else np.nan
        rows.append(r)
    ps = pd.DataFrame(rows)
    if ps.empty:
        return ps
    ref = ps[(ps["model"] == TEACHER) & (ps["eval"] == "probe")].set_index(["scenario", "labels", "seed"])
    ret, red, chance = [], [], []
    for r in ps.itertuples(index=False):
        k = (r.scenario, r.labels, r.seed)
        if k not in ref.index:
            ret.append(np.nan), red.append(np.nan), chance.append(np.nan)
            continue
        t = ref.loc[k]
        ret.append(r.auc / t["auc"] if t["auc"] > 0 else np.nan)
        red.append(1.0 - r.auc_gap / t["auc_gap"] if t["auc_gap"] > 0 else np.nan)
        td = abs(t["attribute_probe_auc"] - 0.5)
        chance.append(1.0 - abs(r.attribute_probe_auc - 0.5) / td if td > 0 else np.nan)
    ps["retention"], ps["gap_reduction"], ps["probe_toward_chance"] = ret, red, chance
    return ps


def _nanmean(v) -> float:
    v = np.asarray(v, dtype=float)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


SUMMARY_METRICS = ("auc", "worst_group_auc", "auc_gap", "es_auc", "ks_significant", "attribute_probe_auc",
                   "retention", "gap_reduction", "probe_toward_chance")


def summarize(ps: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds per (scenario, labels, model, eval), with the paired test against plain KD (its probe
    numbers, same seeds) and whether the goal is met."""
    from scipy import stats

    out = []
    base = ps[(ps["model"] == KD) & (ps["eval"] == "probe")].set_index(["scenario", "labels", "seed"])
    for (scen, labels, model, ev), part in ps.groupby(["scenario", "labels", "model", "eval"], sort=False):
        r: dict[str, Any] = {"scenario": scen, "attribute": part["attribute"].iloc[0], "labels": labels,
                             "model": model, "eval": ev, "n_seeds": int(len(part))}
        for m in SUMMARY_METRICS:
            v = part[m].to_numpy(float)
            r[f"{m}_mean"] = float(np.nanmean(v)) if np.isfinite(v).any() else np.nan
            r[f"{m}_std"] = float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else np.nan
        if model != TEACHER and not (model == KD and ev == "probe"):
            for m in TESTED:
                a, b = [], []
                for s, v in zip(part["seed"], part[m]):
                    k = (scen, labels, int(s))
                    if k in base.index:
                        a.append(float(v)), b.append(float(base.loc[k, m]))
                a, b = np.array(a), np.array(b)
                ok = np.isfinite(a) & np.isfinite(b)
                r[f"{m}_delta_vs_kd"] = float(np.mean(a[ok] - b[ok])) if ok.any() else np.nan
                p = np.nan
                if ok.sum() >= 2 and np.ptp(a[ok] - b[ok]) > 0:
                    p = float(stats.ttest_rel(a[ok], b[ok]).pvalue)
                r[f"{m}_p_vs_kd"] = p
        r["goal_met"] = bool(model != TEACHER
                             and r["retention_mean"] >= GOAL["retention"]
                             and r["gap_reduction_mean"] >= GOAL["gap_reduction"])
        out.append(r)
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------------------------------- outputs
COLUMNS = [("auc", "mean AUC"), ("worst_group_auc", "worst-group AUC"), ("auc_gap", "AUC gap"), ("es_auc", "ES-AUC"),
           ("ks_significant", "sig. KS"), ("attribute_probe_auc", "attr. probe AUC"), ("retention", "retention"),
           ("gap_reduction", "gap reduction")]


def _fmt(m, s, digits=3) -> str:
    if m is None or not np.isfinite(m):
        return "–"
    if s is None or not np.isfinite(s):
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def _dp(d, p) -> str:
    if d is None or not np.isfinite(d):
        return "–"
    return f"{d:+.3f} ({p:.2g})" if p is not None and np.isfinite(p) else f"{d:+.3f}"


def display_table(table: pd.DataFrame, scenario: str, labels: str) -> pd.DataFrame:
    """The readable table of one scenario and label source: one row per model (own head rows marked)."""
    part = table[(table["scenario"] == scenario) & (table["labels"] == labels)]
    rows = []
    for r in part.to_dict("records"):
        name = r["model"] if r["eval"] == "probe" else f"{r['model']} (own head)"
        row = {"model": "plain KD" if name == KD else name}
        for m, title in COLUMNS:
            mean, std = r.get(f"{m}_mean"), r.get(f"{m}_std")
            whole = mean is not None and np.isfinite(mean) and float(mean).is_integer() and not (
                std is not None and np.isfinite(std) and std > 0)  # a count from one seed prints as a count
            digits = (0 if whole else 1) if m == "ks_significant" else 3
            row[title] = _fmt(r.get(f"{m}_mean"), r.get(f"{m}_std"), digits)
        row["Δ gap vs KD (p)"] = _dp(r.get("auc_gap_delta_vs_kd"), r.get("auc_gap_p_vs_kd"))
        row["Δ AUC vs KD (p)"] = _dp(r.get("auc_delta_vs_kd"), r.get("auc_p_vs_kd"))
        row["goal"] = "yes" if r.get("goal_met") else ""
        rows.append(row)
    return pd.DataFrame(rows)


def _md(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def markdown_report(table: pd.DataFrame, meta: dict) -> str:
    parts = [f"# {SECTION_TITLE}", "", _readme_note(meta), ""]
    for labels in labels_in(table):
        parts.append(f"## Against the {labels} labels\n")
        for scen in dict.fromkeys(table["scenario"]):
            sm = meta["scenarios"].get(scen, {})
            parts.append(f"### {scen} (attribute {sm.get('attribute', '?')}; groups "
                         f"{', '.join(sm.get('groups', []))})\n")
            parts.append(_md(display_table(table, scen, labels)))
    parts.append("\n" + "\n".join(f"- {line}" for line in goal_lines(table)) + "\n")
    return "\n".join(parts)


def _readme_note(meta: dict) -> str:
    c = meta["config"]
    data = meta.get("data_note") or (
        f"Synthetic cohorts of {c['n']} images at {c['size']} px (data seed {c['data_seed']}); tasks "
        f"{', '.join(c['tasks'])}. Teacher: {c['teacher']['backbone']} ({c['teacher']['embed_dim']}-d embedding, "
        f"{c['teacher']['epochs']} epochs) trained on each cohort's training split and seen by the students only "
        "through its embeddings.")
    return (f"{data} Students: {c['student']['backbone']}, {c['student']['epochs']} epochs, KD loss "
            f"{c['student']['loss']}; seeds {', '.join(map(str, c['seeds']))}. Every model is scored by a linear probe "
            "fitted on its train-split embeddings (observed labels) — rows '(own head)' score a student's own head "
            "instead. Metrics are means over tasks of the per-task values (test split); mean ± std over seeds. "
            f"sig. KS: significant two-sample KS tests (of {c['ks_modes']} PCA modes × group pairs, "
            f"{c['ks_correction'].upper()}-adjusted, α = {c['alpha']}); attr. probe AUC: how well the attribute is "
            "predicted from the test embeddings (chance 0.5). Retention = AUC / teacher AUC; gap reduction = "
            f"1 − gap / teacher gap. Δ vs KD: {TEST_NAME}. Goal: retention ≥ {GOAL['retention']} and gap "
            f"reduction ≥ {GOAL['gap_reduction']}, checked for a student's own head (rows '(own head)') as well as for the "
            "probe; how far the attribute probe moved toward chance is reported, not rewarded.")


def goal_lines(table: pd.DataFrame) -> list[str]:
    """One line per scenario and label source: who meets the goal, or the best student and what it misses."""
    lines = []
    for (scen, labels), part in table.groupby(["scenario", "labels"], sort=False):
        st = part[part["model"] != TEACHER]
        met = st[st["goal_met"]]
        if len(met):
            names = [f"{r.model}{'' if r.eval == 'probe' else ' (own head)'} (retention {r.retention_mean:.3f}, gap "
                     f"reduction {r.gap_reduction_mean:+.2f}, probe toward chance {r.probe_toward_chance_mean:+.2f})"
                     for r in met.itertuples()]
            lines.append(f"{scen}, {labels} labels: goal met by {'; '.join(names)}.")
            continue
        ok = st[st["retention_mean"] >= GOAL["retention"]]
        pool = ok if len(ok) else st
        if not len(pool) or not np.isfinite(pool["gap_reduction_mean"]).any():
            lines.append(f"{scen}, {labels} labels: no student could be compared.")
            continue
        b = pool.loc[pool["gap_reduction_mean"].idxmax()]
        lines.append(f"{scen}, {labels} labels: goal not met; best gap reduction "
                     f"{'among students keeping ≥ 97% ' if len(ok) else ''}is {b['model']}"
                     f"{'' if b['eval'] == 'probe' else ' (own head)'}: retention {b['retention_mean']:.3f}, gap "
                     f"reduction {b['gap_reduction_mean']:+.2f}, probe toward chance "
                     f"{b['probe_toward_chance_mean']:+.2f}.")
    return lines


def label_bias_lines(table: pd.DataFrame) -> list[str]:
    """Observed- vs true-label gap of the teacher and plain KD per scenario: a gap that exists against the observed
    labels but not against the truth is label bias, which no model trained on those labels removes."""
    lines = []
    for scen in dict.fromkeys(table["scenario"]):
        vals = {}
        for labels in labels_in(table):
            for model in (TEACHER, KD):
                r = table[(table["scenario"] == scen) & (table["labels"] == labels) & (table["model"] == model)
                          & (table["eval"] == "probe")]
                if len(r):
                    vals[(model, labels)] = (float(r["auc_gap_mean"].iloc[0]), float(r["auc_mean"].iloc[0]))
        if len(vals) == 4:
            lines.append(f"{scen}: teacher gap {vals[(TEACHER, 'observed')][0]:.3f} (observed) vs "
                         f"{vals[(TEACHER, 'true')][0]:.3f} (true); plain KD {vals[(KD, 'observed')][0]:.3f} vs "
                         f"{vals[(KD, 'true')][0]:.3f}; teacher AUC {vals[(TEACHER, 'observed')][1]:.3f} vs "
                         f"{vals[(TEACHER, 'true')][1]:.3f}.")
    return lines


def tradeoff_plot(table: pd.DataFrame, path: Path | None = None):
    """Retention (student AUC / teacher AUC) against gap reduction (1 − student gap / teacher gap), one panel per
    label source; the goal region is shaded. Returns the figure (saved to ``path`` when given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    st = table[table["model"] != TEACHER]
    models = list(dict.fromkeys(f"{m}{'' if e == 'probe' else ' (head)'}" for m, e in zip(st["model"], st["eval"])))
    scens = list(dict.fromkeys(st["scenario"]))
    markers = "osD^vP*X"
    cmap = plt.get_cmap("tab10")
    sources = labels_in(table) or list(LABELS[:1])
    fig, axes = plt.subplots(1, len(sources), figsize=(4.5 * len(sources) + 2, 4.4), sharey=True, squeeze=False)
    # one retention axis for every panel, wide enough for every point of every panel (and the goal line)
    ret = st["retention_mean"].to_numpy(float)
    sd = np.nan_to_num(st["retention_std"].to_numpy(float)) if "retention_std" in st else np.zeros_like(ret)
    ok = np.isfinite(ret)
    lo = float(np.min(ret[ok] - sd[ok])) if ok.any() else GOAL["retention"]
    hi = float(np.max(ret[ok] + sd[ok])) if ok.any() else 1.0
    pad = 0.05 * max(hi - lo, 0.02)
    y0, y1 = min(lo, GOAL["retention"]) - pad, max(hi + pad, 1.005)
    for ax, labels in zip(axes[0], sources):
        part = st[st["labels"] == labels]
        for r in part.itertuples():
            name = f"{r.model}{'' if r.eval == 'probe' else ' (head)'}"
            x, y = r.gap_reduction_mean, r.retention_mean
            if not (np.isfinite(x) and np.isfinite(y)):
                continue
            ax.errorbar([x], [y], xerr=[np.nan_to_num(r.gap_reduction_std)], yerr=[np.nan_to_num(r.retention_std)],
                        fmt=markers[scens.index(r.scenario) % len(markers)], color=cmap(models.index(name) % 10),
                        ms=7, capsize=2, alpha=0.85)
        x0, x1 = ax.get_xlim()
        x1 = max(x1, 1.02)
        ax.add_patch(Rectangle((GOAL["gap_reduction"], GOAL["retention"]), x1 - GOAL["gap_reduction"],
                               y1 - GOAL["retention"], color="#1e7b34", alpha=0.08, lw=0))
        ax.set_xlim(min(x0, -0.1), x1)
        ax.set_ylim(y0, y1)
        ax.axvline(GOAL["gap_reduction"], color="#1e7b34", ls="--", lw=1)
        ax.axhline(GOAL["retention"], color="#1e7b34", ls="--", lw=1)
        ax.axvline(0.0, color="#888", lw=0.8)
        ax.axhline(1.0, color="#888", lw=0.8)
        ax.set_title(f"{labels} labels", fontsize=10)
        ax.set_xlabel("gap reduction  1 − gap / teacher gap  (→ fairer)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("retention  AUC / teacher AUC")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=cmap(i % 10), marker="o", ls="", label=m) for i, m in enumerate(models)]
    handles += [Line2D([], [], color="#444", marker=markers[i % len(markers)], ls="", label=s)
                for i, s in enumerate(scens)]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 2 / fig.get_figwidth(), 1))
    if path is not None:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    return fig


def report_section(table: pd.DataFrame | str | Path, meta: dict | None = None) -> str:
    """The HTML section "Can the student be fairer than its teacher?" (for the study report): the tables (true and
    observed labels), the retention-vs-gap-reduction plot and the readings. ``table`` is the summary DataFrame or a
    directory written by :func:`run_study`."""
    if not isinstance(table, pd.DataFrame):
        d = Path(table)
        if not (d / "fairkd_summary.parquet").exists():
            raise InputError("no fair-distillation results here", path=d, hint="run cxrdistill fair distill-study")
        table = pd.read_parquet(d / "fairkd_summary.parquet")
        meta = meta or json.loads((d / "fairkd.json").read_text(encoding="utf-8"))
    meta = meta or {}
    body = []
    if "config" in meta:
        body.append(H.paragraph(_readme_note(meta), "muted"))
    body.append(H.bullets(goal_lines(table)))
    lb = label_bias_lines(table)
    if lb:
        body.append(H.paragraph("Label bias vs model bias — gap against the observed labels and against the truth:"))
        body.append(H.bullets(lb))
    body.append(H.figure(tradeoff_plot(table), "Each point is a student (colour) on a scenario (marker), mean ± std "
                         "over seeds; the shaded corner is the goal: at least half of the teacher's AUC gap removed "
                         "(right of the dashed line) while keeping ≥ 97% of its mean AUC (above it)."))
    for labels in labels_in(table):
        for scen in dict.fromkeys(table["scenario"]):
            sm = meta.get("scenarios", {}).get(scen, {})
            body.append(f"<h3>{H.esc(scen)} — {H.esc(labels)} labels (attribute {H.esc(sm.get('attribute', '?'))})"
                        "</h3>")
            body.append(H.table(display_table(table, scen, labels)))
    reading = ("A student is fairer than its teacher when its AUC gap is smaller at almost the same mean AUC; the "
               "true-label tables show the model's own bias, the observed-label tables add the bias in the labels.")
    return H.section(SECTION_TITLE, body, reading=reading, anchor="fairkd")


def write_outputs(tidy: pd.DataFrame, meta: dict, out: Path) -> dict[str, Any]:
    """Every output file of the study (atomically)."""
    ps = per_seed(tidy)
    table = summarize(ps)
    write_parquet(tidy, out / "fairkd_results.parquet")
    write_parquet(ps, out / "fairkd_per_seed.parquet")
    write_parquet(table, out / "fairkd_summary.parquet")
    write_table(table, out / "fairkd_table.csv")
    with atomic_open(out / "fairkd_table.md", encoding="utf-8") as fh:
        fh.write(markdown_report(table, meta))
    js = {**meta, "results": _json_results(table), "goal_lines": goal_lines(table),
          "label_bias": label_bias_lines(table)}
    write_json(clean_json(js), out / "fairkd.json")
    fig = tradeoff_plot(table, out / "fairkd_tradeoff.png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    html = H.page("Fair distillation of a black-box teacher", [report_section(table, meta)],
                  subtitle=f"cxrdistill fair distill-study — {', '.join(meta['config']['scenarios'])}")
    with atomic_open(out / "report.html", encoding="utf-8") as fh:
        fh.write(html)
    return {"tidy": tidy, "per_seed": ps, "table": table}


def _json_results(table: pd.DataFrame) -> dict:
    """scenario → labels → model[/head] → {metric: mean, metric_std, vs_kd: {metric: {delta, p}}, goal_met}."""
    out: dict = {}
    for r in table.to_dict("records"):
        name = r["model"] if r["eval"] == "probe" else f"{r['model']}/head"
        d: dict[str, Any] = {}
        for m in SUMMARY_METRICS:
            d[m], d[f"{m}_std"] = r.get(f"{m}_mean"), r.get(f"{m}_std")
        vs = {m: {"delta": r.get(f"{m}_delta_vs_kd"), "p": r.get(f"{m}_p_vs_kd")} for m in TESTED
              if f"{m}_delta_vs_kd" in r and r.get(f"{m}_delta_vs_kd") is not None
              and not (isinstance(r.get(f"{m}_delta_vs_kd"), float) and math.isnan(r[f"{m}_delta_vs_kd"]))}
        if vs:
            d["vs_kd"] = vs
        d["goal_met"], d["n_seeds"] = bool(r["goal_met"]), int(r["n_seeds"])
        out.setdefault(r["scenario"], {}).setdefault(r["labels"], {})[name] = d
    return out
