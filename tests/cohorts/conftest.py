"""Fixtures for the cohort tests: the real metadata files shipped in the torchxrayvision wheel (read once per session),
and small realistic MIMIC / CheXpert-layout fixture sets written to tmp dirs."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from cohort_helpers import CHEXPERT_HEADER, chexpert_row, read_rows, write_csv


def _xrv_data() -> Path:
    spec = importlib.util.find_spec("torchxrayvision")  # test-time source of real metadata only; not imported
    assert spec is not None and spec.origin, "torchxrayvision (dev dependency) must be installed for these tests"
    return Path(spec.origin).parent / "data"


@pytest.fixture(scope="session")
def xrv_data() -> Path:
    return _xrv_data()


@pytest.fixture(scope="session")
def chexpert_csv(xrv_data) -> Path:
    return xrv_data / "chexpert_train.csv.gz"


@pytest.fixture(scope="session")
def nih_csv(xrv_data) -> Path:
    return xrv_data / "Data_Entry_2017_v2020.csv.gz"


@pytest.fixture(scope="session")
def padchest_csv(xrv_data) -> Path:
    return xrv_data / "PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"


@pytest.fixture(scope="session")
def chexpert_rows(chexpert_csv):
    return read_rows(chexpert_csv)


@pytest.fixture(scope="session")
def nih_rows(nih_csv):
    return read_rows(nih_csv)


@pytest.fixture(scope="session")
def padchest_raw(padchest_csv):
    """PadChest's columns the reader uses, as raw text (no NA parsing: "nan" cells stay "nan")."""
    import pandas as pd

    cols = ["ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth", "PatientSex_DICOM",
            "Projection", "Labels"]
    return pd.read_csv(padchest_csv, usecols=cols, dtype=str, keep_default_na=False)[cols]


@pytest.fixture(scope="session")
def chexpert_df(chexpert_csv):
    from cxrdistill.cohorts.readers import READERS

    return READERS.create("chexpert", csv=chexpert_csv)


@pytest.fixture(scope="session")
def nih_df(nih_csv):
    from cxrdistill.cohorts.readers import READERS

    return READERS.create("nih", csv=nih_csv)


@pytest.fixture(scope="session")
def padchest_df(padchest_csv):
    from cxrdistill.cohorts.readers import READERS

    return READERS.create("padchest", csv=padchest_csv)


# --- MIMIC fixture set: 5 subjects, 7 studies, 12 images -----------------------------------------------------------
MIMIC_FINDINGS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
                  "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
                  "Pneumothorax", "Support Devices"]


