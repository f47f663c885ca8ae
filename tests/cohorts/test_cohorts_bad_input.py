"""Bad input → exit code 2 and one line naming the file, column and/or row and what to do; no output file left.

Each case builds its inputs in a tmp dir, runs the CLI in-process and checks the message and the output folder."""
from __future__ import annotations

import re

import pandas as pd
import pytest
from cohort_helpers import CHEXPERT_HEADER, chexpert_row, listdir_clean, write_csv

from cxrdistill.cli import main

P1 = "train/patient00001/study1/view1_frontal.jpg"
P2 = "train/patient00002/study1/view1_frontal.jpg"


def _chexpert(d, rows, header=CHEXPERT_HEADER, name="train.csv"):
    return write_csv(d / "in" / name, header, rows)


def _imp(csv, out, *extra):
    return ["cohort", "import", "chexpert", "--csv", str(csv), "--no-image-check", "--out", str(out), *extra]


def _cohort_parquet(d, **changes):
    df = pd.DataFrame({"image_id": ["a", "b"], "patient_id": ["A", "B"], "path": ["a.png", "b.png"],
                       "view": ["PA", "AP"], "frontal": [True, True], "sex": ["F", "M"], "age": [50.0, 60.0],
                       "race": [None, None], "split": [None, None], "edema": [1.0, 0.0]})
    for k, v in changes.items():
        df[k] = v
    f = d / "in" / "cohort.parquet"
    f.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(f, index=False)
    return f


def case_missing_column(d, out):
    header = [h for h in CHEXPERT_HEADER if h != "Sex"]
    rows = [[c for i, c in enumerate(chexpert_row(P1)) if CHEXPERT_HEADER[i] != "Sex"]]
    return _imp(_chexpert(d, rows, header), out), [r"train\.csv", r"column 'Sex'", "missing column"]


def case_unknown_sex(d, out):
    return _imp(_chexpert(d, [chexpert_row(P1), chexpert_row(P2, sex="X")]), out), \
        [r"train\.csv", "row 3", r"column 'Sex'", "unknown sex 'X'", "expected one of"]


def case_duplicate_image(d, out):
    return _imp(_chexpert(d, [chexpert_row(P1), chexpert_row(P2), chexpert_row(P1)]), out), \
        [r"train\.csv", "row 2", r"column 'Path'", "duplicate image path", r"also in row 4"]


def case_not_utf8(d, out):
    f = _chexpert(d, [chexpert_row(P1)])
    f.write_bytes(f.read_bytes().replace(b"patient00001", b"patient\xe900001"))
    return _imp(f, out), [r"train\.csv", "not UTF-8", "UTF-8"]


def case_age_not_a_number(d, out):
    return _imp(_chexpert(d, [chexpert_row(P1, age="sixty")]), out), \
        ["row 2", r"column 'Age'", "'sixty' is not a number"]


def case_label_value(d, out):
    return _imp(_chexpert(d, [chexpert_row(P1), chexpert_row(P2, effusion="2")]), out), \
        ["row 3", r"column 'Pleural Effusion'", "label value 2 is not one of", "-1 \\(uncertain\\)"]


def case_empty_cohort(d, out):
    return _imp(_chexpert(d, []), out), [r"train\.csv", "cohort is empty"]


def case_zero_byte_file(d, out):
    f = d / "in" / "train.csv"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"")
    return _imp(f, out), [r"train\.csv", "file is empty"]


def case_file_not_found(d, out):
    return _imp(d / "in" / "nope.csv", out), [r"nope\.csv", "file not found"]


def case_no_patient_in_path(d, out):
    return _imp(_chexpert(d, [chexpert_row("train/p1/study1/view1_frontal.jpg")]), out), \
        ["row 2", r"column 'Path'", "no patient id", "patient00001"]


def case_nih_unknown_finding(d, out):
    header = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
              "View Position"]
    f = write_csv(d / "in" / "Data_Entry.csv", header, [["1_000.png", "Effusion", 0, 1, 50, "M", "PA"],
                                                      ["1_001.png", "Cardiomegaly|Pleurisy", 1, 1, 51, "M", "PA"]])
    return ["cohort", "import", "nih", "--csv", str(f), "--no-image-check", "--out", str(out)], \
        [r"Data_Entry\.csv", "row 3", r"column 'Finding Labels'", "unknown finding 'Pleurisy'"]


def case_mimic_bad_subject(d, out):
    meta = write_csv(d / "in" / "meta.csv", ["dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate"],
                     [["x1", "10000032", "50414267", "PA", "21800506"],
                      ["x2", "1000abc", "50414268", "PA", "21800506"]])
    lab = write_csv(d / "in" / "lab.csv", ["subject_id", "study_id", "Edema"], [["10000032", "50414267", "1.0"]])
    return ["cohort", "import", "mimic", "--metadata", str(meta), "--labels", str(lab), "--no-image-check", "--out",
            str(out)], [r"meta\.csv", "row 3", r"column 'subject_id'", "not a whole number"]


