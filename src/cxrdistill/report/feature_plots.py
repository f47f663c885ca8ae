"""Plots of the feature-space audit, attribute probes and propagation comparison (matplotlib, no pyplot state):
mode scatter with per-group marginal densities, KS heatmap, probe AUC bars, and a gap forest plot."""
from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd

from cxrdistill.evaluation.attribute_groups import group_order, is_binned
from cxrdistill.report.colors import group_colors, model_color

def png_bytes(fig, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def _kde(ax, data: np.ndarray, color, vertical: bool, grid: np.ndarray) -> None:
    from scipy.stats import gaussian_kde

    d = data[np.isfinite(data)]
    if d.size < 5 or np.ptp(d) == 0:
        return
    dens = gaussian_kde(d)(grid)  # each group normalized on its own (seaborn's common_norm=False)
    if vertical:
        ax.fill_betweenx(grid, dens, color=color, alpha=0.25, lw=0)
        ax.plot(dens, grid, color=color, lw=1.2)
    else:
        ax.fill_between(grid, dens, color=color, alpha=0.25, lw=0)
        ax.plot(grid, dens, color=color, lw=1.2)


def scatter_with_marginals(x: np.ndarray, y: np.ndarray, groups: pd.Series, *, title: str, xlabel: str,
                           ylabel: str, max_points: int = 3000, seed: int = 0):
    """Joint scatter of two modes coloured by group, with each group's density along both axes (Glocker Fig. 2)."""
    from matplotlib.figure import Figure

    lab = pd.Series(groups).reset_index(drop=True).to_numpy(dtype=object)
    ok = np.array([v is not None for v in lab]) & np.isfinite(x) & np.isfinite(y)
    idx = np.flatnonzero(ok)
    if idx.size > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=max_points, replace=False))
    order = group_order(lab[ok])
    colors = group_colors(order, is_binned(order))
    fig = Figure(figsize=(6.2, 6.0))
    gs = fig.add_gridspec(2, 2, width_ratios=(4, 1), height_ratios=(1, 4), wspace=0.05, hspace=0.05)
    ax = fig.add_subplot(gs[1, 0])
    axx = fig.add_subplot(gs[0, 0], sharex=ax)
    axy = fig.add_subplot(gs[1, 1], sharey=ax)
    rng = np.random.default_rng(seed)
    idx = idx[rng.permutation(idx.size)]  # no group hidden under another by drawing order
    for g in order:
        m = idx[lab[idx] == g]
        ax.scatter(x[m], y[m], s=9, alpha=0.55, color=colors[g], label=f"{g} (n={int((lab[ok] == g).sum())})",
                   rasterized=True, linewidths=0)
    xs, ys = x[ok], y[ok]
    gx = np.linspace(np.nanmin(xs), np.nanmax(xs), 200) if xs.size else np.zeros(1)
    gy = np.linspace(np.nanmin(ys), np.nanmax(ys), 200) if ys.size else np.zeros(1)
    for g in order:
        m = lab[ok] == g
        _kde(axx, xs[m], colors[g], False, gx)
        _kde(axy, ys[m], colors[g], True, gy)
    axx.axis("off")
    axy.axis("off")
    from matplotlib.ticker import MaxNLocator

    for axis in (ax.xaxis, ax.yaxis):  # few ticks, and powers of ten for tiny scales: labels never collide
        axis.set_major_locator(MaxNLocator(nbins=6))
    ax.ticklabel_format(style="sci", scilimits=(-2, 4), useMathText=True)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(loc="best", fontsize=8, markerscale=1.8, framealpha=0.8)
    axx.set_title(title, fontsize=11)
    return fig


def ks_heatmap(tests: pd.DataFrame, *, max_features: int = 30, alpha: float = 0.05):
    """Rows = features/modes (first ``max_features``), columns = attribute group pairs, colour = −log10 p_adj;
    stars mark p_adj < 0.05 / 0.01 / 0.001."""
    from matplotlib.figure import Figure

    t = tests.copy()
    t["pair"] = t["attribute"].astype(str) + ": " + t["group_a"].astype(str) + " vs " + t["group_b"].astype(str)
    feats = list(dict.fromkeys(t["feature"]))[:max_features]
    pairs = list(dict.fromkeys(t["pair"]))
    t = t[t["feature"].isin(feats)]
    M = np.full((len(feats), len(pairs)), np.nan)
    fi = {f: i for i, f in enumerate(feats)}
    pj = {p: j for j, p in enumerate(pairs)}
    with np.errstate(divide="ignore"):
        for r in t.itertuples(index=False):
            if pd.notna(r.p_adj):
                M[fi[r.feature], pj[r.pair]] = -np.log10(max(float(r.p_adj), 1e-300))
    vmax = max(3.0, float(np.nanmax(M)) if np.isfinite(M).any() else 3.0)
    vmax = min(vmax, 20.0)
    fig = Figure(figsize=(min(2.2 + 0.55 * len(pairs), 16), min(1.6 + 0.28 * len(feats), 12)))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(np.ma.masked_invalid(M), aspect="auto", cmap="magma_r", vmin=0, vmax=vmax,
                   interpolation="nearest")
    for i in range(len(feats)):
        for j in range(len(pairs)):
            v = M[i, j]
            if np.isfinite(v):
                stars = "***" if v > 3 else "**" if v > 2 else "*" if v > -np.log10(alpha) else ""
                if stars:
                    ax.text(j, i, stars, ha="center", va="center", fontsize=7,
                            color="white" if v > vmax * 0.6 else "black")
    ax.set_xticks(range(len(pairs)), pairs, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(feats)), feats, fontsize=8)
    cb = fig.colorbar(im, ax=ax, shrink=0.8)
    cb.set_label("−log10 adjusted p")
    ax.set_title("KS tests between groups (adjusted p)", fontsize=11)
    return fig


