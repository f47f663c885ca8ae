"""Patient-level splits on the real CheXpert metadata: no leakage, fractions and stratification close to target,
determinism; fixed splits from a file; the leakage check."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrdistill.cohorts.splits import (assign_splits, check_no_leakage, parse_fractions, split_from_file,
                                       split_summary)
from cxrdistill.errors import CxrError, InputError

STRAT = ["pleural_effusion", "pneumothorax", "sex", "age"]


@pytest.fixture(scope="module")
def split_full(chexpert_df):
    return assign_splits(chexpert_df, (0.7, 0.1, 0.2), stratify=STRAT, seed=7)


def test_split_is_patient_level_and_close_to_target(split_full, chexpert_df):
    df = split_full
    check_no_leakage(df)
    assert (df.groupby("patient_id")["split"].nunique() == 1).all()
    assert df["split"].notna().all()
    summ = split_summary(df, STRAT).set_index("split")
    for s, f in zip(["train", "val", "test"], [0.7, 0.1, 0.2]):
        assert abs(summ.loc[s, "fraction"] - f) < 0.0005, s
        for c in summ.columns[3:]:  # label prevalences, sex and age-quartile shares
            assert abs(summ.loc[s, c] - summ.loc["all", c]) < 0.0005, (s, c)
    assert list(df.columns) == list(chexpert_df.columns) and df["image_id"].equals(chexpert_df["image_id"])
    assert chexpert_df["split"].isna().all()  # the input table is not modified


def test_split_deterministic_and_row_order_free(split_full, chexpert_df):
    sub = chexpert_df[chexpert_df["patient_id"] < "patient05000"]
    a = assign_splits(sub, stratify=STRAT, seed=7)
    b = assign_splits(sub.sample(frac=1.0, random_state=1), stratify=STRAT, seed=7).loc[a.index]
    assert (a["split"] == b["split"]).all()
    c = assign_splits(sub, stratify=STRAT, seed=8)
    assert (a["split"] != c["split"]).mean() > 0.2


def test_stratification_beats_an_unstratified_split(chexpert_df):
    """On 2,000 patients, val-split prevalence of a rare finding deviates less when stratified (over 5 seeds)."""
    sub = chexpert_df[chexpert_df["patient_id"] < "patient02001"]
    dev = {True: [], False: []}
    for seed in range(5):
        for strat in (True, False):
            s = assign_splits(sub, stratify=["pneumothorax", "sex"] if strat else [], seed=seed)
            summ = split_summary(s, ["pneumothorax", "sex"]).set_index("split")
            dev[strat].append(abs(summ.loc["val", "pneumothorax=1"] - summ.loc["all", "pneumothorax=1"])
                              + abs(summ.loc["val", "sex=F"] - summ.loc["all", "sex=F"]))
    assert np.mean(dev[True]) < 0.5 * np.mean(dev[False])
    assert max(dev[True]) < 0.01


def test_fractions_parsing_and_two_way_split(chexpert_df):
    assert parse_fractions("0.8,0.2") == (0.8, 0.0, 0.2)
    sub = chexpert_df[chexpert_df["patient_id"] < "patient00500"]
    s = assign_splits(sub, "0.8,0.2", seed=0)
    assert set(s["split"]) == {"train", "test"}
    for bad in ("0.5,0.5,0.5", "a,b", "0.7,0.1,0.1,0.1", "0,0.5,0.5", "1.2,-0.2"):
        with pytest.raises(CxrError):
            parse_fractions(bad)
    with pytest.raises(InputError, match="'nonexistent'"):
        assign_splits(sub, stratify=["nonexistent"])


def _toy():
    return pd.DataFrame({"image_id": ["a1", "a2", "b1", "c1", "c2"], "patient_id": ["A", "A", "B", "C", "C"],
                         "split": [None] * 5})


def test_split_from_file_by_patient_and_image(tmp_path):
    f = tmp_path / "by_patient.csv"
    pd.DataFrame({"patient_id": ["A", "B", "Z"], "split": ["Training", "validate", "test"]}).to_csv(f, index=False)
    out, stats = split_from_file(_toy(), f)
    assert out["split"].tolist() == ["train", "train", "val", None, None]
    assert stats == {"key": "patient_id", "matched": 3, "unlisted": 2, "unknown_ids": 1}
    g = tmp_path / "by_image.csv"
    pd.DataFrame({"image_id": ["a1", "a2", "c1"], "split": ["train", "test", "test"]}).to_csv(g, index=False)
    out, _ = split_from_file(_toy(), g)
    with pytest.raises(InputError, match="patient 'A' has images in splits test and train"):
        check_no_leakage(out, g)


def test_leakage_check_counts_every_leaked_patient():
    df = _toy()
    df["split"] = ["train", "test", "train", "val", "train"]
    with pytest.raises(InputError, match=r"patient 'A'.*\(1 more patients too\)"):
        check_no_leakage(df)
    df["split"] = ["train", None, "test", "val", None]  # null splits do not count
    check_no_leakage(df)
