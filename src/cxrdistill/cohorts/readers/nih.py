"""NIH ChestX-ray14 (``Data_Entry_2017*.csv[.gz]``) → cohort table.

``Finding Labels`` is split on ``|``; each of the 14 findings and ``No Finding`` becomes a binary 1/0 column under the
shared snake_case name. Image paths are the file names (``00000001_000.png``) relative to the folder that holds all
images (the official tarballs extract into one ``images/`` folder: pass it as ``--images-root``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from cxrdistill.cohorts.harmonize import (SEX_MAP, assemble, check_unique, finish, line_of, map_values, parse_number,
                                          require_columns, required_text)
from cxrdistill.cohorts.readers import READERS
from cxrdistill.errors import InputError
from cxrdistill.storage.io import read_table

# NIH name → shared name (CheXpert's where the finding is the same; NIH's own in snake_case otherwise).
NIH_LABELS: dict[str, str] = {
    "No Finding": "no_finding",
    "Atelectasis": "atelectasis",
    "Cardiomegaly": "cardiomegaly",
    "Consolidation": "consolidation",
    "Edema": "edema",
    "Effusion": "pleural_effusion",
    "Emphysema": "emphysema",
    "Fibrosis": "fibrosis",
    "Hernia": "hernia",
    "Infiltration": "infiltration",
    "Mass": "mass",
    "Nodule": "nodule",
    "Pleural_Thickening": "pleural_thickening",
    "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax",
}
META = ["Image Index", "Finding Labels", "Patient ID", "Patient Age", "Patient Gender", "View Position"]


@READERS.register("nih")
def read_nih(csv: str | os.PathLike) -> pd.DataFrame:
    """NIH ``Data_Entry_2017_v2020.csv`` (or the 2017 original) → cohort table with binary labels."""
    p = Path(csv)
    raw = read_table(p, dtype={"Image Index": str, "Finding Labels": str, "Patient ID": str,
                               "Patient Gender": str, "View Position": str})
    require_columns(raw, META, p, "NIH Data_Entry csv")
    image = required_text(raw["Image Index"], path=p, column="Image Index", message="missing image name")
    check_unique(image, path=p, column="Image Index", what="image name")
    pid = required_text(raw["Patient ID"], path=p, column="Patient ID", message="missing patient id")
    pid = pid.str.lstrip("0").mask(lambda s: s == "", "0").astype(str)  # "00012" and "12" are one patient

    findings = required_text(raw["Finding Labels"], path=p, column="Finding Labels", message="blank Finding Labels",
                             hint="NIH rows list findings separated by '|', or 'No Finding'")
    tokens = findings.str.split("|").explode().str.strip()
    unknown = ~tokens.isin(list(NIH_LABELS))
    if unknown.any():
        i = tokens.index[unknown.to_numpy()][0]
        raise InputError(f"unknown finding {tokens[unknown].iloc[0]!r}", path=p, column="Finding Labels",
                         row=line_of(i), hint=f"expected findings among: {', '.join(NIH_LABELS)}")
    pos = pd.crosstab(tokens.index, tokens).reindex(index=raw.index, columns=list(NIH_LABELS), fill_value=0)
    labels = {NIH_LABELS[c]: (pos[c].to_numpy() > 0).astype(np.float64) for c in NIH_LABELS}
    labels = pd.DataFrame(labels, index=raw.index)

    view = map_values(raw["View Position"], {"PA": "PA", "AP": "AP"}, path=p, column="View Position",
                      what="view position")
    df = assemble(image_id=image, patient_id=pid, path=image, view=view,
                  sex=map_values(raw["Patient Gender"], SEX_MAP, path=p, column="Patient Gender", what="sex"),
                  age=parse_number(raw["Patient Age"], path=p, column="Patient Age", what="age"),
                  dataset="nih", labels=labels)
    return finish(df, p)

