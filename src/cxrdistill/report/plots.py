"""Matplotlib figures for the study report (each returns a Figure; the caller embeds it with its reading)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cxrdistill.report.colors import group_colors, model_color  # noqa: E402

PALETTE = ["#2b6cb0", "#c05621", "#2f855a", "#9b2c2c", "#6b46c1", "#b7791f", "#4a5568"]


def roc_by_group(preds, task: str, attribute: str, title: str = ""):
    """ROC curves of one task, one curve per group of ``attribute`` (plus overall), from a predictions table."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(4.2, 4))
    y, p = preds[f"y_{task}"], preds[f"p_{task}"]
    ok = y.notna() & p.notna()
    curves = [("all", ok)] + [(str(g), ok & (preds[attribute] == g))
                              for g in sorted(preds[attribute].dropna().unique(), key=str)]
    colors = group_colors([name for name, _ in curves[1:]])
    for name, m in curves:
        yy, pp = y[m].to_numpy(int), p[m].to_numpy(float)
        if yy.size == 0 or yy.min() == yy.max():
            continue
        fpr, tpr, _ = roc_curve(yy, pp)
        ax.plot(fpr, tpr, color="black" if name == "all" else colors[name],
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
        ax.errorbar(v, yv, xerr=err, fmt="o", ms=3.5, color=model_color(mname, mi), capsize=2,
                    label=mname if mname and label == labels[0] else None)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel(metric.upper() + " (95% CI)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    if n_models > 1:
        handles = [plt.Line2D([], [], marker="o", ls="", color=model_color(m, i)) for i, m in enumerate(models)]
        ax.legend(handles, list(models), fontsize=8, loc="best")
    ax.invert_yaxis()
    return fig


def bar_compare(values: dict[str, dict[str, float]], ylabel: str, title: str = "", ref: float | None = None,
                cis: dict[str, dict[str, tuple]] | None = None, labels: dict[str, str] | None = None,
                ylim: tuple[float, float] | None = None):
    """Grouped bars: outer key = category on the x axis, inner key = model (each in its fixed colour).

    ``cis[category][model] = (low, high)`` draws the interval on the bar; ``labels`` renames models in the legend
    (e.g. "student (linear probe)")."""
    cats = list(values)
    series = list(dict.fromkeys(s for v in values.values() for s in v))
    cis = cis or {}
    labels = labels or {}
    fig, ax = plt.subplots(figsize=(max(4.5, 0.9 * len(cats) * max(1, len(series)) / 1.6), 3.6))
    w = 0.8 / max(1, len(series))
    for i, s in enumerate(series):
        ys = np.array([np.nan if values[c].get(s) is None else values[c][s] for c in cats], dtype=float)
        lo = np.array([_ci_part((cis.get(c) or {}).get(s), 0) for c in cats], dtype=float)
        hi = np.array([_ci_part((cis.get(c) or {}).get(s), 1) for c in cats], dtype=float)
        err = np.vstack([np.clip(ys - lo, 0, None), np.clip(hi - ys, 0, None)])
        has = np.isfinite(err).all(axis=0)
        x = np.arange(len(cats)) + (i - (len(series) - 1) / 2) * w
        ax.bar(x, ys, w, label=labels.get(s, s), color=model_color(s, i))
        if has.any():
            ax.errorbar(x[has], ys[has], yerr=err[:, has], fmt="none", ecolor="#222", elinewidth=1, capsize=2.5)
    if ref is not None:
        ax.axhline(ref, color="#888", lw=0.8, ls="--")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig


def _ci_part(ci, k: int) -> float:
    if not ci or ci[k] is None:
        return np.nan
    return float(ci[k])


def loss_curves(histories: dict[str, list[dict]], title: str = ""):
    """Train and validation loss per epoch for several runs (overfitting shows as diverging curves).

    Every epoch is a marker (a one-epoch run is a point, not an invisible line), the axis shows whole epochs only,
    and short runs are drawn side by side around their epoch so that their points do not hide one another."""
    from matplotlib.ticker import FixedLocator, MaxNLocator

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    runs = [(name, h) for name, h in histories.items() if h]
    epochs = sorted({int(r["epoch"]) for _, h in runs for r in h})
    dodge = 0.25 / max(1, len(runs) - 1) if len(epochs) <= 3 and len(runs) > 1 else 0.0
    for i, (name, h) in enumerate(runs):
        ep = np.array([r["epoch"] for r in h], dtype=float) + (i - (len(runs) - 1) / 2) * dodge
        c = PALETTE[i % 7]
        if "train_loss" in h[0]:
            ax.plot(ep, [r.get("train_loss") for r in h], color=c, ls="-", marker="o", ms=4,
                    label=f"{name} train".strip())
        if "val_loss" in h[0]:
            ax.plot(ep, [r.get("val_loss") for r in h], color=c, ls="--", marker="s", ms=4, mfc="white",
                    label=f"{name} val".strip())
    if epochs:
        ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)
        ax.xaxis.set_major_locator(FixedLocator(epochs) if len(epochs) <= 10 else MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    return fig
