"""Contact sheet of a synthetic dataset: a grid of images, each annotated with sex, age, race, view and findings."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from cxrdistill.storage.io import atomic_path
from cxrdistill.synth.sample import CHEXPERT_LABELS
from cxrdistill.synth.scenario import FINDINGS

ABBREV = {
    "no_finding": "NoFind", "enlarged_cardiomediastinum": "ECM", "cardiomegaly": "Cmeg", "lung_opacity": "Opac",
    "lung_lesion": "Lesion", "edema": "Edema", "consolidation": "Consol", "pneumonia": "Pneum",
    "atelectasis": "Atel", "pneumothorax": "PTX", "pleural_effusion": "Eff", "pleural_other": "PlOth",
    "fracture": "Fx", "support_devices": "Dev",
}
MAIN = ["pleural_effusion", "cardiomegaly", "pneumothorax", "edema", "consolidation", "lung_opacity",
        "support_devices", "lung_lesion", "atelectasis", "fracture", "pleural_other", "enlarged_cardiomediastinum"]


def pick_rows(csv: pd.DataFrame, k: int = 24, seed: int = 0) -> list[int]:
    """A varied selection: one image per finding where possible, both views and all groups, then normal ones."""
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for f in MAIN:
        cand = np.flatnonzero((csv[f"true_{f}"] == 1).to_numpy())
        cand = [int(i) for i in cand if i not in chosen]
        if cand and len(chosen) < k // 2:
            chosen.append(int(rng.choice(cand)))
    normal = [int(i) for i in np.flatnonzero((csv["true_no_finding"] == 1).to_numpy()) if i not in chosen]
    rest = [int(i) for i in range(len(csv)) if i not in chosen]
    for pool in (normal[: max(0, k // 4)], list(rng.permutation(rest))):
        for i in pool:
            if len(chosen) >= k:
                break
            if i not in chosen:
                chosen.append(int(i))
    return sorted(chosen[:k])


def _label(row: pd.Series) -> tuple[str, str]:
    sex = {"Male": "M", "Female": "F"}.get(row["Sex"], "?")
    line1 = f"{sex} {int(row['Age'])} {row.get('Race', '')} {row['AP/PA']}"
    parts = []
    for f in FINDINGS:
        if f == "no_finding" or not row[f"true_{f}"]:
            continue
        obs = row[CHEXPERT_LABELS[f]]
        tag = ABBREV[f]
        if obs == 0:
            tag += "(0)"  # true positive labelled negative (underdiagnosed)
        elif obs == -1:
            tag += "?"
        parts.append(tag)
    if row.get("synth_shortcut", 0):
        parts.append("[sc]")
    return line1, " ".join(parts) or "normal"


def contact_sheet(root: "str | os.PathLike", csv: pd.DataFrame, out: "str | os.PathLike", cols: int = 6,
                  rows: int = 4, tile: int = 128) -> Path:
    """Write a ``rows``×``cols`` grid of images from ``root`` (paths in ``csv['Path']``) with annotations."""
    root = Path(root)
    idx = pick_rows(csv, cols * rows)
    font = ImageFont.load_default()
    text_h = 26
    sheet = Image.new("L", (cols * tile, rows * (tile + text_h)), 0)
    draw = ImageDraw.Draw(sheet)
    for k, i in enumerate(idx):
        row = csv.iloc[i]
        im = Image.open(root / row["Path"]).convert("L")
        if im.size != (tile, tile):
            im = im.resize((tile, tile), Image.BILINEAR)
        x, y = (k % cols) * tile, (k // cols) * (tile + text_h)
        sheet.paste(im, (x, y))
        l1, l2 = _label(row)
        draw.text((x + 2, y + tile + 1), l1, fill=230, font=font)
        if draw.textlength(l2, font=font) > tile - 4:
            while l2 and draw.textlength(l2 + "..", font=font) > tile - 4:
                l2 = l2[:-1]
            l2 += ".."
        draw.text((x + 2, y + tile + 13), l2, fill=255, font=font)
    out = Path(out)
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG", optimize=True)
    return out
