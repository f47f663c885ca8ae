"""MIMIC-CXR-JPG + MIMIC-IV demographics → cohort table.

Files: ``mimic-cxr-2.0.0-metadata.csv[.gz]`` (one row per image: ``dicom_id, subject_id, study_id, ViewPosition,
StudyDate``), a per-study label file in CheXpert or NegBio style (``mimic-cxr-2.0.0-chexpert.csv`` /
``-negbio.csv``: ``subject_id, study_id`` + findings as 1/0/-1/blank), and optionally MIMIC-IV ``patients.csv``
(``subject_id, gender, anchor_age, anchor_year``) and ``admissions.csv`` (``subject_id, race``; ``ethnicity`` in
MIMIC-IV 1.0), and the official ``mimic-cxr-2.0.0-split.csv``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from cxrdistill.cohorts.harmonize import (SEX_MAP, assemble, clean_str, finish, harmonize_race, line_of, map_values,
                                          parse_labels, parse_number, require_columns, required_text, snake_case)
from cxrdistill.cohorts.readers import READERS
from cxrdistill.errors import InputError
from cxrdistill.storage.io import read_table

# ViewPosition → view. Decubitus / oblique / axial variants ("AP AXIAL", "PA LLD", "LAO", "SWIMMERS", …) → null.
VIEWS: dict[str, str] = {"PA": "PA", "AP": "AP", "LATERAL": "LATERAL", "LL": "LATERAL", "RL": "LATERAL",
                         "XTABLE LATERAL": "LATERAL"}
SPLIT_NAMES = {"train": "train", "validate": "val", "val": "val", "valid": "val", "test": "test"}


def _ids(series: pd.Series, *, path, column: str) -> pd.Series:
    s = clean_str(series).str.replace(r"\.0$", "", regex=True)
    bad = s.isna() | ~s.str.fullmatch(r"\d+", na=False)
    if bad.any():
        i = s.index[bad.to_numpy()][0]
        raise InputError(f"{column} {series.loc[i]!r} is not a whole number", path=path, column=column,
                         row=line_of(i), hint="MIMIC ids are integers such as 10000032")
    return s.str.lstrip("0").astype(str)


def _one_row_per(key: pd.Series, *, path, column: str, what: str) -> None:
    dup = key.duplicated()
    if dup.any():
        i = key.index[dup.to_numpy()][0]
        raise InputError(f"{what} {key.loc[i]!r} appears twice", path=path, column=column, row=line_of(i),
                         hint=f"keep one row per {what}")


def patient_race(subject: pd.Series, race_raw: pd.Series) -> tuple[pd.Series, set[str]]:
    """Race per patient from their admissions, and the patients whose recorded race strings differ.

    The patient's race is the harmonized category recorded most often (unknown ignored; a tie → null).
    "Inconsistent" follows Glocker et al.'s MIMIC code (credited there to R. Tibor Schirrmeister): more than one
    distinct race string across the patient's admissions (blank cells ignored)."""
    raw = clean_str(race_raw)
    keep = raw.notna().to_numpy()
    subj, raw = subject[keep], raw[keep]
    inconsistent = raw.groupby(subj.to_numpy()).nunique()
    inconsistent_ids = set(inconsistent.index[(inconsistent > 1).to_numpy()])
    cat = harmonize_race(raw)
    known = cat.notna().to_numpy()
    if not known.any():
        return pd.Series(dtype=object), inconsistent_ids
    ct = pd.crosstab(subj[known].to_numpy(), cat[known].to_numpy())
    top = ct.max(axis=1)
    unique_top = ct.eq(top, axis=0).sum(axis=1) == 1
    race = ct.idxmax(axis=1).astype(object).where(unique_top, None)
    return race, inconsistent_ids