def scree_plot(evr: np.ndarray):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    k = np.arange(1, len(evr) + 1)
    ax.bar(k, evr, color="#9aa5b1", label="per mode")  # neutral: blue and orange mean teacher and student
    ax2 = ax.twinx()
    ax2.plot(k, np.cumsum(evr), color="#222222", marker=".", label="cumulative")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_ylim(0, 1.02)
    ax.set_xlabel("PCA mode")
    ax.set_ylabel("explained variance ratio")
    ax2.set_ylabel("cumulative")
    ax.set_title("Explained variance of the retained modes", fontsize=11)
    return fig


def probe_bars(probes: dict):
    """Probe AUC per attribute (with 95% CI) and each class's one-vs-rest AUC; dashed line = chance."""
    from matplotlib.figure import Figure

    attrs = [a for a, d in probes.items() if isinstance(d, dict) and "auc" in d]
    fig = Figure(figsize=(max(4.5, 1.9 * len(attrs) + 2), 4))
    ax = fig.add_subplot(1, 1, 1)
    x0 = 0.0
    ticks, tick_labels = [], []
    for a in attrs:
        d = probes[a]
        per = d.get("per_class") or {}
        classes = group_order(per.keys()) if len(per) > 2 else []
        items = [("all", d)] + [(c, per[c]) for c in classes]
        cols = group_colors([c for c, _ in items[1:]], is_binned(classes))
        for k, (c, e) in enumerate(items):
            ci = e.get("auc_ci")
            err = None if not ci else [[e["auc"] - ci[0]], [ci[1] - e["auc"]]]
            ax.bar(x0 + k * 0.8, e["auc"], width=0.7, color="#5a6470" if c == "all" else cols[c],
                   yerr=err, capsize=3, edgecolor="black" if c == "all" else "none", linewidth=0.6)
            ticks.append(x0 + k * 0.8)
            tick_labels.append(f"{a}" if c == "all" else str(c))
        x0 += 0.8 * len(items) + 0.8
    ax.axhline(0.5, ls="--", color="grey", lw=1)
    ax.set_ylim(0.0, 1.0)
    ax.set_xticks(ticks, tick_labels, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("AUC (out-of-fold, 95% CI)")
    ax.set_title("How well each attribute can be read from the embeddings", fontsize=11)
    return fig


def top_changes(tidy: pd.DataFrame, models: list[str], max_rows: int = 15) -> list[str]:
    """Labels of the tested bias quantities with the largest change against the reference (largest |Δ| of any
    model), at most ``max_rows``: the rows a chart can show legibly; the rest belong in a table."""
    t = tidy[tidy["test"] == "z"].copy()
    if t.empty:
        return []
    t["label"] = t.apply(_row_label, axis=1)
    d = t[t["model"].isin(models[1:])].assign(absd=lambda x: x["delta"].abs())
    best = d.groupby("label", sort=False)["absd"].max().sort_values(ascending=False, kind="stable")
    labels = [lb for lb in best.index if pd.notna(best[lb])]
    return labels[:max_rows]


def compare_forest(tidy: pd.DataFrame, models: list[str], *, max_rows: int = 15):
    """The tested bias quantities that changed most: one row per quantity, one marker (±95% CI) per model in its
    fixed colour. Only the ``max_rows`` largest changes are drawn; the report lists every quantity in a table."""
    from matplotlib.figure import Figure

    t = tidy[tidy["test"] == "z"].copy()
    if t.empty:
        return None
    t["label"] = t.apply(_row_label, axis=1)
    labels = top_changes(tidy, models, max_rows) or list(dict.fromkeys(t["label"]))[:max_rows]
    n_all = t["label"].nunique()
    fig = Figure(figsize=(7.5, 1.4 + 0.3 * len(labels)))
    ax = fig.add_subplot(1, 1, 1)
    off = np.linspace(-0.25, 0.25, len(models)) if len(models) > 1 else [0.0]
    for i, (m, o) in enumerate(zip(models, off)):
        s = t[(t["model"] == m) & t["label"].isin(labels)]
        yy = np.array([labels.index(lbl) for lbl in s["label"]]) + o
        v = s["value"].to_numpy(dtype=float)
        mag = np.where(s["magnitude"] == "abs", np.abs(v), v)
        se = s["se"].to_numpy(dtype=float)
        # a magnitude |gap| is never below 0: its interval stops there
        lo = np.where(s["magnitude"] == "abs", np.minimum(1.96 * se, mag), 1.96 * se)
        ax.errorbar(mag, yy, xerr=[lo, 1.96 * se], fmt="o", ms=4, color=model_color(m, i), label=m, capsize=2,
                    lw=1)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("bias magnitude (|gap| or probe AUC), 95% CI")
    ax.legend(fontsize=8)
    shown = f"the {len(labels)} largest changes of {n_all}" if len(labels) < n_all else f"all {n_all}"
    ax.set_title(f"Bias quantities by model ({shown})", fontsize=11)
    return fig


def _row_label(r) -> str:
    parts = [r["metric"]]
    for c in ("task", "attribute"):
        if r[c] is not None and not (isinstance(r[c], float) and math.isnan(r[c])):
            parts.append(str(r[c]))
    if r["group_a"] is not None and not (isinstance(r["group_a"], float) and math.isnan(r["group_a"])):
        parts.append(str(r["group_a"]) + (f" vs {r['group_b']}" if r["group_b"] is not None
                                          and not (isinstance(r["group_b"], float)) else ""))
    return " · ".join(parts)
