"""The audit's ``report.html``: one self-contained page (tables + embedded PNG figures), every string escaped."""
from __future__ import annotations

import math

from cxrdistill.report.html import esc, figure, page, paragraph, section, table
from cxrdistill.storage.io import atomic_open, write_json, write_parquet


def _num(x, fmt="{:.3f}") -> str:
    return "" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def _with_ci(v, ci, fmt="{:.3f}") -> str:
    if v is None:
        return ""
    s = _num(v, fmt)
    if ci:
        s += f" [{_num(ci[0], fmt)}, {_num(ci[1], fmt)}]"
    return s


def _p(p) -> str:
    if p is None:
        return ""
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def _mpl_text(s: str) -> str:
    """Matplotlib reads ``$…$`` as mathtext; group names are data, so escape the dollar."""
    return str(s).replace("$", r"\$")


def _group_figure(task: str, attr: str, ares: dict, overall: dict, alpha: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g, d in ares["groups"].items() if d.get("auc") is not None]
    if not groups:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 0.55 * len(groups) + 1.4), sharey=True)
    ypos = list(range(len(groups)))[::-1]
    for ax, m, title in zip(axes, ("auc", "tpr", "fpr"), ("AUC", "TPR at global threshold", "FPR at global threshold")):
        for yy, g in zip(ypos, groups):
            d = ares["groups"][g]
            v, ci = d[m], d.get(f"{m}_ci")
            if ci:
                ax.errorbar(v, yy, xerr=[[max(v - ci[0], 0)], [max(ci[1] - v, 0)]], fmt="o", color="#333333",
                            capsize=3)
            else:
                ax.plot(v, yy, "o", color="#333333")
        if overall.get(m) is not None:
            ax.axvline(overall[m], color="#b02a2a", ls="--", lw=1, label="overall")
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ypos)
    axes[0].set_yticklabels([_mpl_text(g) for g in groups], fontsize=8)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(_mpl_text(f"{task} — by {attr} ({100 * (1 - alpha):.0f}% bootstrap CIs)"), fontsize=10)
    fig.tight_layout()
    return fig


def _groups_table(ares: dict):
    import pandas as pd

    rows = []
    for g, d in ares["groups"].items():
        rows.append({"group": g, "n": d["n"], "n_pos": d["n_pos"], "AUC [CI]": _with_ci(d["auc"], d.get("auc_ci")),
                     "TPR [CI]": _with_ci(d["tpr"], d.get("tpr_ci")), "FPR [CI]": _with_ci(d["fpr"], d.get("fpr_ci")),
                     "Youden J": _num(d["youden"]), "note": d.get("reason") or ""})
    return pd.DataFrame(rows)


def _comparisons_table(ares: dict):
    import pandas as pd

    rows = []
    for c in ares["comparisons"]:
        rows.append({"group a": c["group_a"], "group b": c["group_b"],
                     "ΔAUC (a−b) [CI]": _with_ci(c["auc_diff"], c.get("auc_diff_ci")),
                     "DeLong p": _p(c["auc_p"]), "p adj": _p(c["auc_p_adj"]),
                     "AUC differs": {True: "yes", False: "no", None: ""}[c["auc_significant"]],
                     "ΔTPR [CI]": _with_ci(c["tpr_diff"], c.get("tpr_ci")),
                     "ΔFPR [CI]": _with_ci(c["fpr_diff"], c.get("fpr_ci")),
                     "KS": _num(c["ks_stat"]), "KS p adj": _p(c["ks_p_adj"]),
                     "note": c.get("reason") or ""})
    return pd.DataFrame(rows)


def _overall_table(ov: dict):
    import pandas as pd

    names = {"auc": "AUC-ROC", "auc_pr": "AUC-PR", "max_youden": "max Youden's J", "threshold": "threshold",
             "tpr": "TPR at threshold", "fpr": "FPR at threshold", "youden": "Youden's J at threshold"}
    return pd.DataFrame([{"metric": names[m], "value [CI]": _with_ci(ov.get(m), ov.get(f"{m}_ci"), "{:.4g}")}
                         for m in names])


def _task_section(task: str, res: dict, settings: dict, label_note: str) -> str:
    import pandas as pd

    alpha = settings["alpha"]
    parts = []
    ov = res["overall"]
    if res.get("reason"):
        return section(f"Task {task}{label_note}", [paragraph(f"Not evaluated: {res['reason']}.", "bad")])
    parts.append(table(_overall_table(ov)))
    for a, ares in res["attributes"].items():
        parts.append(f"<h3>{esc(task)} by {esc(a)}</h3>")
        if ares["n_missing"]:
            parts.append(paragraph(f"{ares['n_missing']} rows have no {a} and are left out of its groups "
                                   "(they still count overall).", "muted"))
        parts.append(table(_groups_table(ares)))
        summ = pd.DataFrame([{"AUC gap (max−min)": _with_ci(ares["auc_gap"], ares.get("auc_gap_ci")),
                              "worst group": ares.get("worst_group") or "",
                              "worst-group AUC": _with_ci(ares["worst_group_auc"], ares.get("worst_group_auc_ci")),
                              "ES-AUC": _with_ci(ares["es_auc"], ares.get("es_auc_ci")),
                              "PSD": _with_ci(ares["psd"], ares.get("psd_ci")),
                              "note": ares.get("summary_reason") or ""}])
        parts.append(table(summ))
        if ares["comparisons"]:
            parts.append(table(_comparisons_table(ares)))
        fig = _group_figure(task, a, ares, ov, alpha)
        if fig is not None:
            worst = ares.get("worst_group")
            reading = (f"{task} by {a}: per-group AUC, TPR and FPR with {100 * (1 - alpha):.0f}% CIs at the one "
                       f"global threshold (dashed: overall)"
                       + (f"; worst group {worst} (AUC {_num(ares['worst_group_auc'])}), gap "
                          f"{_num(ares['auc_gap'])}." if worst is not None else "."))
            parts.append(figure(fig, reading))
    n_sig = sum(bool(c.get("auc_significant")) for ares in res["attributes"].values() for c in ares["comparisons"])
    reading = (f"Threshold {_num(res['threshold'], '{:.4g}')} gives overall FPR {_num(ov.get('fpr'))} "
               f"(target {settings['target_fpr']}); {n_sig} pairwise AUC difference(s) significant after "
               f"{settings['correction']} correction.")
    return section(f"Task {task}{label_note}", parts, reading=reading, anchor=f"task-{task}{label_note}")


