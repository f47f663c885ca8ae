"""MIMIC-CXR-JPG + MIMIC-IV reader on a small, realistic fixture set (real column layouts, 12 images)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrdistill.cohorts.readers import READERS
from cxrdistill.errors import InputError


def _read(files, **kw):
    args = {k: files[k] for k in ("metadata", "labels", "patients", "admissions")}
    args.update(kw)
    return READERS.create("mimic", **args).set_index("image_id")


def test_mimic_paths_views_labels(mimic_files):
    df = _read(mimic_files)
    assert len(df) == 12 and df.index.is_monotonic_increasing
    r = df.loc["02aa804e-bde0afdd-112c0b34-7bc16630-4e384014"]
    assert r["path"] == "files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg"
    assert (r["patient_id"], r["study_id"], r["view"], r["dataset"]) == ("10000032", "50414267", "PA", "mimic")
    views = df["view"].tolist()
    assert views.count("PA") == 4 and views.count("AP") == 3 and views.count("LATERAL") == 3  # LL → LATERAL
    assert df["view"].isna().sum() == 2  # "AP AXIAL" and blank → null, not frontal
    assert not df.loc["a4c7e8f1-11111111-22222222-33333333-44444444", "frontal"]
    # labels are per study, copied to each image of the study; raw values kept
    ap = df.loc["68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714"]
    assert (ap["pleural_effusion"], ap["edema"], ap["cardiomegaly"]) == (-1.0, 1.0, 0.0)
    assert np.isnan(ap["pneumonia"])
    # a study missing from the label file → NaN labels, reported in the notes
    lonely = df.loc["09b2d3e6-11111111-22222222-33333333-44444444"]
    assert lonely[["no_finding", "pneumothorax", "pleural_effusion"]].isna().all()
    notes = READERS.create("mimic", metadata=mimic_files["metadata"], labels=mimic_files["labels"]).attrs["notes"]
    assert any("1 images belong to studies absent" in n for n in notes)


def test_mimic_age_sex_from_anchor_year(mimic_files):
    df = _read(mimic_files)
    # age = anchor_age + (StudyDate year - anchor_year)
    assert df.loc["02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "age"] == 52  # 2180 - 2180
    assert df.loc["2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "age"] == 54  # study in 2182
    assert df.loc["096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4", "age"] == 86
    assert df.loc["096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4", "sex"] == "M"
    # subject 10000980 is not in patients.csv → sex and age unknown
    assert df.loc[df["patient_id"] == "10000980", "sex"].isna().all()
    assert df.loc[df["patient_id"] == "10000980", "age"].isna().all()


def test_mimic_race_and_inconsistent_exclusion(mimic_files):
    df = _read(mimic_files)
    race = df.groupby("patient_id")["race"].first().to_dict()
    assert race == {"10000032": "White", "10000764": "White", "10000898": "Black", "10000935": "Asian",
                    "10000980": "Other"}
    kept = _read(mimic_files, exclude_inconsistent_race=True)
    # 10000764 has WHITE, UNKNOWN and WHITE - OTHER EUROPEAN; 10000935's blank admission does not count
    assert set(kept["patient_id"]) == {"10000032", "10000898", "10000935", "10000980"}
    assert len(kept) == 12 - 2


def test_mimic_official_split_and_negbio_style(mimic_files, tmp_path):
    df = _read(mimic_files, split_csv=mimic_files["split_csv"])
    assert df["split"].value_counts().to_dict() == {"train": 4, "val": 2, "test": 6}
    # a NegBio-style file has the same layout; a subset of findings works too
    lab = pd.read_csv(mimic_files["labels"])[["subject_id", "study_id", "Edema", "No Finding"]]
    neg = tmp_path / "mimic-cxr-2.0.0-negbio.csv"
    lab.to_csv(neg, index=False)
    df2 = READERS.create("mimic", metadata=mimic_files["metadata"], labels=neg)
    assert [c for c in df2.columns if c in ("edema", "no_finding", "pneumonia")] == ["no_finding", "edema"]


def test_mimic_exclusion_needs_admissions(mimic_files):
    with pytest.raises(InputError, match="admissions"):
        READERS.create("mimic", metadata=mimic_files["metadata"], labels=mimic_files["labels"],
                       exclude_inconsistent_race=True)


def test_mimic_cli_import(mimic_files, tmp_path, capsys):
    from cxrdistill.cli import main
    from cxrdistill.cohorts.validate import load_cohort

    out = tmp_path / "m.parquet"
    main(["cohort", "import", "mimic", "--metadata", str(mimic_files["metadata"]), "--labels",
          str(mimic_files["labels"]), "--patients", str(mimic_files["patients"]), "--admissions",
          str(mimic_files["admissions"]), "--exclude-inconsistent-race", "--no-image-check", "--out", str(out)])
    text = capsys.readouterr().out
    assert "excluded 1 patients (2 images)" in text and "10 images" in text
    assert len(load_cohort(out)) == 10
