"""Matplotlib figures for the study report (each returns a Figure; the caller embeds it with its reading)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PALETTE = ["#2b6cb0", "#c05621", "#2f855a", "#9b2c2c", "#6b46c1", "#b7791f", "#4a5568"]


def roc_by_group(preds, task: str, attribute: str, title: str = ""):
    """ROC curves of one task, one curve per group of ``attribute`` (plus overall), from a predictions table."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(4.2, 4))
    y, p = preds[f"y_{task}"], preds[f"p_{task}"]
    ok = y.notna() & p.notna()
    curves = [("all", ok)] + [(str(g), ok & (preds[attribute] == g))
                              for g in sorted(preds[attribute].dropna().unique(), key=str)]
    for i, (name, m) in enumerate(curves):
        yy, pp = y[m].to_numpy(int), p[m].to_numpy(float)
        if yy.size == 0 or yy.min() == yy.max():
            continue
        fpr, tpr, _ = roc_curve(yy, pp)
        ax.plot(fpr, tpr, color="black" if name == "all" else PALETTE[(i - 1) % len(PALETTE)],
                lw=2 if name == "all" else 1.4, ls="--" if name == "all" else "-",
                label=f"{name} (AUC {roc_auc_score(yy, pp):.3f}, n={m.sum()})")
    ax.plot([0, 1], [0, 1], color="#bbb", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or f"{task} by {attribute}", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def subgroup_forest(by_group, metric: str = "auc", models: dict | None = None, title: str = ""):
    """Point estimates with CIs per task × group, several models side by side (``models``: name → tidy table)."""
    models = models or {"": by_group}
    rows = []
    for mi, (mname, df) in enumerate(models.items()):
        d = df[(df["metric"] == metric) & df["value"].notna()]
        for r in d.itertuples(index=False):
            label = f"{r.task} · {r.attribute}={r.group}"
            rows.append((label, mi, mname, r.value, r.ci_low, r.ci_high))
    labels = sorted({r[0] for r in rows})
    if not labels:
        fig, ax = plt.subplots(figsize=(5, 1))
        ax.text(0.5, 0.5, "no groups with both classes", ha="center")
        ax.axis("off")
        return fig
    fig, ax = plt.subplots(figsize=(6.5, 0.28 * len(labels) + 1.2))
    n_models = len(models)
    for label, mi, mname, v, lo, hi in rows:
        yv = labels.index(label) + (mi - (n_models - 1) / 2) * 0.25
        err = None if lo is None or hi is None or np.isnan(lo) else [[v - lo], [hi - v]]
        ax.errorbar(v, yv, xerr=err, fmt="o", ms=3.5, color=PALETTE[mi % len(PALETTE)], capsize=2,
                    label=mname if mname and label == labels[0] else None)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel(metric.upper() + " (95% CI)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    if n_models > 1:
        handles = [plt.Line2D([], [], marker="o", ls="", color=PALETTE[i]) for i in range(n_models)]
        ax.legend(handles, list(models), fontsize=8, loc="best")
    ax.invert_yaxis()
    return fig


def bar_compare(values: dict[str, dict[str, float]], ylabel: str, title: str = "", ref: float | None = None):
    """Grouped bars: outer key = category on the x axis, inner key = series (e.g. teacher / student)."""
    cats = list(values)
    series = sorted({s for v in values.values() for s in v}, key=lambda s: list(next(iter(values.values()))).index(s)
                    if s in next(iter(values.values())) else 99)
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(cats) * max(1, len(series)) / 1.6), 3.4))
    w = 0.8 / max(1, len(series))
    for i, s in enumerate(series):
        ys = [values[c].get(s, np.nan) for c in cats]
        ax.bar(np.arange(len(cats)) + (i - (len(series) - 1) / 2) * w, ys, w, label=s, color=PALETTE[i % 7])
    if ref is not None:
        ax.axhline(ref, color="#888", lw=0.8, ls="--")
    ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig


def loss_curves(histories: dict[str, list[dict]], title: str = ""):
    """Train and validation loss per epoch for several runs (overfitting shows as diverging curves)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for i, (name, h) in enumerate(histories.items()):
        ep = [r["epoch"] for r in h]
        c = PALETTE[i % 7]
        if h and "train_loss" in h[0]:
            ax.plot(ep, [r.get("train_loss") for r in h], color=c, ls="-", marker="o", ms=3, label=f"{name} train")
        if h and "val_loss" in h[0]:
            ax.plot(ep, [r.get("val_loss") for r in h], color=c, ls="--", marker="s", ms=3, label=f"{name} val")
    # markers: a one-epoch run is a point, not an invisible line; epochs are whole numbers
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return fig
