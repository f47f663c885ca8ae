"""The comparison across methods: per-seed summaries, mean ± std over seeds, a paired test against ERM, the Markdown
/CSV table, ``fair.json`` and the Pareto plot of overall AUC against AUC gap.

Per seed, every metric is the mean over tasks of the task-level metric (tasks where it is defined). The test against
ERM is a two-sided **paired t-test across seeds** (``scipy.stats.ttest_rel``; seeds pair the two methods' runs, which
share the data split and initialisation seed). A Wilcoxon signed-rank test cannot reach p < 0.05 with fewer than 6
seeds, so the t-test is the one that can say anything at 3–5 seeds; it assumes roughly normal differences.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrdistill.fairness.metrics import OVERALL, SUMMARY, SUMMARY_METRICS
from cxrdistill.fairness.selection import pareto_front
from cxrdistill.storage.io import atomic_path

TESTED = ("auc", "worst_group_auc", "auc_gap", "es_auc")
TEST_NAME = "paired t-test across seeds (scipy.stats.ttest_rel, two-sided)"
HEADLINE = ("auc", "worst_group_auc", "auc_gap", "es_auc", "psd")


def per_seed(tidy: pd.DataFrame, labels: str, group_names: list[str], score: str = "auc") -> pd.DataFrame:
    """One row per (method, seed): mean over tasks of overall/group scores and of the summary metrics."""
    d = tidy[tidy["labels"] == labels]
    rows = []
    for (method, seed), part in d.groupby(["method", "seed"], sort=False):
        r: dict[str, Any] = {"method": method, "seed": int(seed)}
        sc = part[part["metric"] == score]
        r[score] = float(np.nanmean(sc.loc[sc["group"] == OVERALL, "value"])) if len(sc) else np.nan
        for gname in group_names:
            v = sc.loc[sc["group"] == str(gname), "value"]
            r[f"{score}[{gname}]"] = float(np.nanmean(v)) if len(v) and np.isfinite(v).any() else np.nan
        for m in [m.replace("auc", score) for m in SUMMARY_METRICS]:
            v = part.loc[(part["group"] == SUMMARY) & (part["metric"] == m), "value"]
            r[m] = float(np.nanmean(v)) if len(v) and np.isfinite(v).any() else np.nan
        rows.append(r)
    return pd.DataFrame(rows)


def summarize(ps: pd.DataFrame, baseline: str = "erm", metrics: tuple[str, ...] | None = None) -> tuple[
        pd.DataFrame, dict[str, Any]]:
    """Mean ± std over seeds per method and the paired test against ``baseline`` → (wide table, fair.json dict)."""
    from scipy import stats

    value_cols = [c for c in ps.columns if c not in ("method", "seed")]
    tested = [m for m in (metrics or TESTED) if m in value_cols]
    base = ps[ps["method"] == baseline].set_index("seed") if baseline in set(ps["method"]) else None
    table, js = [], {}
    for method in dict.fromkeys(ps["method"]):
        part = ps[ps["method"] == method].set_index("seed")
        row: dict[str, Any] = {"method": method, "n_seeds": len(part)}
        out: dict[str, Any] = {}
        for c in value_cols:
            v = part[c].to_numpy(dtype=float)
            mean = float(np.nanmean(v)) if np.isfinite(v).any() else np.nan
            std = float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else np.nan
            row[f"{c}_mean"], row[f"{c}_std"] = mean, std
            if "[" in c:
                out.setdefault(f"group_{c[:c.index('[')]}", {})[c[c.index("[") + 1:-1]] = mean
            else:
                out[c], out[f"{c}_std"] = mean, std
        vs: dict[str, Any] = {}
        if base is not None and method != baseline:
            common = sorted(set(part.index) & set(base.index))
            for m in tested:
                a = part.loc[common, m].to_numpy(dtype=float)
                b = base.loc[common, m].to_numpy(dtype=float)
                ok = np.isfinite(a) & np.isfinite(b)
                delta = float(np.mean(a[ok] - b[ok])) if ok.any() else np.nan
                p = np.nan
                if ok.sum() >= 2 and np.ptp(a[ok] - b[ok]) > 0:
                    p = float(stats.ttest_rel(a[ok], b[ok]).pvalue)
                row[f"{m}_delta_vs_{baseline}"], row[f"{m}_p_vs_{baseline}"] = delta, p
                vs[m] = {"delta": delta, "p": p, "n_pairs": int(ok.sum())}
        out["n_seeds"] = len(part)
        out["seeds"] = sorted(int(s) for s in part.index)
        if vs:
            out[f"vs_{baseline}"] = {"test": TEST_NAME, **vs}
        table.append(row)
        js[method] = out
    return pd.DataFrame(table), js


def _fmt(m: float, s: float) -> str:
    if not np.isfinite(m):
        return "–"
    return f"{m:.3f} ± {s:.3f}" if np.isfinite(s) else f"{m:.3f}"


def markdown_table(table: pd.DataFrame, group_names: list[str], baseline: str = "erm", score: str = "auc",
                   title: str | None = None) -> str:
    """A readable Markdown table: mean ± std over seeds, Δ and p against the baseline."""
    cols = [score] + [f"{score}[{g}]" for g in group_names] + [m.replace("auc", score) for m in
                                                              ("auc_gap", "worst_group_auc", "es_auc", "psd")]
    head = ["method", "seeds"] + [c.replace(f"{score}[", f"{score} ").replace("]", "") for c in cols]
    tested = [m.replace("auc", score) for m in ("auc", "worst_group_auc", "auc_gap")]
    head += [f"Δ{m} (p)" for m in tested]
    lines = ([f"### {title}", ""] if title else []) + ["| " + " | ".join(head) + " |",
                                                         "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [str(r["method"]), str(int(r["n_seeds"]))]
        cells += [_fmt(r.get(f"{c}_mean", np.nan), r.get(f"{c}_std", np.nan)) for c in cols]
        for m in tested:
            d, p = r.get(f"{m}_delta_vs_{baseline}", np.nan), r.get(f"{m}_p_vs_{baseline}", np.nan)
            cells.append("–" if not np.isfinite(d) else f"{d:+.3f} ({p:.3g})" if np.isfinite(p) else f"{d:+.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pareto_plot(ps: pd.DataFrame, path: str | Path, score: str = "auc", title: str = "") -> None:
    """Overall score (x) against the gap between groups (y): seeds as dots, method means with ±1 std bars, and
    the Pareto front of the method means (higher score, lower gap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gap = f"{score}_gap"
    fig, ax = plt.subplots(figsize=(5.6, 4.2), dpi=120)
    methods = list(dict.fromkeys(ps["method"]))
    means = []
    cmap = plt.get_cmap("tab10")
    for i, m in enumerate(methods):
        part = ps[ps["method"] == m]
        x, y = part[score].to_numpy(float), part[gap].to_numpy(float)
        c = cmap(i % 10)
        ax.scatter(x, y, color=c, alpha=0.35, s=18)
        mx, my = np.nanmean(x), np.nanmean(y)
        sx = np.nanstd(x, ddof=1) if np.isfinite(x).sum() > 1 else 0.0
        sy = np.nanstd(y, ddof=1) if np.isfinite(y).sum() > 1 else 0.0
        ax.errorbar([mx], [my], xerr=[sx], yerr=[sy], fmt="o", color=c, ms=7, capsize=3, label=m)
        means.append((mx, my))
    pts = np.array(means, dtype=float)
    if len(pts):
        front = pareto_front(pts, (True, False))
        if len(front) > 1:
            ax.plot(pts[front, 0], pts[front, 1], "k--", lw=1, alpha=0.6, label="Pareto front")
    ax.set_xlabel(f"overall {score.upper()} (higher is better)")
    ax.set_ylabel(f"{score.upper()} gap between groups (lower is better)")
    ax.set_title(title or f"{score.upper()} vs gap (mean ± std over seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
