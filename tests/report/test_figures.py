"""Figures a reviewer can read: CIs on every AUC bar, exact axis labels, one colour per model, a group palette that
shares no colour with the models, and a comparison chart limited to the largest changes."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np

from cxrdistill.report.colors import GROUP_PALETTE, MODEL_COLORS, group_colors, model_color
from cxrdistill.report.plots import bar_compare, plt

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from features_fixtures import make_audit  # noqa: E402


def test_bars_carry_their_cis_and_models_keep_their_colours():
    vals = {"edema": {"teacher": 0.8, "student": 0.7, "student fine-tuned": 0.75},
            "effusion": {"teacher": 0.9, "student": 0.85, "student fine-tuned": 0.88}}
    cis = {k: {m: (v - 0.05, v + 0.04) for m, v in d.items()} for k, d in vals.items()}
    fig = bar_compare(vals, "test AUC (95% bootstrap CI)", cis=cis, labels={"student fine-tuned": "fine-tuned (end "
                                                                                                  "to end)"})
    ax = fig.axes[0]
    bars = [p for p in ax.patches]
    assert len(bars) == 6
    colours = {mcolors.to_hex(b.get_facecolor()) for b in bars}
    assert colours == {MODEL_COLORS["teacher"], MODEL_COLORS["student"], MODEL_COLORS["student fine-tuned"]}
    # one error bar per bar, spanning the CI exactly
    segs = [s for c in ax.collections for s in c.get_segments()]
    spans = sorted(round(float(s[1][1] - s[0][1]), 6) for s in segs if len(s) == 2 and s[0][0] == s[1][0])
    assert spans == [0.09] * 6
    assert ax.get_ylabel() == "test AUC (95% bootstrap CI)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["teacher", "student", "fine-tuned (end to end)"]
    plt.close(fig)


def test_group_palette_never_uses_a_model_colour():
    models = {mcolors.to_hex(c) for c in MODEL_COLORS.values()}
    assert not models & {mcolors.to_hex(c) for c in GROUP_PALETTE}
    assert model_color("teacher") == model_color("Teacher") and model_color("student_finetuned") == \
        MODEL_COLORS["student fine-tuned"]
    ordered = group_colors(["[0,40)", "[40,60)", "[60,80)"], ordered=True)
    assert len({mcolors.to_hex(c) for c in ordered.values()}) == 3


def test_comparison_chart_shows_the_largest_changes_only(tmp_path):
    from cxrdistill.evaluation.compare import compare_dirs
    from cxrdistill.report import feature_plots as fp

    dirs = []
    for name, scale in (("teacher", 1.0), ("student", 0.5)):
        audit = {"tasks": {}}
        for k in range(12):  # 12 tasks x 4 tested quantities = 48 rows
            audit["tasks"].update(make_audit(0.02 * (k + 1) * scale, se=0.01, task=f"task{k:02d}")["tasks"])
        d = tmp_path / name
        d.mkdir()
        (d / "audit.json").write_text(json.dumps(audit))
        dirs.append(d)
    res = compare_dirs(dirs)
    n_all = len(res.tidy[res.tidy["test"] == "z"].drop_duplicates(["metric", "task", "attribute", "group_a"]))
    assert n_all >= 45
    top = fp.top_changes(res.tidy, ["teacher", "student"])
    assert len(top) == 15 and all("task11" in t or "task10" in t or "task09" in t or "task08" in t for t in top[:8])
    fig = fp.compare_forest(res.tidy, ["teacher", "student"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == top
    assert f"15 largest changes of {n_all}" in ax.get_title()
    lines = [c for c in ax.get_children() if hasattr(c, "get_color") and hasattr(c, "get_xdata")]
    assert {mcolors.to_hex(ln.get_color()) for ln in lines if len(np.atleast_1d(ln.get_xdata())) > 1} >= {
        MODEL_COLORS["teacher"], MODEL_COLORS["student"]}
