"""Colours shared by every figure of a report (no pyplot import)."""
from __future__ import annotations

# One fixed colour per model in every figure of a report (teacher always dark blue, student always orange …), and a
# separate palette for the groups of an attribute, with no hue in common, so that a colour never means both.
MODEL_COLORS = {"teacher": "#1f4e8c", "student": "#d9731a", "student fine-tuned": "#7b3fa0",
                "student_finetuned": "#7b3fa0"}
_MODEL_FALLBACK = ["#3d7d8c", "#8c2d2d", "#5c6670", "#b0882a"]
GROUP_PALETTE = ["#1b9e77", "#e7298a", "#a6761d", "#17becf", "#e6ab02", "#7f7f7f", "#66a61e", "#f781bf",
                 "#8c564b", "#bcbd22"]


def model_color(name: str, i: int = 0) -> str:
    """The colour of a model, the same in every figure (unknown names: a fixed fallback by position)."""
    key = str(name).strip()
    for cand in (key, key.lower(), key.lower().replace("_", " ")):
        if cand in MODEL_COLORS:
            return MODEL_COLORS[cand]
    return _MODEL_FALLBACK[i % len(_MODEL_FALLBACK)]


def group_colors(groups, ordered: bool = False) -> dict[str, object]:
    """Colours of an attribute's groups: the group palette, or shades of one green for ordered bins (age)."""
    from matplotlib import colormaps

    groups = [str(g) for g in groups]
    if ordered and len(groups) > 1:
        cmap = colormaps["YlGn"]
        return {g: cmap(0.35 + 0.6 * i / (len(groups) - 1)) for i, g in enumerate(groups)}
    return {g: GROUP_PALETTE[i % len(GROUP_PALETTE)] for i, g in enumerate(groups)}
