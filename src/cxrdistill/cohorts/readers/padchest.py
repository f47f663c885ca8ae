"""PadChest (``PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv[.gz]``) → cohort table.

PadChest labels every image with a list of report terms (``"['normal']"``, ``"['cardiomegaly', 'pleural effusion']"``).
By default the table gets one binary column per *harmonized* finding, 1 when any of its PadChest terms is listed
(``PADCHEST_GROUPS``: CheXpert's names where the finding is the same, NIH's names for NIH findings). With
``all_findings=True`` every other term also gets its own snake_case column (``copd_signs``, ``aortic_elongation``, …).
Images whose ``Labels`` cell is blank are unlabelled and dropped unless ``keep_unlabelled=True`` (labels NaN then).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from cxrdistill.cohorts.harmonize import (assemble, check_unique, clean_str, finish, line_of, map_values,
                                          parse_number, require_columns, required_text, snake_case, to_object)
from cxrdistill.cohorts.readers import READERS
from cxrdistill.errors import InputError
from cxrdistill.storage.io import read_table

# Harmonized name → the PadChest terms that mean it (the term itself and its sub-types in PadChest's label tree,
# Bustos et al. 2020). Terms may count for two names (hydropneumothorax: effusion and pneumothorax).
PADCHEST_GROUPS: dict[str, list[str]] = {
    "no_finding": ["normal"],
    "enlarged_cardiomediastinum": ["mediastinal enlargement", "superior mediastinal enlargement"],
    "cardiomegaly": ["cardiomegaly"],
    "lung_lesion": ["nodule", "multiple nodules", "mass", "pulmonary mass", "lung metastasis"],
    "edema": ["pulmonary edema"],
    "consolidation": ["consolidation"],
    "pneumonia": ["pneumonia", "atypical pneumonia"],
    "atelectasis": ["atelectasis", "laminar atelectasis", "lobar atelectasis", "segmental atelectasis",
                    "round atelectasis", "total atelectasis", "atelectasis basal"],
    "pneumothorax": ["pneumothorax", "hydropneumothorax"],
    "pleural_effusion": ["pleural effusion", "loculated pleural effusion", "loculated fissural effusion",
                         "hydropneumothorax"],
    "fracture": ["fracture", "rib fracture", "callus rib fracture", "clavicle fracture", "humeral fracture",
                 "vertebral fracture"],
    "support_devices": ["pacemaker", "single chamber device", "dual chamber device", "electrical device",
                        "endotracheal tube", "tracheostomy tube", "NSG tube", "chest drain tube", "gastrostomy tube",
                        "nephrostomy tube", "ventriculoperitoneal drain tube", "double J stent", "catheter",
                        "central venous catheter", "central venous catheter via jugular vein",
                        "central venous catheter via subclavian vein", "central venous catheter via umbilical vein",
                        "reservoir central venous catheter", "artificial heart valve", "artificial mitral heart valve",
                        "artificial aortic heart valve"],
    # NIH ChestX-ray14 findings
    "emphysema": ["emphysema"],
    "fibrosis": ["pulmonary fibrosis"],
    "hernia": ["hiatal hernia"],
    "infiltration": ["infiltrates"],
    "mass": ["mass", "pulmonary mass"],
    "nodule": ["nodule", "multiple nodules"],
    "pleural_thickening": ["pleural thickening", "apical pleural thickening", "calcified pleural thickening"],
}
# ``Projection`` → view. AP_horizontal is a supine AP; COSTAL (rib views), EXCLUDE and UNK have no chest view.
PROJECTIONS: dict[str, str | None] = {"PA": "PA", "AP": "AP", "AP_horizontal": "AP", "L": "LATERAL",
                                      "COSTAL": None, "EXCLUDE": None, "UNK": None}
# PatientSex_DICOM: "O" (other, 18 images) → null.
SEXES: dict[str, str | None] = {"M": "M", "F": "F", "O": None}
META = ["ImageID", "ImageDir", "PatientID", "PatientSex_DICOM", "PatientBirth", "StudyDate_DICOM", "Projection",
        "Labels"]


def parse_term_lists(labels: pd.Series) -> pd.Series:
    """``"['a', ' b']"`` → one stripped term per row of a long Series (index repeats); empty terms dropped."""
    s = clean_str(labels)
    bad = s.notna() & ~s.str.fullmatch(r"\[.*\]", na=False)
    if bad.any():
        i = s.index[bad.to_numpy()][0]
        raise InputError(f"cannot read label list {s.loc[i]!r}", path=None, column="Labels", row=line_of(i),
                         hint="PadChest Labels look like \"['normal']\"")
    terms = s.str.findall(r"'([^']*)'").explode().str.strip()
    return terms[terms.notna() & (terms != "")]


@READERS.register("padchest")
def read_padchest(csv: str | os.PathLike, all_findings: bool = False, keep_unlabelled: bool = False) -> pd.DataFrame:
    """PadChest csv → cohort table (binary labels, harmonized names; see the module docstring)."""
    p = Path(csv)
    raw = read_table(p, dtype=str, usecols=lambda c: c in set(META) | {"StudyID"})
    require_columns(raw, META, p, "PadChest csv")
    notes: list[str] = []
    unlabelled = clean_str(raw["Labels"]).isna()
    if unlabelled.any() and not keep_unlabelled:
        notes.append(f"dropped {int(unlabelled.sum())} images with a blank Labels cell (keep them with "
                     "--keep-unlabelled)")
        raw = raw[~unlabelled.to_numpy()]
    image = required_text(raw["ImageID"], path=p, column="ImageID", message="missing ImageID")
    check_unique(image, path=p, column="ImageID", what="ImageID")
    pid = required_text(raw["PatientID"], path=p, column="PatientID", message="missing PatientID")
    folder = clean_str(raw["ImageDir"]).str.replace(r"\.0$", "", regex=True)
    path = (folder.fillna("") + "/" + image).str.lstrip("/").astype(str)

    try:
        terms = parse_term_lists(raw["Labels"])
    except InputError as e:
        raise InputError(str(e).split(": ", 1)[-1], path=p, column="Labels", row=e.row) from None
    columns: dict[str, np.ndarray] = {}
    present = pd.crosstab(terms.index, terms) > 0 if len(terms) else pd.DataFrame(index=raw.index)
    present = present.reindex(index=raw.index, fill_value=False)
    labelled = ~clean_str(raw["Labels"]).isna().to_numpy()
    for name, group in PADCHEST_GROUPS.items():
        cols = [t for t in group if t in present.columns]
        hit = present[cols].any(axis=1).to_numpy() if cols else np.zeros(len(raw), bool)
        columns[name] = np.where(labelled, hit.astype(np.float64), np.nan)
    if all_findings:
        grouped = {t for g in PADCHEST_GROUPS.values() for t in g}
        for t in sorted(present.columns):
            name = snake_case(t)
            if t in grouped or not name:
                continue
            if name in columns:
                name = f"padchest_{name}"
            columns[name] = np.where(labelled, present[t].to_numpy().astype(np.float64), np.nan)
    labels = pd.DataFrame(columns, index=raw.index)

    year = parse_number(raw["StudyDate_DICOM"], path=p, column="StudyDate_DICOM", what="study date") // 10000
    birth = parse_number(raw["PatientBirth"], path=p, column="PatientBirth", what="birth year")
    age = year - birth
    age = age.where(age >= 0)  # a birth year after the study date is a recording error → unknown
    df = assemble(image_id=image, patient_id=pid.astype(str), path=path,
                  view=map_values(raw["Projection"], PROJECTIONS, path=p, column="Projection", what="projection",
                                  case_insensitive=False),
                  sex=map_values(raw["PatientSex_DICOM"], SEXES, path=p, column="PatientSex_DICOM", what="sex"),
                  age=age, study_id=to_object(clean_str(raw["StudyID"])) if "StudyID" in raw.columns else None,
                  dataset="padchest", labels=labels)
    return finish(df, p, notes)
