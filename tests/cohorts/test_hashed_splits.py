"""The seeded patient-hash split shared by the fairness comparison (a cohort without a split) and the
fair-distillation study: its definition, no patient in two splits, stable when the cohort grows."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from cxrdistill.cohorts.splits import hashed_splits, patient_hash


def test_hashed_splits_follow_their_definition_and_keep_patients_together():
    pats = np.array([f"p{i // 3}" for i in range(3000)])  # three images per patient
    u = np.array([int(hashlib.sha256(f"7:{p}".encode()).hexdigest()[:8], 16) / 2 ** 32 for p in pats])
    np.testing.assert_array_equal(patient_hash(pats, 7), u)
    s = hashed_splits(pats, (0.7, 0.1, 0.2), seed=7)
    np.testing.assert_array_equal(s, np.where(u < 0.7, "train", np.where(u < 0.8, "val", "test")))
    assert pd.Series(s).groupby(pats).nunique().max() == 1
    share = pd.Series(s).value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.7, abs=0.05) and share["val"] == pytest.approx(0.1, abs=0.03)
    # a patient keeps its split when others join, and the seed changes the draw
    np.testing.assert_array_equal(hashed_splits(pats[:300], "0.7,0.1,0.2", seed=7), s[:300])
    assert (hashed_splits(pats, (0.7, 0.1, 0.2), seed=8) != s).any()


def test_both_experiments_use_the_shared_split():
    from cxrdistill.fairkd.experiment import split_by_phase
    from cxrdistill.fairness.data import patient_split

    df = pd.DataFrame({"patient_id": [f"q{i}" for i in range(400)], "image_id": [f"i{i}" for i in range(400)]})
    np.testing.assert_array_equal(patient_split(df, 3).to_numpy(), hashed_splits(df["patient_id"], seed=3))
    np.testing.assert_array_equal(split_by_phase(df, 0.12, 3), hashed_splits(df["patient_id"], (0.58, 0.12, 0.3), 3))
    phased = df.assign(synth_shortcut_phase=np.where(np.arange(400) % 5 == 0, "test", "train"))
    s = split_by_phase(phased, 0.12, 3)
    u = patient_hash(df["patient_id"], 3)
    np.testing.assert_array_equal(s, np.where(np.arange(400) % 5 == 0, "test", np.where(u < 0.12, "val", "train")))
