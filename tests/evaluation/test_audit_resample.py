"""Glocker-style test-set resampling: exact group sizes, prevalence and age-bin counts; seeded; reported."""
import numpy as np
import pandas as pd

from cxrdistill.evaluation.audit import run_audit
from cxrdistill.evaluation.resample import DEFAULT_AGE_EDGES, apportion, balanced_resample, bin_values


def _cohort(seed=0, n=3000):
    rng = np.random.default_rng(seed)
    race = rng.choice(["White", "Black", "Asian"], n, p=[0.65, 0.2, 0.15])
    # prevalence and age distribution differ by group before resampling
    y = rng.binomial(1, np.where(race == "White", 0.35, np.where(race == "Black", 0.2, 0.5)))
    age = np.where(race == "Asian", 18 + 77 * rng.beta(1.0, 1.6, n), rng.uniform(18, 95, n))
    return race.astype(object), y, age


def test_counts_are_balanced_exactly():
    race, y, age = _cohort()
    race[10:15] = None  # missing attribute: left out
    idx, rep = balanced_resample(race, y, age, seed=3)
    n_per, n_pos = rep["n_per_group"], rep["n_pos_per_group"]
    assert n_per == round((race.size - 5) / 3) and n_pos == round(n_per * y[race != None].mean())  # noqa: E711
    bins = bin_values(age[idx], DEFAULT_AGE_EDGES)
    counts = pd.DataFrame({"g": race[idx], "y": y[idx], "bin": np.where(bins == None, "missing", bins)})  # noqa
    by_g = counts.groupby("g").size()
    assert (by_g == n_per).all() and len(by_g) == 3
    assert (counts.groupby("g")["y"].sum() == n_pos).all()
    # within each class, every group has the same age-bin counts (the overall distribution, apportioned)
    tab = counts.groupby(["y", "bin", "g"]).size().unstack("g").fillna(0)
    assert (tab.nunique(axis=1) == 1).all(), tab
    assert rep["n_after"] == 3 * n_per and rep["warnings"] == []
    # seeded
    assert np.array_equal(idx, balanced_resample(race, y, age, seed=3)[0])
    assert not np.array_equal(idx, balanced_resample(race, y, age, seed=4)[0])
    # as few repeats as possible: a group larger than its target is drawn without replacement
    assert rep["groups"]["White"]["n_unique"] == n_per


def test_empty_age_cell_is_redistributed_and_reported():
    race, y, age = _cohort(1)
    age[(race == "Asian")] = np.clip(age[race == "Asian"], 20, 59)  # Asian group has no one over 60
    age[:9] = np.nan  # missing age: a bin of its own
    idx, rep = balanced_resample(race, y, age, seed=0)
    assert any("Asian" in w and "age bin" in w for w in rep["warnings"])
    g = race[idx]
    assert (pd.Series(g).value_counts() == rep["n_per_group"]).all()
    assert (pd.Series(y[idx]).groupby(g).sum() == rep["n_pos_per_group"]).all()


def test_apportion_sums_exactly():
    assert apportion(10, [1, 1, 1]).tolist() == [4, 3, 3]
    assert apportion(7, [0.5, 0, 0.5]).sum() == 7
    assert apportion(0, [1, 2]).tolist() == [0, 0]


def test_run_audit_reports_resampling():
    race, y, age = _cohort(2, n=1500)
    age[:5] = np.nan
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"image_id": np.arange(race.size).astype(str), "race": race, "age": age,
                       "sex": rng.choice(["F", "M"], race.size), "y_x": y, "p_x": rng.normal(size=race.size) + y})
    res = run_audit(df, ["race", "sex"], n_boot=50, resample="balanced")
    doc = res.to_json()
    rs = doc["resampling"]
    assert rs["method"] == "balanced" and rs["attribute"] == "race"
    n_per = rs["tasks"]["x"]["n_per_group"]
    groups = doc["tasks"]["x"]["attributes"]["race"]["groups"]
    assert {g: d["n"] for g, d in groups.items()} == {"Asian": n_per, "Black": n_per, "White": n_per}
    assert len({d["n_pos"] for d in groups.values()}) == 1
    assert doc["tasks"]["x"]["resampling"]["seed"] == rs["tasks"]["x"]["seed"]
