"""The measurement end to end, tiny (one scenario, 160 images at 32 px, 1 epoch, 2 seeds): every output file, the
metrics against scikit-learn and scipy, caching, the report section, and one-line errors for bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from cxrdistill.cli import main
from cxrdistill.fairkd import experiment as X

ARGS = ["--scenario", "underdiagnosis", "--seeds", "0,1", "--n", "160", "--size", "32", "--epochs", "1",
        "--teacher-epochs", "1", "--teacher", "lcnet_035", "--student", "lcnet_035", "--tasks",
        "cardiomegaly,pleural_effusion,support_devices", "--set", "teacher.embed_dim=16", "--set", "ks_modes=4",
        "--set", "distill_extra=40", "--quiet"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("fairkd_study")
    main(["fair-distill-study", *ARGS, "--out", str(out)])
    return out


def test_outputs_and_tidy_table(study: Path):
    for f in ("fairkd_results.parquet", "fairkd_table.md", "fairkd_table.csv", "fairkd.json", "fairkd_tradeoff.png",
              "report.html", "fairkd_summary.parquet", "fairkd_per_seed.parquet"):
        assert (study / f).stat().st_size > 0, f
    tidy = pd.read_parquet(study / "fairkd_results.parquet")
    assert list(tidy.columns) == X.TIDY_COLUMNS
    assert set(tidy["model"]) == {"teacher", "kd", "balanced", "adversarial", "fairdi", "mmd"}
    assert set(tidy["seed"]) == {0, 1} and set(tidy["attribute"]) == {"sex"}
    assert set(tidy.loc[tidy["eval"] == "head", "model"]) == {"fairdi", "mmd"}
    assert set(tidy.loc[tidy["eval"] != "embedding", "labels"]) == {"observed", "true"}
    assert set(tidy.loc[tidy["eval"] == "embedding", "metric"]) == set(X.EMB_METRICS)
    assert {"F", "M", "(overall)", "(summary)"} <= set(tidy["group"])
    js = json.loads((study / "fairkd.json").read_text())
    assert js["scenarios"]["underdiagnosis"]["attribute"] == "sex"
    assert "plain" not in js["results"]["underdiagnosis"]["true"] and "kd" in js["results"]["underdiagnosis"]["true"]
    assert "fairdi/head" in js["results"]["underdiagnosis"]["observed"] and js["goal_lines"]
    md = (study / "fairkd_table.md").read_text()
    assert "## Against the true labels" in md and "| plain KD |" in md and "fairdi (own head)" in md


def test_group_aucs_equal_sklearn_and_tests_equal_scipy(study: Path):
    cfg = X.make_config(scenarios=["underdiagnosis"], seeds=[0, 1], n=160, size=32, distill_extra=40,
                        tasks=["cardiomegaly", "pleural_effusion", "support_devices"])
    c = X.prepare_cohort("underdiagnosis", cfg, study / "cache", lambda s: None)  # cached: no re-render
    T = np.load(study / "teachers" / "underdiagnosis" / "embeddings.npy")
    assert len(T) == len(c.images) + 40 and len(c.extra) == 40  # the unlabelled pool is embedded after the cohort
    s = X.probe_scores(T[:len(c.images)], c, cfg.probe_l2)
    te = c.idx["test"]
    tidy = pd.read_parquet(study / "fairkd_results.parquet")
    for labels in ("observed", "true"):
        for gi, gname in enumerate(c.group_names):
            m = c.g[te] == gi
            for k, task in enumerate(c.tasks):
                y = c.y[labels][te][m, k]
                ok = np.isfinite(y)
                if len(np.unique(y[ok])) < 2:
                    continue
                want = roc_auc_score(y[ok], s[m][ok, k])
                got = tidy[(tidy["model"] == "teacher") & (tidy["seed"] == 0) & (tidy["labels"] == labels)
                           & (tidy["task"] == task) & (tidy["group"] == gname) & (tidy["metric"] == "auc")]["value"]
                assert abs(float(got.iloc[0]) - want) < 1e-9
    ps = pd.read_parquet(study / "fairkd_per_seed.parquet")
    table = pd.read_parquet(study / "fairkd_summary.parquet")
    a = ps[(ps["model"] == "mmd") & (ps["eval"] == "probe") & (ps["labels"] == "true")].sort_values("seed")
    b = ps[(ps["model"] == "kd") & (ps["eval"] == "probe") & (ps["labels"] == "true")].sort_values("seed")
    row = table[(table["model"] == "mmd") & (table["eval"] == "probe") & (table["labels"] == "true")].iloc[0]
    assert abs(row["auc_mean"] - a["auc"].mean()) < 1e-12
    assert abs(row["auc_gap_delta_vs_kd"] - (a["auc_gap"].to_numpy() - b["auc_gap"].to_numpy()).mean()) < 1e-12
    p = stats.ttest_rel(a["auc"].to_numpy(), b["auc"].to_numpy()).pvalue
    assert np.isnan(row["auc_p_vs_kd"]) and np.isnan(p) or abs(row["auc_p_vs_kd"] - p) < 1e-12
    t = ps[(ps["model"] == "teacher") & (ps["labels"] == "true")]
    np.testing.assert_allclose(a["retention"].to_numpy(), a["auc"].to_numpy() / t["auc"].to_numpy())


def test_rerun_is_cached_and_report_section(study: Path):
    before = {p: p.stat().st_mtime_ns for p in (study / "runs").rglob("result.json")}
    assert len(before) == 10  # 5 students × 2 seeds
    lines: list[str] = []
    tidy = X.run_study("underdiagnosis", [0, 1], n=160, size=32, out=study, log=lines.append,
                       tasks=["cardiomegaly", "pleural_effusion", "support_devices"], ks_modes=4, distill_extra=40,
                       teacher={"backbone": "lcnet_035", "epochs": 1, "embed_dim": 16},
                       student={"backbone": "lcnet_035", "epochs": 1})
    assert {p: p.stat().st_mtime_ns for p in (study / "runs").rglob("result.json")} == before
    assert not any("rendered" in x for x in lines) and any("teacher: cached" in x for x in lines)
    pd.testing.assert_frame_equal(tidy.reset_index(drop=True), pd.read_parquet(study / "fairkd_results.parquet"))
    html = X.report_section(study)
    assert X.SECTION_TITLE in html.replace("&#x27;", "'") and "data:image/png;base64," in html
    page = (study / "report.html").read_text()
    assert "<script" not in page and page.count("<section") == 1


def test_parallel_jobs_give_the_same_table(study: Path, tmp_path):
    """``--jobs 2``: teachers, then (scenario, seed) units in worker processes; same rows as the serial run."""
    tidy = X.run_study("underdiagnosis", [0, 1], n=160, size=32, out=tmp_path, jobs=2, methods=["balanced"],
                       tasks=["cardiomegaly", "pleural_effusion", "support_devices"], ks_modes=4, distill_extra=40,
                       teacher={"backbone": "lcnet_035", "epochs": 1, "embed_dim": 16},
                       student={"backbone": "lcnet_035", "epochs": 1})
    ref = pd.read_parquet(study / "fairkd_results.parquet")
    ref = ref[ref["model"].isin(["teacher", "kd", "balanced"])].reset_index(drop=True)
    key = ["model", "seed", "eval", "labels", "task", "group", "metric"]
    a, b = tidy.sort_values(key).reset_index(drop=True), ref.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[key], b[key])
    teacher = (a["model"] == "teacher").to_numpy()
    np.testing.assert_allclose(a["value"][teacher], b["value"][teacher], atol=1e-6)


@pytest.mark.parametrize("argv, needle", [
    (["--scenario", "nosuch"], "unknown scenario"),
    (["--seeds", "a,b"], "--seeds"),
    (["--method", "fairest"], "unknown fair distillation objective"),
    (["--set", "no_such_key=1"], "no_such_key"),
    (["--attribute", "age"], "attribute"),
])
def test_bad_input_is_one_line(argv, needle, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["fair-distill-study", "--out", str(tmp_path / "o"), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o" / "fairkd_results.parquet").exists()
