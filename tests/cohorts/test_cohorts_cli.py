"""``cxrdistill cohort import|split|info`` in-process through ``cxrdistill.cli.main``, on tiny datasets with real image
files: image check (error / drop / unreadable), demographics join, synthetic-layout pass-through, splits."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from cohort_helpers import CHEXPERT_HEADER, chexpert_row, head_rows, listdir_clean, write_csv

from cxrdistill.cli import main
from cxrdistill.cohorts.schema import label_columns
from cxrdistill.cohorts.validate import load_cohort


def run_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_import_chexpert_with_image_check_and_info(tiny_chexpert, tmp_path, capsys):
    out = tmp_path / "out" / "c.parquet"
    main(["cohort", "import", "chexpert", "--csv", str(tiny_chexpert), "--out", str(out)])
    text = capsys.readouterr().out
    assert "all 8 files present (8 opened)" in text and "8 images, 3 patients" in text
    df = load_cohort(out)
    # images root guessed as the folder above CheXpert-v1.0-small/ and remembered in the Parquet metadata
    assert df.attrs["images_root"] == str(tiny_chexpert.parent.parent.resolve())
    assert df["view"].tolist() == ["AP", "LATERAL", "PA", "AP", "LATERAL", "PA", None, "AP"]  # None: frontal LL
    assert df["frontal"].tolist() == [True, False, True, True, False, True, True, True]
    assert df["sex"].tolist() == ["F"] * 3 + ["M"] * 2 + [None] + ["M"] * 2
    np.testing.assert_array_equal(df["pleural_effusion"].to_numpy(),
                                  [1, np.nan, 0, -1, 1, np.nan, 1, 0])
    js = tmp_path / "info.json"
    main(["cohort", "info", str(out), "--json", str(js)])
    text = capsys.readouterr().out
    assert "patients" in text and "pleural_effusion" in text
    info = json.loads(js.read_text())
    assert info["images"] == 8 and info["patients"] == 3 and info["views"] == {"AP": 3, "LATERAL": 2, "PA": 2, "(null)": 1}
    assert info["labels"]["pleural_effusion"] == {"pos": 3, "neg": 2, "uncertain": 1, "blank": 2,
                                                  "prevalence": 3 / 8}


def test_missing_images_error_or_drop(tiny_chexpert, tmp_path, capsys):
    root = tiny_chexpert.parent.parent
    gone = root / "CheXpert-v1.0-small/train/patient00002/study1/view2_lateral.jpg"
    gone.unlink()
    out = tmp_path / "o" / "c.parquet"
    err = run_error(["cohort", "import", "chexpert", "--csv", str(tiny_chexpert), "--out", str(out)], capsys)
    assert "1 of 8 image files are missing" in err and "patient00002/study1/view2_lateral.jpg (missing)" in err
    assert "--on-error skip" in err
    assert listdir_clean(out.parent) == []
    main(["cohort", "import", "chexpert", "--csv", str(tiny_chexpert), "--missing", "drop", "--out", str(out)])
    assert "dropped 1 rows" in capsys.readouterr().out
    assert len(load_cohort(out)) == 7
    # --no-image-check builds the table from the metadata alone
    main(["cohort", "import", "chexpert", "--csv", str(tiny_chexpert), "--no-image-check", "--out", str(out)])
    assert len(load_cohort(out)) == 8


def test_empty_and_non_image_files_are_reported(tiny_chexpert, tmp_path, capsys):
    root = tiny_chexpert.parent.parent
    (root / "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg").write_bytes(b"")
    (root / "CheXpert-v1.0-small/train/patient00003/study3/view1_frontal.jpg").write_bytes(b"not a jpeg at all")
    out = tmp_path / "c.parquet"
    err = run_error(["cohort", "import", "chexpert", "--csv", str(tiny_chexpert), "--check-sample", "-1",
                     "--out", str(out)], capsys)
    assert "2 of 8" in err and "1 missing" not in err and "1 empty, 1 unreadable" in err
    assert "view1_frontal.jpg (empty)" in err and "(not an image: UnidentifiedImageError)" in err
    assert not out.exists()


def test_synthetic_layout_passes_through_race_truth_and_mechanisms(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "synth"
    rows = []
    for k in range(6):
        rel = f"train/patient{k:05d}/study1/view1_frontal.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (32, 32), color=10 * k).save(root / rel)
        rows.append(chexpert_row(rel, sex=["Female", "Male"][k % 2], appa=["PA", "AP"][k % 2],
                                 effusion=["1.0", "0.0", "", "-1.0", "0.0", "0.0"][k],
                                 extra=[["White", "Black", "Asian"][k % 3], [1, 1, 0, 1, 0, 0][k], k % 2, 0.1 * k]))
    csv = write_csv(root / "train.csv", CHEXPERT_HEADER + ["Race", "true_pleural_effusion", "synth_site",
                                                          "synth_Contrast"], rows)
    out = tmp_path / "s.parquet"
    main(["cohort", "import", "chexpert", "--csv", str(csv), "--images-root", str(root), "--out", str(out)])
    df = load_cohort(out)
    assert set(df["dataset"]) == {"synthetic"}
    assert df["race"].tolist() == ["White", "Black", "Asian"] * 2
    assert df["true_pleural_effusion"].tolist() == [1, 1, 0, 1, 0, 0]
    assert df["synth_site"].tolist() == [0, 1] * 3 and "synth_contrast" in df.columns
    assert "true_pleural_effusion" not in label_columns(df) and "synth_site" not in label_columns(df)
    assert df["image_id"].iloc[0] == "train/patient00000/study1/view1_frontal"


def test_demographics_join_maps_race_like_glocker(tiny_chexpert, tmp_path, capsys):
    demo = pd.DataFrame({
        "PATIENT": ["patient00001", "patient00002", "patient00003", "patient09999"],
        "GENDER": ["Female", "Male", "Male", "Female"],
        "AGE_AT_CXR": [60, 70, 80, 90],
        "PRIMARY_RACE": ["White, non-Hispanic", "Black or African American", "Native Hawaiian or Other Pacific "
                         "Islander", "Asian"],
        "ETHNICITY": ["Non-Hispanic/Non-Latino", "Not Hispanic", "Hispanic/Latino", "Unknown"],
    })
    xlsx = tmp_path / "CHEXPERT DEMO.xlsx"
    demo.to_excel(xlsx, index=False)
    out = tmp_path / "c.parquet"
    main(["cohort", "import", "chexpert", "--csv", str(tiny_chexpert), "--demographics", str(xlsx),
          "--no-image-check", "--out", str(out)])
    assert "3 of 3 patients found" in capsys.readouterr().out
    df = load_cohort(out)
    by = df.groupby("patient_id")[["race", "ethnicity"]].first()
    assert by.to_dict("index") == {"patient00001": {"race": "White", "ethnicity": "Non-Hispanic"},
                                   "patient00002": {"race": "Black", "ethnicity": "Non-Hispanic"},
                                   "patient00003": {"race": "Other", "ethnicity": "Hispanic"}}


def test_race_harmonization_table():
    from cxrdistill.cohorts.harmonize import harmonize_race

    raw = pd.Series(["White", "White or Caucasian", "Black, Hispanic", "Asian - Historical Conv", "Other",
                     "Race and Ethnicity Unknown", "Patient Refused", None, "", "BLACK/CAPE VERDEAN",
                     "WHITE - RUSSIAN", "UNABLE TO OBTAIN", "PATIENT DECLINED TO ANSWER", "MULTIPLE RACE/ETHNICITY",
                     "American Indian or Alaska Native"])
    assert harmonize_race(raw).tolist() == ["White", "White", "Black", "Asian", "Other", None, None, None, None,
                                            "Black", "White", None, None, "Other", "Other"]


def test_split_cli_stratified_and_from_file(tiny_chexpert, tmp_path, capsys):
    cohort = tmp_path / "c.parquet"
    main(["cohort", "import", "chexpert", "--csv", str(tiny_chexpert), "--no-image-check", "--out", str(cohort)])
    out = tmp_path / "split.parquet"
    main(["cohort", "split", str(cohort), "--out", str(out), "--fractions", "0.5,0.2,0.3", "--stratify",
          "pleural_effusion", "--stratify", "sex", "--seed", "3"])
    text = capsys.readouterr().out
    assert "pleural_effusion=1" in text and "sex=F" in text
    df = load_cohort(out)
    assert df["split"].notna().all() and (df.groupby("patient_id")["split"].nunique() == 1).all()
    main(["cohort", "split", str(cohort), "--out", str(tmp_path / "again.parquet"), "--fractions", "0.5,0.2,0.3",
          "--stratify", "pleural_effusion", "--stratify", "sex", "--seed", "3"])
    assert load_cohort(tmp_path / "again.parquet")["split"].tolist() == df["split"].tolist()
    f = write_csv(tmp_path / "fixed.csv", ["patient_id", "split"],
                  [["patient00001", "train"], ["patient00002", "test"], ["patient00003", "valid"]])
    main(["cohort", "split", str(cohort), "--out", str(out), "--from-file", str(f)])
    assert "8 rows assigned" in capsys.readouterr().out
    assert load_cohort(out)["split"].tolist() == ["train"] * 3 + ["test"] * 2 + ["val"] * 3


def test_nih_and_padchest_cli_on_real_slices(nih_csv, padchest_csv, tmp_path, capsys):
    h, rows = head_rows(nih_csv, 500)
    nih = write_csv(tmp_path / "Data_Entry_2017_v2020.csv", h, rows[:500])
    out = tmp_path / "nih.parquet"
    main(["cohort", "import", "nih", "--csv", str(nih), "--no-image-check", "--out", str(out)])
    df = load_cohort(out)
    assert len(df) == 500 and df["patient_id"].nunique() == len({r[3] for r in rows[:500]})
    h, rows = head_rows(padchest_csv, 400)
    pc = write_csv(tmp_path / "padchest.csv", h, rows[:400])
    out = tmp_path / "pc.parquet"
    main(["cohort", "import", "padchest", "--csv", str(pc), "--no-image-check", "--all-findings", "--out", str(out)])
    df = load_cohort(out)
    assert len(df) == 400 and "copd_signs" in df.columns and "pleural_effusion" in df.columns


def test_synth_output_imports_like_real_data(tmp_path, capsys):
    """The round trip: `cxrdistill synth` → `cohort import chexpert` with every image opened."""
    out = tmp_path / "synth"
    main(["synth", str(out), "--n", "30", "--size", "32", "--seed", "1"])
    cohort = tmp_path / "s.parquet"
    main(["cohort", "import", "chexpert", "--csv", str(out / "train.csv"), "--images-root", str(out),
          "--check-sample", "-1", "--out", str(cohort)])
    assert "all 30 files present (30 opened)" in capsys.readouterr().out
    df = load_cohort(cohort)
    raw = pd.read_csv(out / "train.csv")
    assert len(df) == 30 and set(df["dataset"]) == {"synthetic"}
    assert sorted(df["race"]) == sorted(raw["Race"])
    truth = [c for c in df.columns if c.startswith("true_")]
    assert len(truth) == 14 and any(c.startswith("synth_") for c in df.columns)
    by_path = df.set_index("path")
    for _, r in raw.iterrows():
        got = by_path.loc[r["Path"]]
        assert got["true_pleural_effusion"] == r["true_pleural_effusion"]
        assert got["pleural_effusion"] == r["Pleural Effusion"] or (np.isnan(got["pleural_effusion"])
                                                                    and np.isnan(r["Pleural Effusion"]))


def test_chexpert_view_rules(tmp_path):
    from cxrdistill.cohorts.readers import READERS

    combos = [("Frontal", "AP"), ("Frontal", "PA"), ("Frontal", "LL"), ("Frontal", "RL"), ("Frontal", ""),
              ("Lateral", ""), ("Lateral", "LL"), ("", "PA"), ("", "")]
    rows = [chexpert_row(f"train/patient{k:05d}/study1/view1.jpg", fl=fl, appa=appa)
            for k, (fl, appa) in enumerate(combos)]
    df = READERS.create("chexpert", csv=write_csv(tmp_path / "v.csv", CHEXPERT_HEADER, rows))
    # Frontal/Lateral decides frontal; a frontal decubitus (LL/RL) or blank projection has no AP/PA view
    assert df["view"].tolist() == ["AP", "PA", None, None, None, "LATERAL", "LATERAL", "PA", None]
    assert df["frontal"].tolist() == [True, True, True, True, True, False, False, True, False]
