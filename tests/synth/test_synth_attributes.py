"""Sex, race and age are visible in the synthetic images, as in real radiographs, at the scenario's strength."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cxrdistill import synth
from cxrdistill.synth.scenario import load_scenario

# one site and no planted disease mechanism: whatever reveals race must be the anatomy itself
RACE_ONLY = {"attribute": "race", "groups": {"White": {"share": 0.5}, "Black": {"share": 0.25},
                                             "Asian": {"share": 0.25}}}


def _pixel_probe(demographics: float) -> dict[str, float]:
    """Out-of-fold AUC of a logistic regression on raw 32-px pixels (patients kept within one fold)."""
    X, meta = synth.render_batch(400, 32, seed=0, scenario={**RACE_ONLY, "demographics": demographics})
    F = X.reshape(len(X), -1).astype(np.float32) / 255
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
    out = {}
    for att in ("sex", "race"):
        y = meta[att].to_numpy()
        P = cross_val_predict(clf, F, y, cv=GroupKFold(4), groups=meta["patient_id"], method="predict_proba")
        out[att] = roc_auc_score(y, P[:, 1]) if att == "sex" else roc_auc_score(y, P, multi_class="ovr")
    return out


def test_race_and_sex_are_learnable_from_pixels_and_the_knob_controls_it():
    """Measured: race 0.96 at the default strength, 0.51 at 0; sex ≥ 0.98 at both (breast shadows)."""
    on, off = _pixel_probe(1.0), _pixel_probe(0.0)
    assert on["race"] > 0.85, on
    assert off["race"] < 0.68, off
    assert on["sex"] > 0.95, on


def test_demographics_is_a_validated_scenario_knob():
    assert load_scenario("none").demographics == 1.0
    assert load_scenario({"base": "manifestation", "demographics": 0.5}).demographics == 0.5
    assert [r for r in load_scenario("conflict_hidden").mechanisms() if r["mechanism"] == "demographics"]
    assert not [r for r in load_scenario("conflict").mechanisms() if r["mechanism"] == "demographics"]
    with pytest.raises(Exception, match="demographics"):
        load_scenario({"base": "none", "demographics": -1})


def test_demographics_change_only_the_anatomy_not_the_cohort_table():
    """The knob changes how patients look, not who they are or what they have (labels, mechanisms, sites)."""
    X1, m1 = synth.render_batch(30, 32, seed=4, scenario={"base": "mixed", "demographics": 1.0})
    X0, m0 = synth.render_batch(30, 32, seed=4, scenario={"base": "mixed", "demographics": 0.0})
    cols = [c for c in m1.columns if c not in ("synth_ctr",)]
    assert m1[cols].equals(m0[cols])
    assert not np.array_equal(X1, X0)
    X1b, _ = synth.render_batch(30, 32, seed=4, scenario={"base": "mixed", "demographics": 1.0})
    assert np.array_equal(X1, X1b)
