"""CheXpert (``train.csv`` / ``valid.csv``, optionally gzipped) + the CheXpert demographics file → cohort table.

Also reads the synthetic dataset, which is written in CheXpert's layout with extra ``Race``, ``true_<finding>`` and
``synth_*`` columns (passed through).
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from cxrdistill.cohorts.harmonize import (SEX_MAP, assemble, check_unique, clean_str, finish, harmonize_ethnicity,
                                          harmonize_race, line_of, map_values, parse_labels, parse_number,
                                          require_columns, required_text, snake_case)
from cxrdistill.cohorts.readers import READERS
from cxrdistill.errors import InputError
from cxrdistill.storage.io import read_table

CHEXPERT_LABELS = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
]
META = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA"]
DEMO_COLUMNS = ["PATIENT", "PRIMARY_RACE"]


def chexpert_image_id(path: pd.Series) -> pd.Series:
    """``CheXpert-v1.0-small/train/patient1/study1/view1_frontal.jpg`` → ``train/patient1/study1/view1_frontal``.

    Dropping the release folder and the extension makes ids equal across the full and the small release."""
    return path.str.replace(r"^CheXpert-v[^/]*/", "", regex=True).str.replace(r"\.[A-Za-z0-9]+$", "", regex=True)


def chexpert_view(fl: pd.Series, appa: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(view, frontal) from ``Frontal/Lateral`` and ``AP/PA``.

    The dataset's own ``Frontal/Lateral`` column decides ``frontal`` (``AP/PA`` only when it is blank).
    ``view`` is ``AP``/``PA``, ``LATERAL`` for lateral images, and null for frontal images without a usable
    projection: a blank ``AP/PA`` or a decubitus one (``LL``/``RL``: 16 + 1 frontal rows in train.csv)."""
    is_appa = appa.isin(["AP", "PA"])
    lateral = fl == "Lateral"
    view = pd.Series(None, index=fl.index, dtype=object)
    view[(is_appa & ~lateral).to_numpy()] = appa[is_appa & ~lateral]
    view[lateral.to_numpy()] = "LATERAL"
    frontal = (fl == "Frontal") | (fl.isna() & is_appa)
    view[(frontal & ~is_appa).to_numpy()] = None
    return view, frontal.astype(bool)


def read_demographics(path: str | os.PathLike) -> pd.DataFrame:
    """CHEXPERT DEMO.xlsx (or .csv): one row per patient → columns patient_id, race, ethnicity."""
    p = Path(path)
    demo = read_table(p, dtype=str)
    require_columns(demo, DEMO_COLUMNS, p, "CheXpert demographics file")
    pid = required_text(demo["PATIENT"], path=p, column="PATIENT", message="missing patient id")
    out = pd.DataFrame({
        "patient_id": pid.astype(str),
        "race": harmonize_race(demo["PRIMARY_RACE"]),
        "ethnicity": harmonize_ethnicity(demo["ETHNICITY"]) if "ETHNICITY" in demo.columns else None,
    })
    dup = out["patient_id"].duplicated(keep=False)
    if dup.any():
        conflicting = out[dup].groupby("patient_id")[["race", "ethnicity"]].nunique(dropna=False).max(axis=1) > 1
        if conflicting.any():
            first = conflicting.index[conflicting.to_numpy()][0]
            i = out.index[(out["patient_id"] == first).to_numpy()][1]
            raise InputError(f"patient {first!r} appears twice with different race/ethnicity", path=p,
                             column="PATIENT", row=line_of(i), hint="keep one row per patient")
        out = out.drop_duplicates("patient_id")
    return out.set_index("patient_id")


@READERS.register("chexpert")
def read_chexpert(csv: str | os.PathLike, demographics: str | os.PathLike | None = None,
                  dataset: str | None = None) -> pd.DataFrame:
    """CheXpert ``train.csv``/``valid.csv`` (+ optional demographics file for race/ethnicity) → cohort table.

    ``dataset`` defaults to ``"chexpert"``, or ``"synthetic"`` when the file carries ``true_*`` columns.
    """
    p = Path(csv)
    raw = read_table(p, dtype={"Path": str, "Sex": str, "Frontal/Lateral": str, "AP/PA": str, "Race": str,
                               "Ethnicity": str})
    require_columns(raw, META + CHEXPERT_LABELS, p, "CheXpert csv")
    path = required_text(raw["Path"], path=p, column="Path", message="missing image path")
    check_unique(path, path=p, column="Path", what="image path")
    patient = path.str.extract(r"(patient\d+)", expand=False)
    if patient.isna().any():
        i = patient.index[patient.isna().to_numpy()][0]
        raise InputError(f"no patient id in path {path.loc[i]!r}", path=p, column="Path", row=line_of(i),
                         hint="CheXpert paths look like train/patient00001/study1/view1_frontal.jpg")
    study = path.str.extract(r"(patient\d+/study\d+)", expand=False)
    fl = map_values(raw["Frontal/Lateral"], {"Frontal": "Frontal", "Lateral": "Lateral"}, path=p,
                    column="Frontal/Lateral", what="view type")
    appa = map_values(raw["AP/PA"], {"AP": "AP", "PA": "PA", "LL": "LL", "RL": "RL"}, path=p, column="AP/PA",
                      what="projection")
    view, frontal = chexpert_view(fl, appa)
    labels = {snake_case(c): parse_labels(raw[c], path=p, column=c) for c in CHEXPERT_LABELS}

    notes: list[str] = []
    race = clean_str(raw["Race"]).astype(object) if "Race" in raw.columns else None
    if race is not None:
        race = race.where(race.notna(), None)
    eth = clean_str(raw["Ethnicity"]).astype(object) if "Ethnicity" in raw.columns else None
    if eth is not None:
        eth = eth.where(eth.notna(), None)
    if demographics is not None:
        demo = read_demographics(demographics)
        found = patient.isin(demo.index)
        race = patient.map(demo["race"]).astype(object)
        race = race.where(found & race.notna(), None)
        eth = patient.map(demo["ethnicity"]).astype(object)
        eth = eth.where(found & eth.notna(), None)
        n_pat = patient.nunique()
        n_found = patient[found].nunique()
        notes.append(f"demographics: {n_found} of {n_pat} patients found in {Path(demographics).name}"
                     + ("; the csv's Race column was replaced" if "Race" in raw.columns else ""))

    extra: dict[str, pd.Series] = {}
    for c in raw.columns:
        name = str(c)
        if name.lower().startswith("true_"):
            new = "true_" + snake_case(name[5:])
        elif name.lower().startswith("synth_"):
            new = name.lower()
        else:
            continue
        if new in extra:
            raise InputError(f"two columns map to {new!r}", path=p, column=name, hint="rename one of them")
        extra[new] = parse_labels(raw[c], path=p, column=name, binary=True) if new.startswith("true_") else raw[c]
    if dataset is None:
        dataset = "synthetic" if any(k.startswith("true_") for k in extra) else "chexpert"
    df = assemble(image_id=chexpert_image_id(path), patient_id=patient, path=path, view=view, frontal=frontal,
                  sex=map_values(raw["Sex"], SEX_MAP, path=p, column="Sex", what="sex"),
                  age=parse_number(raw["Age"], path=p, column="Age", what="age"), race=race, ethnicity=eth,
                  study_id=study, dataset=dataset, labels=labels, extra=extra)
    check_unique(df["image_id"], path=p, column="Path", what="image id (path without extension)")
    return finish(df, p, notes)