@READERS.register("mimic")
def read_mimic(metadata: str | os.PathLike, labels: str | os.PathLike, patients: str | os.PathLike | None = None,
               admissions: str | os.PathLike | None = None, exclude_inconsistent_race: bool = False,
               split_csv: str | os.PathLike | None = None) -> pd.DataFrame:
    """MIMIC-CXR-JPG metadata + label file (+ MIMIC-IV patients/admissions, + official split) → cohort table.

    age = ``anchor_age + (StudyDate year − anchor_year)`` (both years are MIMIC's shifted years, so the shift
    cancels). Images of studies absent from the label file get NaN labels.
    """
    mp = Path(metadata)
    meta = read_table(mp, dtype=str)
    require_columns(meta, ["dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate"], mp,
                    "MIMIC-CXR-JPG metadata csv")
    dicom = required_text(meta["dicom_id"], path=mp, column="dicom_id", message="missing dicom_id")
    _one_row_per(dicom, path=mp, column="dicom_id", what="dicom_id")
    subject = _ids(meta["subject_id"], path=mp, column="subject_id")
    study = _ids(meta["study_id"], path=mp, column="study_id")
    year = parse_number(meta["StudyDate"], path=mp, column="StudyDate", what="study date") // 10000
    path = "files/p" + subject.str[:2] + "/p" + subject + "/s" + study + "/" + dicom + ".jpg"
    view = clean_str(meta["ViewPosition"]).str.upper().map(VIEWS)
    view = view.astype(object).where(view.notna(), None)
    notes: list[str] = []

    lp = Path(labels)
    lab = read_table(lp, dtype={"subject_id": str, "study_id": str})
    require_columns(lab, ["subject_id", "study_id"], lp, "MIMIC-CXR label csv")
    finding_cols = [c for c in lab.columns if c not in ("subject_id", "study_id")]
    if not finding_cols:
        raise InputError("no finding columns", path=lp, hint="a CheXpert- or NegBio-style label file has "
                         "subject_id, study_id and one column per finding")
    lkey = _ids(lab["subject_id"], path=lp, column="subject_id") + "/" + _ids(lab["study_id"], path=lp,
                                                                              column="study_id")
    _one_row_per(lkey, path=lp, column="study_id", what="study")
    parsed = pd.DataFrame({snake_case(c): parse_labels(lab[c], path=lp, column=str(c)) for c in finding_cols})
    parsed.index = lkey.to_numpy()
    key = subject + "/" + study
    label_df = parsed.reindex(key.to_numpy())
    label_df.index = meta.index
    n_unlabelled_studies = int((~key.isin(parsed.index)).sum())
    if n_unlabelled_studies:
        notes.append(f"{n_unlabelled_studies} images belong to studies absent from {lp.name} (labels NaN)")

    sex = age = race = None
    if patients is not None:
        pp = Path(patients)
        pat = read_table(pp, dtype={"subject_id": str, "gender": str})
        require_columns(pat, ["subject_id", "gender", "anchor_age", "anchor_year"], pp, "MIMIC-IV patients csv")
        psub = _ids(pat["subject_id"], path=pp, column="subject_id")
        _one_row_per(psub, path=pp, column="subject_id", what="subject_id")
        psex = pd.Series(map_values(pat["gender"], SEX_MAP, path=pp, column="gender", what="gender").to_numpy(),
                         index=psub.to_numpy())
        anchor_age = parse_number(pat["anchor_age"], path=pp, column="anchor_age", what="anchor_age")
        anchor_year = parse_number(pat["anchor_year"], path=pp, column="anchor_year", what="anchor_year", minimum=None)
        offset = pd.Series((anchor_age - anchor_year).to_numpy(), index=psub.to_numpy())
        sex = subject.map(psex).astype(object)
        sex = sex.where(sex.notna(), None)
        age = year + subject.map(offset)
        age = age.where(age >= 0)
        found = subject.isin(psub.to_numpy())
        notes.append(f"patients: {subject[found].nunique()} of {subject.nunique()} subjects found in {pp.name}")
    if admissions is not None:
        ap = Path(admissions)
        adm = read_table(ap, dtype=str)
        col = "race" if "race" in adm.columns else "ethnicity" if "ethnicity" in adm.columns else "race"
        require_columns(adm, ["subject_id", col], ap, "MIMIC-IV admissions csv")
        asub = _ids(adm["subject_id"], path=ap, column="subject_id")
        per_patient, inconsistent = patient_race(asub, adm[col])
        race = subject.map(per_patient).astype(object)
        race = race.where(race.notna(), None)
        if exclude_inconsistent_race:
            drop = subject.isin(list(inconsistent)).to_numpy()
            notes.append(f"excluded {int(subject[drop].nunique())} patients ({int(drop.sum())} images) whose race "
                         f"differs across admissions")
        else:
            notes.append(f"{len(inconsistent)} patients have differing race across admissions "
                         "(excluded with --exclude-inconsistent-race)")
    elif exclude_inconsistent_race:
        raise InputError("--exclude-inconsistent-race needs the admissions file",
                         hint="pass --admissions admissions.csv")

    df = assemble(image_id=dicom, patient_id=subject, path=path, view=view, sex=sex, age=age, race=race,
                  study_id=study, dataset="mimic", labels=label_df, index=meta.index)
    if split_csv is not None:
        sp = Path(split_csv)
        spl = read_table(sp, dtype=str)
        require_columns(spl, ["dicom_id", "split"], sp, "MIMIC-CXR split csv")
        names = map_values(spl["split"], SPLIT_NAMES, path=sp, column="split", what="split")
        by_dicom = pd.Series(names.to_numpy(), index=clean_str(spl["dicom_id"]).astype(str).to_numpy())
        by_dicom = by_dicom[~by_dicom.index.duplicated()]
        df["split"] = dicom.map(by_dicom).astype(object)
        df["split"] = df["split"].where(df["split"].notna(), None)
    if admissions is not None and exclude_inconsistent_race:
        df = df[~subject.isin(list(inconsistent)).to_numpy()]
    return finish(df, mp, notes)
