"""Pre-checks P1/P2/P3 and the repetition statistics of a fairness comparison (fairness.benchmark)."""
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxrdistill.fairness.benchmark import Repetition, summarize
from cxrdistill.fairness.data import from_arrays
from cxrdistill.fairness.run import FairRunConfig, run_fair


def _cohort(n, seed, sign_minority, identifiable):
    """A cue c whose meaning is sign_minority × (the majority's) in the minority; the group is a feature or not."""
    rng = np.random.default_rng(seed)
    black = rng.random(n) < 0.25
    f = rng.normal(size=n)
    c = (rng.random(n) < 0.5).astype(float)
    s = np.where(black, sign_minority, -1.0)
    y = (1.2 * f + 2.5 * s * (c - 0.5) + 0.5 * rng.normal(size=n) > 0).astype(float)
    noise = rng.normal(size=(n, 6))
    cols = [f, c, *noise.T] + ([black + 0.1 * rng.normal(size=n)] if identifiable else [])
    x = np.stack(cols, 1).astype(np.float32)
    u = rng.random(n)
    df = pd.DataFrame({"image_id": [f"i{i}" for i in range(n)], "patient_id": [f"p{i}" for i in range(n)],
                       "race": np.where(black, "Black", "White"), "pleural_effusion": y,
                       "true_pleural_effusion": y, "split": np.where(u < 0.55, "train", np.where(u < 0.7, "val",
                                                                                                 "test"))})
    return df, x


def _prechecks(tmp_path, sign_minority, identifiable):
    df, x = _cohort(1600, 0, sign_minority, identifiable)
    data = from_arrays(df, x, ["pleural_effusion"], "race", label_source="true")
    cfg = FairRunConfig(methods=["erm"], seeds=[0, 1], head="mlp", hidden=32, prechecks=True,
                        train={"epochs": 12, "batch_size": 64, "lr": 3e-3})
    res = run_fair(data, cfg, tmp_path, device="cpu", log=lambda s: None)
    return res["json"]["_prechecks"], (tmp_path / "fair_table.md").read_text()


def test_prechecks_pass_where_the_mechanism_is_planted(tmp_path):
    pre, md = _prechecks(tmp_path, +1.0, True)
    assert pre["minority"] == "Black"
    assert pre["P1"]["passed"] and pre["P1"]["value"] > 0.1, pre["P1"]
    assert pre["P2"]["passed"], pre["P2"]
    assert pre["P3"]["passed"], pre["P3"]
    assert "All pre-checks passed" in md


def test_prechecks_fail_without_conflict_or_without_an_identifiable_group(tmp_path):
    pre, md = _prechecks(tmp_path / "same", -1.0, True)  # the cue means the same in both groups
    assert not pre["P1"]["passed"] and not pre["P3"]["passed"], pre
    assert "failed" in md and "not interpreted" in md
    pre, _ = _prechecks(tmp_path / "hidden", +1.0, False)  # conflict, but the group is not in the input
    assert not pre["P2"]["passed"] and pre["P2"]["value"] < 0.7, pre["P2"]


def test_summarize_matches_sklearn_and_intervals_cover_the_point():
    rng = np.random.default_rng(3)
    reps = []
    for r in range(4):
        n = 600
        g = np.where(rng.random(n) < 0.3, "B", "A").astype(object)
        y = (rng.random(n) < 0.4).astype(float)
        a = y + rng.normal(0, 1.0, n)
        b = y + rng.normal(0, np.where(g == "B", 2.0, 1.0), n)  # worse on B
        reps.append(Repetition(y=y, groups=g, patients=np.arange(n) // 2, scores={"erm": a, "m": b}))
    s = summarize(reps, ["A", "B"], n_boot=200, min_pos=20)
    want = np.mean([roc_auc_score(r.y[r.groups == "B"], r.scores["m"][r.groups == "B"]) for r in reps])
    assert s["m"]["auc[B]"]["mean"] == pytest.approx(want)
    gaps = [abs(roc_auc_score(r.y[r.groups == "A"], r.scores["m"][r.groups == "A"])
                - roc_auc_score(r.y[r.groups == "B"], r.scores["m"][r.groups == "B"])) for r in reps]
    assert s["m"]["gap_max_min"]["mean"] == pytest.approx(np.mean(gaps))
    d = s["m"]["auc[B]"]
    lo, hi = d["delta_ci"]
    assert lo < d["delta"] < hi and hi < 0  # the noisier scores are clearly worse on B
    assert s["erm"]["auc[B]"]["delta"] == 0.0
    lo, hi = s["m"]["auc[A]"]["delta_ci"]
    assert lo < 0 < hi  # same noise on A: no difference


def test_small_groups_are_reported_but_left_out_of_the_gap():
    rng = np.random.default_rng(0)
    n = 400
    g = np.where(np.arange(n) < 30, "C", np.where(rng.random(n) < 0.5, "A", "B")).astype(object)
    y = (rng.random(n) < 0.4).astype(float)
    p = y + rng.normal(0, 1, n)
    s = summarize([Repetition(y=y, groups=g, patients=np.arange(n), scores={"erm": p})], ["A", "B", "C"],
                  n_boot=0, min_pos=20)
    assert s["_eligible"]["groups"] == ["A", "B"]
    assert np.isfinite(s["erm"]["auc[C]"]["mean"])
    assert "diff[A-C]" not in s["erm"] and "diff[A-B]" in s["erm"]
