"""Label policies: U-Ignore / U-Zeros / U-Ones, per-label mixes (string and mapping), blank handling."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrdistill.cohorts.policies import POLICIES, build_targets, describe_policy, parse_policy
from cxrdistill.errors import CxrError, InputError

RAW = pd.DataFrame({
    "edema": [1.0, 0.0, -1.0, np.nan],
    "atelectasis": [-1.0, -1.0, 1.0, np.nan],
    "cardiomegaly": [-1.0, 0.0, np.nan, 1.0],
})
NAN = np.nan


def test_registry_has_the_three_chexpert_policies():
    assert POLICIES.names() == ["u-ignore", "u-ones", "u-zeros"]


@pytest.mark.parametrize("policy, uncertain", [("u-ignore", NAN), ("u-zeros", 0.0), ("u-ones", 1.0)])
def test_single_policies_map_uncertain_and_blank(policy, uncertain):
    y = build_targets(RAW, ["edema"], policy)
    assert y.dtype == np.float32 and y.shape == (4, 1)
    np.testing.assert_array_equal(y[:, 0], np.array([1, 0, uncertain, 0], dtype=np.float32))  # blank → 0
    y2 = build_targets(RAW, ["edema"], policy, blank="ignore")
    np.testing.assert_array_equal(y2[:, 0], np.array([1, 0, uncertain, NAN], dtype=np.float32))


def test_mix_spec_string_matches_the_chexpert_paper_mix():
    tasks = ["edema", "atelectasis", "cardiomegaly"]
    y = build_targets(RAW, tasks, "u-ones:edema,atelectasis;u-zeros:*")
    expected = np.array([[1, 1, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=np.float32)
    np.testing.assert_array_equal(y, expected)
    # the same mix as either mapping form, and the clause order does not matter
    for spec in ({"u-ones": ["edema", "atelectasis"], "u-zeros": "*"},
                 {"edema": "u-ones", "atelectasis": "u-ones", "*": "u-zeros"},
                 "u-zeros:*; u-ones:atelectasis,edema"):
        np.testing.assert_array_equal(build_targets(RAW, tasks, spec), expected)
    assert describe_policy("u-ones:edema,atelectasis;u-zeros:*", tasks) == \
        "u-ones:edema,atelectasis;u-zeros:cardiomegaly"


def test_uncovered_labels_default_to_u_ignore_and_raw_table_untouched():
    before = RAW.copy()
    y = build_targets(RAW, ["edema", "cardiomegaly"], "u-ones:edema")
    assert y[2, 0] == 1 and np.isnan(y[0, 1])
    pd.testing.assert_frame_equal(RAW, before)
    assert parse_policy(None, ["edema"]) == {"edema": "u-ignore"}


@pytest.mark.parametrize("spec, msg", [
    ("u-maybe", "unknown label policy"),
    ("u-ones:edema;u-zeros:edema", "two label policies"),
    ("u-ones:*;u-zeros:*", "'\\*' is given two"),
    ("u-ones:effusion", "not a task"),
    (";", "empty label policy"),
    (3, "string or a mapping"),
])
def test_bad_policy_specs(spec, msg):
    with pytest.raises(CxrError, match=msg):
        build_targets(RAW, ["edema", "atelectasis"], spec)


def test_bad_targets_input():
    with pytest.raises(InputError, match="'pleural_effusion'.*no such label column"):
        build_targets(RAW, ["pleural_effusion"])
    bad = RAW.assign(edema=[1.0, 2.0, 0.0, 0.0])
    with pytest.raises(InputError, match="row 2.*'edema'.*label value 2 is not"):
        build_targets(bad, ["edema"])
    with pytest.raises(CxrError, match="blank mode"):
        build_targets(RAW, ["edema"], blank="one")
