"""Bad predictions tables give one-line InputErrors; degenerate groups give null metrics with a reason; the CLI
writes its outputs atomically and its HTML escapes hostile group names."""
import json

import numpy as np
import pandas as pd
import pytest

from cxrdistill.cli import main
from cxrdistill.errors import InputError
from cxrdistill.evaluation.audit import run_audit
from cxrdistill.evaluation.predictions import read_predictions


def _pred(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.binomial(1, 0.3, n)
    return pd.DataFrame({"image_id": [f"im{i}" for i in range(n)], "sex": rng.choice(["F", "M"], n),
                         "race": rng.choice(["White", "Black"], n), "age": rng.uniform(18, 90, n),
                         "y_edema": y, "p_edema": rng.normal(size=n) + y, "ytrue_edema": y})


def _bad(case):
    df = _pred()
    if case == "missing_y":
        return df.drop(columns=["y_edema"]), {"tasks": ["edema"]}, "y_edema"
    if case == "no_task":
        return df.drop(columns=["p_edema"]), {}, "no task found"
    if case == "nan_score":
        df.loc[[3, 8], "p_edema"] = np.nan
        return df, {}, "2 labelled rows have no score"
    if case == "uncertain_label":
        df["y_edema"] = df["y_edema"].astype(float)
        df.loc[5, "y_edema"] = -1
        return df, {}, "label policy"
    if case == "text_label":
        df["y_edema"] = df["y_edema"].astype(object)
        df.loc[4, "y_edema"] = "yes"
        return df, {}, "not 0, 1 or blank"
    if case == "text_score":
        df["p_edema"] = df["p_edema"].astype(object)
        df.loc[2, "p_edema"] = "high"
        return df, {}, "is not a number"
    if case == "inf_score":
        df.loc[2, "p_edema"] = np.inf
        return df, {}, "infinite"
    if case == "missing_attribute":
        return df, {"attributes": ["ethnicity"]}, "'ethnicity' not found"
    if case == "duplicate_ids":
        df.loc[7, "image_id"] = "im1"
        return df, {}, "duplicate image_id 'im1'"
    if case == "true_labels_absent":
        return df.drop(columns=["ytrue_edema"]), {"labels": "true"}, "ytrue_edema"
    if case == "age_without_bins":
        return df, {"attributes": ["age"]}, "--age-bins"
    if case == "bad_correction":
        return df, {"correction": "holm"}, "unknown correction"
    if case == "bad_fpr":
        return df, {"target_fpr": 1.5}, "target FPR"
    raise AssertionError(case)


CASES = ["missing_y", "no_task", "nan_score", "uncertain_label", "text_label", "text_score", "inf_score",
         "missing_attribute", "duplicate_ids", "true_labels_absent", "age_without_bins", "bad_correction", "bad_fpr"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_an_input_error(case):
    df, kw, msg = _bad(case)
    kw.setdefault("attributes", ["sex"])
    with pytest.raises(InputError) as e:
        run_audit(df, n_boot=0, path="pred.csv", **kw)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_nan_scores_can_be_dropped_and_are_counted():
    df, _, _ = _bad("nan_score")
    t = run_audit(df, ["sex"], n_boot=0, drop_missing_scores=True).to_json()["tasks"]["edema"]
    assert t["n_dropped_missing_score"] == 2 and t["overall"]["n"] == 298


def test_one_class_and_small_groups_get_null_with_reason():
    df = _pred(400)
    df["site"] = np.where(np.arange(400) < 30, "tiny", np.where(df["y_edema"] == 1, "A", "B"))
    df.loc[df["site"] == "B", "site"] = "onlyneg"
    df.loc[df.index[df["site"] == "onlyneg"][:150], "site"] = "A"
    df.loc[:9, "site"] = None  # missing
    res = run_audit(df, ["site"], n_boot=50, min_n=25)
    a = res.to_json()["tasks"]["edema"]["attributes"]["site"]
    assert a["groups"]["onlyneg"]["auc"] is None and "one class" in a["groups"]["onlyneg"]["reason"]
    assert a["groups"]["tiny"]["auc"] is None and "min_n=25" in a["groups"]["tiny"]["reason"]
    assert a["groups"]["A"]["auc"] is not None and a["n_missing"] == 10
    assert a["auc_gap"] is None and "fewer than two groups" in a["summary_reason"]
    assert all(c["auc_p"] is None and c["reason"] for c in a["comparisons"])
    bg = res.by_group
    assert bg[(bg.group == "onlyneg")]["reason"].notna().all()


def test_read_predictions_errors(tmp_path):
    p = tmp_path / "pred.csv"
    p.write_text("image_id,sex,y_a,p_a\n")
    with pytest.raises(InputError, match="no rows"):
        read_predictions(p)
    with pytest.raises(InputError, match="not found"):
        read_predictions(tmp_path / "missing.csv")


def test_cli_writes_outputs_and_escapes_html(tmp_path, capsys):
    df = _pred(300, seed=2)
    df.loc[df.index[:120], "race"] = "<script>alert(1)</script>"
    pq = tmp_path / "pred.parquet"
    df.to_parquet(pq)
    out = tmp_path / "audit"
    main(["audit", str(pq), "--attribute", "race", "-a", "sex", "-a", "age", "--age-bins", "0,40,60,120",
          "--n-boot", "100", "--labels", "both", "--out", str(out)])
    assert sorted(f.name for f in out.iterdir()) == ["audit.json", "audit_by_group.parquet",
                                                     "audit_comparisons.parquet", "report.html"]  # no temp files
    doc = json.loads((out / "audit.json").read_text())
    t = doc["tasks"]["edema"]
    assert set(t["overall"]) >= {"n", "n_pos", "auc", "auc_ci", "tpr", "fpr"} and t["threshold"] is not None
    assert set(t["attributes"]["age"]["groups"]) == {"[0,40)", "[40,60)", "[60,120)"}
    comp = t["attributes"]["race"]["comparisons"][0]
    assert set(comp) >= {"group_a", "group_b", "auc_diff", "auc_p", "auc_p_adj", "auc_significant", "tpr_diff",
                         "tpr_ci", "fpr_diff", "fpr_ci", "ks_stat", "ks_p", "ks_p_adj"}
    for k in ("auc_gap", "worst_group_auc", "es_auc", "psd"):
        assert k in t["attributes"]["sex"]
    assert "edema" in doc["tasks_true"]
    bg = pd.read_parquet(out / "audit_by_group.parquet")
    assert {"task", "attribute", "group", "metric", "value", "ci_low", "ci_high", "n", "n_pos",
            "reason"} <= set(bg.columns)
    html = (out / "report.html").read_text()
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "AUC" in capsys.readouterr().out


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    df = _pred(50)
    p = tmp_path / "pred.csv"
    df.to_csv(p, index=False)
    with pytest.raises(SystemExit) as e:
        main(["audit", str(p), "--attribute", "ethnicity", "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "ethnicity" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit) as e:
        main(["audit", str(p), "-a", "sex", "--age-bins", "60,40", "--out", str(tmp_path / "o")])
    assert e.value.code == 2


def test_evaluation_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, cxrdistill.evaluation.audit, cxrdistill.report.audit_html, "
            "cxrdistill.evaluation.metrics, cxrdistill.commands.audit; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
