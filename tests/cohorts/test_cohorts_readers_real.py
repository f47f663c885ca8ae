"""Readers on the real metadata shipped in the torchxrayvision wheel: exact row, patient, view, sex and label counts,
each recomputed here with the csv module and plain Python (no pandas, different logic from the readers)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from cxrdistill.cohorts.readers import READERS
from cxrdistill.cohorts.schema import CHEXPERT_FINDINGS, CORE_COLUMNS
from cxrdistill.cohorts.validate import validate_cohort


def test_all_four_readers_registered():
    assert READERS.names() == ["chexpert", "mimic", "nih", "padchest"]


# --- CheXpert ------------------------------------------------------------------------------------------------------
def test_chexpert_counts_match_independent_count(chexpert_df, chexpert_rows):
    header, rows = chexpert_rows
    col = {name: i for i, name in enumerate(header)}
    df = chexpert_df
    assert len(df) == len(rows) == 223414
    assert df["patient_id"].nunique() == len({r[col["Path"]].split("/")[2] for r in rows})
    assert df["study_id"].nunique() == len({"/".join(r[col["Path"]].split("/")[2:4]) for r in rows})

    def view(r):
        if r[col["Frontal/Lateral"]] == "Lateral":
            return "LATERAL"
        return r[col["AP/PA"]] if r[col["AP/PA"]] in ("AP", "PA") else None

    expected_views = Counter(view(r) for r in rows)
    assert dict(df["view"].value_counts()) == {k: v for k, v in expected_views.items() if k is not None}
    assert int(df["view"].isna().sum()) == expected_views[None]
    assert expected_views["LATERAL"] == 32387
    # CheXpert's own Frontal/Lateral column decides: the 16 LL + 1 RL decubitus rows are frontal images
    decubitus = [r for r in rows if r[col["AP/PA"]] in ("LL", "RL")]
    assert len(decubitus) == 17 and all(r[col["Frontal/Lateral"]] == "Frontal" for r in decubitus)
    assert all(r[col["Path"]].endswith("_frontal.jpg") for r in decubitus)
    dec_ids = [r[col["Path"]].replace("CheXpert-v1.0-small/", "")[: -len(".jpg")] for r in decubitus]
    dec = df.set_index("image_id").loc[dec_ids]
    assert dec["frontal"].all() and dec["view"].isna().all()
    n_frontal = sum(r[col["Frontal/Lateral"]] == "Frontal" for r in rows)
    assert int(df["frontal"].sum()) == n_frontal == 191027
    sexes = Counter({"Male": "M", "Female": "F"}.get(r[col["Sex"]]) for r in rows)
    assert int((df["sex"] == "M").sum()) == sexes["M"]
    assert int((df["sex"] == "F").sum()) == sexes["F"]
    assert int(df["sex"].isna().sum()) == sexes[None] == 1  # the one "Unknown"
    for name in header[5:]:
        snake = name.lower().replace(" ", "_")
        counts = Counter(r[col[name]] for r in rows)
        v = df[snake].to_numpy()
        assert int((v == 1).sum()) == counts["1.0"], name
        assert int((v == 0).sum()) == counts["0.0"], name
        assert int((v == -1).sum()) == counts["-1.0"], name
        assert int(np.isnan(v).sum()) == counts[""], name
    ages = [float(r[col["Age"]]) for r in rows]
    assert df["age"].sum() == pytest.approx(sum(ages))


def test_chexpert_table_shape_and_ids(chexpert_df):
    df = chexpert_df
    assert list(df.columns[: len(CORE_COLUMNS)]) == CORE_COLUMNS
    assert [c for c in df.columns if c in CHEXPERT_FINDINGS] == CHEXPERT_FINDINGS
    assert df["image_id"].is_unique and df["image_id"].is_monotonic_increasing  # sorted deterministically
    first = df[df["image_id"] == "train/patient00001/study1/view1_frontal"].iloc[0]
    assert first["path"] == "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    assert (first["patient_id"], first["view"], bool(first["frontal"]), first["sex"], first["age"]) == \
        ("patient00001", "AP", True, "F", 68.0)
    assert first["no_finding"] == 1 and first["pneumothorax"] == 0 and np.isnan(first["edema"])
    assert (df["frontal"] == df["view"].isin(["PA", "AP"]) | df["view"].isna()).all()
    assert set(df["dataset"]) == {"chexpert"} and df["race"].isna().all()
    validate_cohort(df)  # idempotent on its own output


# --- NIH -----------------------------------------------------------------------------------------------------------
def test_nih_counts_match_independent_count(nih_df, nih_rows):
    header, rows = nih_rows
    col = {name: i for i, name in enumerate(header)}
    df = nih_df
    assert len(df) == len(rows) == 112120
    assert df["patient_id"].nunique() == len({int(r[col["Patient ID"]]) for r in rows}) == 30805
    assert dict(df["view"].value_counts()) == dict(Counter(r[col["View Position"]] for r in rows))
    assert dict(df["sex"].value_counts()) == dict(Counter(r[col["Patient Gender"]] for r in rows))
    found = Counter()
    for r in rows:
        found.update(set(r[col["Finding Labels"]].split("|")))
    renamed = {"Effusion": "pleural_effusion", "Pleural_Thickening": "pleural_thickening", "No Finding": "no_finding"}
    assert len(found) == 15
    for nih_name, n in found.items():
        snake = renamed.get(nih_name, nih_name.lower())
        v = df[snake].to_numpy()
        assert int((v == 1).sum()) == n, nih_name
        assert int((v == 0).sum()) == len(rows) - n, nih_name  # binary: no -1, no blanks
    row = df.set_index("image_id").loc["00000001_002.png"]
    assert (row["cardiomegaly"], row["pleural_effusion"], row["emphysema"], row["no_finding"]) == (1, 1, 0, 0)
    assert row["path"] == "00000001_002.png" and row["patient_id"] == "1" and row["age"] == 58


# --- PadChest ------------------------------------------------------------------------------------------------------
def _term_sets(labels):
    """"['a', ' b']" → {"a", "b"} by plain string splitting (the reader uses a regex)."""
    return labels.map(lambda s: {t.strip() for t in s[2:-2].split("', '")} - {""})


def test_padchest_counts_match_independent_count(padchest_df, padchest_raw):
    from cxrdistill.cohorts.readers.padchest import PADCHEST_GROUPS

    raw = padchest_raw
    labelled = raw[raw["Labels"].str.startswith("[")]
    assert len(raw) == 160861 and len(labelled) == 160861 - 103  # 103 cells read "nan": unlabelled, dropped
    df = padchest_df
    assert len(df) == len(labelled)
    assert df["patient_id"].nunique() == len(set(labelled["PatientID"]))
    proj = {"PA": "PA", "AP": "AP", "AP_horizontal": "AP", "L": "LATERAL"}
    views = Counter(proj.get(p) for p in labelled["Projection"])
    assert dict(df["view"].value_counts()) == {k: v for k, v in views.items() if k is not None}
    assert int(df["view"].isna().sum()) == views[None]  # COSTAL, EXCLUDE, UNK
    sexes = Counter(labelled["PatientSex_DICOM"])
    assert int((df["sex"] == "M").sum()) == sexes["M"] and int((df["sex"] == "F").sum()) == sexes["F"]
    assert int(df["sex"].isna().sum()) == sexes["O"] + sexes["nan"] == 18 + 4  # "O" (other) and "nan" cells
    terms = _term_sets(labelled["Labels"])
    for name, group in PADCHEST_GROUPS.items():
        group = set(group)
        n = sum(1 for t in terms if t & group)
        assert int((df[name] == 1).sum()) == n, name
        assert int((df[name] == 0).sum()) == len(labelled) - n, name
    assert int(df["no_finding"].sum()) == sum("normal" in t for t in terms) == 50616
    # age = study year - birth year; path = ImageDir/ImageID
    r = labelled[labelled["PatientBirth"] != ""].iloc[0]
    got = df.set_index("image_id").loc[r["ImageID"]]
    assert got["age"] == int(r["StudyDate_DICOM"][:4]) - float(r["PatientBirth"])
    assert got["path"] == f"{r['ImageDir']}/{r['ImageID']}"
    assert padchest_df.attrs["notes"] and "103" in padchest_df.attrs["notes"][0]


def test_padchest_all_findings_and_unlabelled_on_a_real_slice(padchest_raw, tmp_path):
    """--all-findings and --keep-unlabelled on the first 3,000 real rows plus 5 real unlabelled ones."""
    raw = padchest_raw
    unlabelled = raw[~raw["Labels"].str.startswith("[")].head(5)
    subset = pd.concat([raw.head(3000), unlabelled])
    f = tmp_path / "pc.csv"
    subset.to_csv(f, index=False)
    df = READERS.create("padchest", csv=f, all_findings=True, keep_unlabelled=True)
    assert len(df) == len(subset)
    term_counts = Counter(t for ts in _term_sets(raw.head(3000)["Labels"]) for t in ts)
    assert int(df["copd_signs"].sum()) == term_counts["COPD signs"] > 0
    assert int(df["aortic_elongation"].sum()) == term_counts["aortic elongation"] > 0
    ids = set(unlabelled["ImageID"])
    assert df[df["image_id"].isin(ids)]["cardiomegaly"].isna().all()
    assert df[~df["image_id"].isin(ids)]["cardiomegaly"].notna().all()