def _overview(doc: dict):
    import pandas as pd

    rows = []
    for key, note in (("tasks", ""), ("tasks_true", " (true labels)")):
        for t, res in (doc.get(key) or {}).items():
            ov = res["overall"]
            row = {"task": t + note, "n": ov["n"], "n_pos": ov["n_pos"], "AUC [CI]": _with_ci(ov.get("auc"),
                                                                                           ov.get("auc_ci")),
                   "TPR": _num(ov.get("tpr")), "FPR": _num(ov.get("fpr"))}
            for a, ares in res.get("attributes", {}).items():
                row[f"{a}: AUC gap"] = _num(ares.get("auc_gap"))
                row[f"{a}: worst"] = ares.get("worst_group") or ""
            rows.append(row)
    return pd.DataFrame(rows)


def render_audit_html(doc: dict, title: str = "Performance audit") -> str:
    """The report page of an ``audit.json`` document (as returned by ``AuditResult.to_json()``)."""
    import pandas as pd

    st = doc["settings"]
    sections = []
    settings_df = pd.DataFrame([{"setting": k, "value": ", ".join(map(str, v)) if isinstance(v, list) else str(v)}
                                for k, v in st.items() if k not in ("threshold_rule", "ci")])
    reading = (f"{doc.get('n_tests', 0)} tests in one family ({st['correction']} correction), "
               f"{doc.get('n_significant', 0)} significant at alpha = {st['alpha']}.")
    sections.append(section("Overview", [table(_overview(doc)), table(settings_df)], reading=reading,
                            anchor="overview"))
    for key, note in (("tasks", ""), ("tasks_true", " (true labels)")):
        for t, res in (doc.get(key) or {}).items():
            sections.append(_task_section(t, res, st, note))
    rs = doc.get("resampling")
    if rs:
        rows = []
        for t, rep in rs["tasks"].items():
            for g, d in rep["groups"].items():
                rows.append({"task": t, "group": g, **d})
        warn = [w for rep in rs["tasks"].values() for w in rep["warnings"]]
        body = [paragraph(f"Test set resampled as Glocker et al. 2023: groups of {rs['attribute']} balanced, "
                          "prevalence matched within groups, then age bins matched within (group, class)."),
                table(pd.DataFrame(rows))] + [paragraph(w, "bad") for w in warn]
        sections.append(section("Resampling", body, anchor="resampling"))
    notes = [paragraph("Threshold: " + st["threshold_rule"] + "."), paragraph("CIs: " + st["ci"] + "."),
             paragraph("ES-AUC = AUC / (1 + Σ_g |AUC − AUC_g|); PSD = standard deviation of group AUCs; AUC gap = "
                       "max − min of group AUCs. Pairwise AUC tests: DeLong (independent groups); score "
                       "distributions: two-sample KS. Groups with fewer than "
                       f"{st['min_n']} labelled rows or a single class are not evaluated (reason given)."),
             paragraph("AUC gap, worst-group AUC and PSD are max/min statistics: their bootstrap distribution is "
                       "biased (gaps look larger under resampling), so when groups perform alike the point estimate "
                       "can sit outside its percentile interval. Read those intervals as spread, and use the "
                       "pairwise DeLong tests to decide whether groups differ.")]
    sections.append(section("How to read this", notes, anchor="notes"))
    sub = f"{doc.get('input', {}).get('path') or ''} — labels: {st['labels']}"
    return page(title, sections, subtitle=sub)


def write_audit(res, out_dir, title: str = "Performance audit") -> dict:
    """Write an audit's files atomically: the tidy tables, report.html, and audit.json last (its presence means the
    audit is complete). Returns the audit.json document."""
    from pathlib import Path

    out_dir = Path(out_dir)
    doc = res.to_json()
    html = render_audit_html(doc, title=title)
    write_parquet(res.by_group, out_dir / "audit_by_group.parquet")
    write_parquet(res.comparisons, out_dir / "audit_comparisons.parquet")
    with atomic_open(out_dir / "report.html", "w", encoding="utf-8") as fh:
        fh.write(html)
    write_json(doc, out_dir / "audit.json")
    return doc