def case_padchest_unknown_projection(d, out):
    header = ["ImageID", "ImageDir", "StudyDate_DICOM", "StudyID", "PatientID", "PatientBirth", "PatientSex_DICOM",
              "Projection", "Labels"]
    f = write_csv(d / "in" / "padchest.csv", header,
                  [["a.png", 0, 20150101, "s1", "p1", 1950, "F", "PA", "['normal']"],
                   ["b.png", 0, 20150101, "s1", "p1", 1950, "F", "OBLIQUE", "['normal']"]])
    return ["cohort", "import", "padchest", "--csv", str(f), "--no-image-check", "--out", str(out)], \
        [r"padchest\.csv", "row 3", r"column 'Projection'", "unknown projection 'OBLIQUE'"]


def case_demographics_missing_race(d, out):
    demo = write_csv(d / "in" / "demo.csv", ["PATIENT", "GENDER"], [["patient00001", "Male"]])
    return _imp(_chexpert(d, [chexpert_row(P1)]), out, "--demographics", str(demo)), \
        [r"demo\.csv", r"column 'PRIMARY_RACE'", "missing column"]


def case_images_missing_root(d, out):
    csv = _chexpert(d, [chexpert_row(P1)])
    return ["cohort", "import", "chexpert", "--csv", str(csv), "--images-root", str(d / "nowhere"),
            "--out", str(out)], \
        ["nowhere", "not a directory", "--no-image-check"]


def case_bad_missing_mode(d, out):
    return _imp(_chexpert(d, [chexpert_row(P1)]), out, "--missing", "ignore"), ["--missing must be one of"]


def case_cohort_unknown_view(d, out):
    f = _cohort_parquet(d, view=["PA", "OBLIQUE"])
    return ["cohort", "split", str(f), "--out", str(out)], \
        [r"cohort\.parquet", r"row 2 \(image_id 'b'\)", r"column 'view'", "unknown value 'OBLIQUE'"]


def case_cohort_duplicate_id(d, out):
    f = _cohort_parquet(d, image_id=["a", "a"])
    return ["cohort", "split", str(f), "--out", str(out)], [r"column 'image_id'", "duplicate image_id"]


def case_cohort_wrong_type(d, out):
    f = _cohort_parquet(d, age=["fifty", "60"])
    return ["cohort", "split", str(f), "--out", str(out)], [r"column 'age'", "wrong type", "'fifty'"]


def case_cohort_frontal_contradiction(d, out):
    f = _cohort_parquet(d, view=["PA", "LATERAL"])
    return ["cohort", "split", str(f), "--out", str(out)], [r"column 'frontal'", "contradicts view 'LATERAL'"]


def case_split_file_conflict(d, out):
    f = _cohort_parquet(d)
    s = write_csv(d / "in" / "split.csv", ["image_id", "split"], [["a", "train"], ["a", "test"]])
    return ["cohort", "split", str(f), "--out", str(out), "--from-file", str(s)], \
        [r"split\.csv", "row 3", "listed in two splits"]


def case_split_file_leak(d, out):
    f = _cohort_parquet(d, patient_id=["A", "A"])
    s = write_csv(d / "in" / "split.csv", ["image_id", "split"], [["a", "train"], ["b", "test"]])
    return ["cohort", "split", str(f), "--out", str(out), "--from-file", str(s)], \
        [r"split\.csv", "patient 'A' has images in splits test and train"]


def case_split_unknown_name(d, out):
    f = _cohort_parquet(d)
    s = write_csv(d / "in" / "split.csv", ["image_id", "split"], [["a", "train"], ["b", "holdout"]])
    return ["cohort", "split", str(f), "--out", str(out), "--from-file", str(s)], \
        ["row 3", r"column 'split'", "unknown split 'holdout'"]


def case_split_unknown_stratify(d, out):
    f = _cohort_parquet(d)
    return ["cohort", "split", str(f), "--out", str(out), "--stratify", "effusion"], \
        [r"column 'effusion'", "no such column to stratify by"]


CASES = [v for k, v in sorted(globals().items()) if k.startswith("case_")]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__[5:] for c in CASES])
def test_bad_input_gives_one_line_and_no_output(case, tmp_path, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    argv, expected = case(tmp_path, out_dir / "cohort.parquet")
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for pattern in expected:
        assert re.search(pattern, err), (pattern, err)
    assert listdir_clean(out_dir) == [], "a failed command must leave no output (not even a temp file)"


def test_at_least_twenty_bad_input_cases():
    assert len(CASES) >= 20
