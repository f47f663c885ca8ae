"""Label semantics and knobs, checked on the sampled table (no rendering, so large n is cheap)."""
from __future__ import annotations

import numpy as np
import pytest

from cxrdistill.synth import DEFAULT_PREVALENCE, load_scenario, sample_cohort
from cxrdistill.synth.scenario import DISEASES, PATHOLOGIES

N = 20000


@pytest.fixture(scope="module")
def underdiag():
    sc = load_scenario("underdiagnosis")
    return sc, sample_cohort(N, 0, sc)


def test_underdiagnosis_flips_only_true_positives_of_the_affected_group(underdiag):
    sc, df = underdiag
    rate = sc.groups["Female"].rate(sc.groups["Female"].underdiagnosis, "edema", 0.0)
    assert rate == 0.6
    fem, male = df["sex"] == "Female", df["sex"] == "Male"
    for f in DISEASES:
        flag = df[f"synth_underdiagnosed_{f}"] == 1
        assert not (flag & male).any(), f
        assert (df.loc[flag, f"true_{f}"] == 1).all(), f  # only true positives are flipped
        assert (df.loc[flag, f] == 0.0).all(), f  # … and labelled negative
        tp = fem & (df[f"true_{f}"] == 1)
        n_tp = int(tp.sum())
        se = np.sqrt(rate * (1 - rate) / n_tp)
        assert abs(flag[tp].mean() - rate) < 4 * se + 0.01, (f, flag[tp].mean(), n_tp)
        # not flipped true positives stay positive or uncertain; true negatives are never positive
        kept = (df[f"true_{f}"] == 1) & ~flag
        assert df.loc[kept, f].isin([1.0, -1.0]).all(), f
        assert not (df.loc[df[f"true_{f}"] == 0, f] == 1.0).any(), f
    assert df["synth_underdiagnosed_support_devices"].sum() == 0  # "all" means every disease, not devices
    assert (df.loc[male & (df["true_edema"] == 1), "edema"] == 1.0).mean() > 0.7
    assert (df.loc[fem & (df["true_edema"] == 1), "edema"] == 1.0).mean() < 0.4


def test_no_finding_semantics(underdiag):
    _, df = underdiag
    true_any = df[[f"true_{f}" for f in DISEASES]].to_numpy().any(axis=1)
    assert (df["true_no_finding"].to_numpy() == (~true_any).astype(int)).all()
    obs_any = df[DISEASES].isin([1.0, -1.0]).to_numpy().any(axis=1)
    nf = df["no_finding"].to_numpy()
    assert np.all((nf == 1.0) == ~obs_any) and np.isnan(nf[obs_any]).all()
    # underdiagnosed patients whose every finding was missed are reported "No Finding" (Seyyed-Kalantari's setting)
    assert ((nf == 1.0) & true_any).sum() > 100


def test_uncertain_and_blank_labels_occur_at_moderate_rates(underdiag):
    _, df = underdiag
    male = df[df["sex"] == "Male"]
    for f in ("atelectasis", "edema", "pleural_effusion"):
        unc = (male[f] == -1).mean()
        blank = male[f].isna().mean()
        assert 0.005 < unc < 0.12 and 0.3 < blank < 0.95, (f, unc, blank)


def test_representation_and_prevalence_knobs():
    sc = load_scenario({"attribute": "race", "groups": {
        "White": {"share": 0.6}, "Black": {"share": 0.3, "prevalence": {"cardiomegaly": 2.0, "pneumothorax": 0.5}},
        "Asian": {"share": 0.1}}})
    df = sample_cohort(N, 1, sc)
    pat = df.drop_duplicates("patient_id")
    for g, share in (("White", 0.6), ("Black", 0.3), ("Asian", 0.1)):
        assert abs((pat["race"] == g).mean() - share) < 0.02, g
        assert abs((df["race"] == g).mean() - share) < 0.03, g
    w, b = df[df["race"] == "White"], df[df["race"] == "Black"]
    assert abs(w["true_cardiomegaly"].mean() - DEFAULT_PREVALENCE["cardiomegaly"]) < 0.02
    assert b["true_cardiomegaly"].mean() / w["true_cardiomegaly"].mean() == pytest.approx(2.0, rel=0.12)
    assert b["true_pneumothorax"].mean() / w["true_pneumothorax"].mean() == pytest.approx(0.5, rel=0.15)
    assert b["true_pleural_effusion"].mean() == pytest.approx(w["true_pleural_effusion"].mean(), abs=0.02)
    # the main tasks have moderate prevalence in the default cohort
    for f in ("pleural_effusion", "cardiomegaly", "pneumothorax", "edema", "consolidation", "lung_opacity",
              "support_devices"):
        assert 0.10 <= w[f"true_{f}"].mean() <= 0.40, f


def test_shortcut_marker_follows_the_label_in_train_and_flips_in_test():
    sc = load_scenario("shortcut")
    cfg = sc.groups["Female"].shortcut
    df = sample_cohort(N, 2, sc)
    assert (df.loc[df["sex"] == "Male", "synth_shortcut"] == 0).all()
    fem = df[df["sex"] == "Female"]
    pos = fem[f"true_{cfg.finding}"] == 1
    train = fem["synth_shortcut_phase"] == "train"
    rate = lambda m: fem.loc[m, "synth_shortcut"].mean()  # noqa: E731
    assert rate(train & pos) == pytest.approx(cfg.p_positive, abs=0.04)
    assert rate(train & ~pos) == pytest.approx(cfg.p_negative, abs=0.02)
    assert rate(~train & pos) == pytest.approx(cfg.p_negative, abs=0.05)
    assert rate(~train & ~pos) == pytest.approx(cfg.p_positive, abs=0.02)
    # the phase is a patient-level split with the configured share
    phase = df.groupby("patient_id")["synth_shortcut_phase"].nunique()
    assert (phase == 1).all()
    assert (df.drop_duplicates("patient_id")["synth_shortcut_phase"] == "train").mean() == pytest.approx(
        sc.shortcut_train_fraction, abs=0.02)


def test_acquisition_knobs_by_site():
    sc = load_scenario("acquisition")
    df = sample_cohort(N, 3, sc)
    for site, s in sc.sites.items():
        d = df[df["synth_site"] == site]
        assert (d["view"] == "AP").mean() == pytest.approx(s.ap_share, abs=0.03), site
        assert d["synth_contrast"].median() == pytest.approx(s.contrast, rel=0.05), site
        assert (d["synth_marker"] == s.marker).all()
    black = df[df["race"] == "Black"]
    assert (black["synth_site"] == "B").mean() == pytest.approx(0.9, abs=0.03)
    # acquisition differs by group; labels do not
    white = df[df["race"] == "White"]
    assert (black["view"] == "AP").mean() > (white["view"] == "AP").mean() + 0.4
    for f in ("cardiomegaly", "pneumothorax"):
        assert black[f"true_{f}"].mean() == pytest.approx(white[f"true_{f}"].mean(), abs=0.03)


def test_every_named_scenario_samples(tmp_path):
    from cxrdistill.synth import SCENARIOS

    assert {"none", "underdiagnosis", "acquisition", "shortcut", "manifestation", "mixed", "pretrain"} <= set(
        SCENARIOS.names())
    for name in SCENARIOS.names():
        df = sample_cohort(300, 0, SCENARIOS.create(name))
        assert len(df) == 300 and df["path"].is_unique
        assert set(df["synth_group"]) <= set(SCENARIOS.create(name).groups)
        assert set(df[PATHOLOGIES].stack().dropna().unique()) <= {1.0, 0.0, -1.0}