@pytest.fixture
def mimic_files(tmp_path) -> dict[str, Path]:
    d = tmp_path / "mimic"
    meta_header = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
                   "Columns", "StudyDate", "StudyTime"]
    meta = [
        ["02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", 10000032, 50414267, "CHEST (PA AND LAT)", "PA", 3056, 2544, 21800506, 213014.531],
        ["174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", 10000032, 50414267, "CHEST (PA AND LAT)", "LATERAL", 3056, 2544, 21800506, 213014.531],
        ["2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", 10000032, 53189527, "CHEST (PA AND LAT)", "PA", 3056, 2544, 21820626, 165500.312],
        ["68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714", 10000032, 53911762, "CHEST (PORTABLE AP)", "AP", 2705, 2539, 21800723, 80556.875],
        ["096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4", 10000764, 57375967, "CHEST (PA AND LAT)", "PA", 3056, 2544, 21321015, 91302.937],
        ["b79e55c3-735ce5ac-64412506-cdc9ea79-f1af521f", 10000764, 57375967, "CHEST (PA AND LAT)", "LL", 3056, 2544, 21321015, 91302.937],
        ["a4c7e8f1-11111111-22222222-33333333-44444444", 10000898, 50771383, "CHEST (PORTABLE AP)", "AP AXIAL", 2539, 3050, 21500102, 120000.0],
        ["c5d8f9a2-11111111-22222222-33333333-44444444", 10000898, 50771383, "CHEST (PORTABLE AP)", "", 2539, 3050, 21500102, 120000.0],
        ["d6e9a0b3-11111111-22222222-33333333-44444444", 10000935, 51178377, "CHEST (PA AND LAT)", "PA", 3056, 2544, 21870813, 101500.0],
        ["e7f0b1c4-11111111-22222222-33333333-44444444", 10000935, 51178377, "CHEST (PA AND LAT)", "LATERAL", 3056, 2544, 21870813, 101500.0],
        ["f8a1c2d5-11111111-22222222-33333333-44444444", 10000980, 54577367, "CHEST (PORTABLE AP)", "AP", 2539, 3050, 21900101, 60000.0],
        ["09b2d3e6-11111111-22222222-33333333-44444444", 10000980, 59999999, "CHEST (PORTABLE AP)", "AP", 2539, 3050, 21900505, 60000.0],
    ]
    lab_rows = []
    vals = {  # study → {finding: value}
        50414267: {"No Finding": 1.0}, 53189527: {"No Finding": 1.0},
        53911762: {"Pleural Effusion": -1.0, "Edema": 1.0, "Cardiomegaly": 0.0},
        57375967: {"Pneumonia": -1.0, "Consolidation": 1.0}, 50771383: {"Pleural Effusion": 1.0, "Support Devices": 1.0},
        51178377: {"Atelectasis": -1.0, "Pleural Effusion": 0.0}, 54577367: {"Pneumothorax": 1.0},
        # 59999999 deliberately absent from the label file
    }
    subj = {50414267: 10000032, 53189527: 10000032, 53911762: 10000032, 57375967: 10000764, 50771383: 10000898,
            51178377: 10000935, 54577367: 10000980}
    for study, v in vals.items():
        lab_rows.append([subj[study], study] + [v.get(f, "") for f in MIMIC_FINDINGS])
    patients = [
        [10000032, "F", 52, 2180, "2014 - 2016", ""],
        [10000764, "M", 86, 2132, "2014 - 2016", ""],
        [10000898, "F", 30, 2150, "2008 - 2010", ""],
        [10000935, "M", 60, 2187, "2017 - 2019", ""],
        # 10000980 absent from patients
    ]
    adm_header = ["subject_id", "hadm_id", "admittime", "admission_type", "race"]
    admissions = [
        [10000032, 1, "2180-05-06", "EW EMER.", "WHITE"],
        [10000032, 2, "2180-06-26", "EW EMER.", "WHITE"],
        [10000764, 3, "2132-10-14", "OBSERVATION ADMIT", "WHITE"],
        [10000764, 4, "2133-01-01", "OBSERVATION ADMIT", "UNKNOWN"],
        [10000764, 5, "2133-02-01", "OBSERVATION ADMIT", "WHITE - OTHER EUROPEAN"],
        [10000898, 6, "2150-01-02", "URGENT", "BLACK/AFRICAN AMERICAN"],
        [10000935, 7, "2187-08-13", "URGENT", "ASIAN - CHINESE"],
        [10000935, 8, "2187-09-13", "URGENT", ""],
        [10000980, 9, "2190-01-01", "URGENT", "HISPANIC/LATINO - PUERTO RICAN"],
    ]
    split = [[m[0], m[2], m[1], s] for m, s in zip(meta, ["train"] * 4 + ["validate"] * 2 + ["test"] * 6)]
    return {
        "metadata": write_csv(d / "mimic-cxr-2.0.0-metadata.csv", meta_header, meta),
        "labels": write_csv(d / "mimic-cxr-2.0.0-chexpert.csv", ["subject_id", "study_id"] + MIMIC_FINDINGS, lab_rows),
        "patients": write_csv(d / "patients.csv", ["subject_id", "gender", "anchor_age", "anchor_year",
                                                   "anchor_year_group", "dod"], patients),
        "admissions": write_csv(d / "admissions.csv", adm_header, admissions),
        "split_csv": write_csv(d / "mimic-cxr-2.0.0-split.csv", ["dicom_id", "study_id", "subject_id", "split"], split),
    }


# --- a tiny CheXpert-layout dataset with real image files ----------------------------------------------------------
@pytest.fixture
def tiny_chexpert(tmp_path) -> Path:
    """``root/CheXpert-v1.0-small/train.csv`` with 8 images (3 patients) stored as small JPEGs under ``root``."""
    from PIL import Image

    root = tmp_path / "data"
    base = root / "CheXpert-v1.0-small"
    rows = []
    specs = [("patient00001", 1, "frontal", "Female", "AP", "1.0"), ("patient00001", 1, "lateral", "Female", "", ""),
             ("patient00001", 2, "frontal", "Female", "PA", "0.0"), ("patient00002", 1, "frontal", "Male", "AP", "-1.0"),
             ("patient00002", 1, "lateral", "Male", "", "1.0"), ("patient00003", 1, "frontal", "Unknown", "PA", ""),
             ("patient00003", 2, "frontal", "Male", "LL", "1.0"), ("patient00003", 3, "frontal", "Male", "AP", "0.0")]
    for k, (pid, study, kind, sex, appa, eff) in enumerate(specs):
        rel = f"CheXpert-v1.0-small/train/{pid}/study{study}/view{1 if kind == 'frontal' else 2}_{kind}.jpg"
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (16, 16), color=40 + 20 * k).save(f, format="JPEG")
        rows.append(chexpert_row(rel, sex=sex, age=50 + k, fl="Frontal" if kind == "frontal" else "Lateral",
                                 appa=appa, effusion=eff))
    write_csv(base / "train.csv", CHEXPERT_HEADER, rows)
    return base / "train.csv"


