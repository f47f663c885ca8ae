"""A whole (tiny) study from one YAML: every stage runs, results.json has the headline keys, a re-run is cached,
a failing stage is named and earlier stages survive, and the report opens cleanly in headless Chromium."""
import json
import time
from pathlib import Path

import pytest

from cxrdistill.cli import main
from cxrdistill.errors import CxrError

TINY = """
name: tiny-<script>alert(1)</script>
jobs: 2
size: 32
tasks: [pleural_effusion, cardiomegaly, support_devices]
attributes: [sex, race]
cohort: {source: synth, synth: {n: 200, scenario: mixed, seed: 0, workers: 1}}
teacher: {pretrain: {n: 160, epochs: 1, backbone: resnet10t, workers: 1}}
distill: {student: {name: mobilenetv3_small_050}, train: {epochs: 1}}
distill_pool: {source: synth, n: 60, seed: 1}
probe: {train: {epochs: 3}}
finetune: {enabled: true, options: {train: {epochs: 1}}}
audit: {n_boot: 30, tsne: false, probe_repeats: 1, probe_folds: 2}
fairness: {options: {methods: [erm, groupdro], seeds: [0], train: {epochs: 2}}}
fair_distill: {options: {methods: [fairdi], student: {epochs: 1}, ks_modes: 4}}
pretraining: {enabled: false}
"""


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    cfg = d / "tiny.yaml"
    cfg.write_text(TINY)
    out = d / "run"
    t0 = time.perf_counter()
    try:
        main(["study", str(cfg), "--out", str(out)])
    except SystemExit as e:
        assert e.code in (0, None)
    return cfg, out, time.perf_counter() - t0


def test_results_json_has_the_headline_keys(study_run):
    _, out, _ = study_run
    res = json.loads((out / "results.json").read_text())
    for who in ("teacher", "student"):
        assert res[who]["params"] > 0
        assert res[who]["throughput_img_s"] > 0
        assert set(res[who]["auc"]) == {"pleural_effusion", "cardiomegaly", "support_devices"}
    assert res["teacher"]["params"] > res["student"]["params"]
    assert res["retention"] == pytest.approx(res["student"]["mean_auc"] / res["teacher"]["mean_auc"])
    # the median of interleaved rounds' ratios: within the rounds, close to the ratio of median throughputs
    assert min(res["speedup_rounds"]) <= res["speedup"] <= max(res["speedup_rounds"])
    assert {"erm", "groupdro"} <= set(res["fairness"])
    for m in res["fairness"].values():
        assert {"auc", "worst_group_auc", "auc_gap"} <= set(m)
    f = res["fairness"]  # the paired comparison with ERM is carried (one seed here: a delta, no p-value)
    assert f["groupdro"]["vs_erm"]["auc_gap"]["delta"] == pytest.approx(f["groupdro"]["auc_gap"] - f["erm"]["auc_gap"])
    assert res["propagation"] is not None
    assert (out / "config.yaml").exists() and (out / "log.txt").exists()
    # fair distillation of the study's own teacher on the study's cohort (synthetic: both label sources)
    fd = res["fair_distill"]["results"]["mixed"]
    assert set(fd) == {"observed", "true"} and {"teacher", "kd", "fairdi", "fairdi/head"} <= set(fd["observed"])
    assert fd["observed"]["teacher"]["retention"] == pytest.approx(1.0)
    log = (out / "log.txt").read_text()
    assert "[mixed] fairdi seed 0" in log  # logged by the stage's worker process


def test_the_unlabelled_pool_is_embedded_and_distilled_on_but_never_evaluated(study_run):
    import pandas as pd

    from cxrdistill.storage.store import EmbeddingStore

    _, out, _ = study_run
    pool = pd.read_parquet(out / "pool" / "pool.parquet")
    assert len(pool) == 60 and (pool["split"] == "pool").all() and pool["image_id"].str.startswith("pool/").all()
    assert not any(c in pool.columns for c in ("pleural_effusion", "cardiomegaly", "true_cardiomegaly"))
    cohort = pd.read_parquet(out / "cohort.parquet")
    assert not cohort["image_id"].str.startswith("pool/").any()
    store = EmbeddingStore.open(out / "embeddings" / "teacher")  # one store, one pass through the teacher API
    assert store.missing(pool["image_id"].tolist() + cohort["image_id"].tolist()) == []
    # the distillation table (cohort rows, then the pool's) is written by the embed stage and read by the others
    table = json.loads((out / "stages" / "embed.json").read_text())["result"]["table"]
    assert table == str(out / "distill_cohort.parquet")
    assert pd.read_parquet(table)["image_id"].tolist() == cohort["image_id"].tolist() + pool["image_id"].tolist()
    dist = json.loads((out / "stages" / "distill.json").read_text())["result"]
    assert dist["pool_images"] == 60 and dist["train_images"] == int((cohort["split"] == "train").sum())
    for who in ("teacher", "student"):  # the probes score only labelled test rows
        pred = pd.read_parquet(out / "probe" / who / "predictions" / "test.parquet")
        assert not pred["image_id"].astype(str).str.startswith("pool/").any()
    res = json.loads((out / "results.json").read_text())
    assert len(res["speedup_rounds"]) >= 5
    assert res["speedup"] == pytest.approx(sorted(res["speedup_rounds"])[len(res["speedup_rounds"]) // 2], rel=1e-3)


def test_rerun_is_cached_and_fast(study_run):
    cfg, out, first = study_run
    t0 = time.perf_counter()
    main(["study", str(cfg), "--out", str(out)])
    again = time.perf_counter() - t0
    log = (out / "log.txt").read_text().splitlines()
    last = log[-20:]
    assert any("[distill] cached" in line for line in last)
    assert not any("[distill] running" in line for line in last)
    assert again < first / 3


def test_failing_stage_is_named_and_earlier_stages_survive(study_run, tmp_path):
    cfg, out, _ = study_run
    before = (out / "stages" / "distill.json").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(cfg.read_text().replace("probe: {train: {epochs: 3}}",
                                           "probe: {train: {epochs: 3}, tasks: [no_such_finding]}"))
    with pytest.raises(CxrError, match="stage 'probe_teacher' failed"):
        from cxrdistill.study.run import run_study

        run_study(bad, out, log=lambda s: None)
    assert (out / "stages" / "distill.json").read_text() == before
    assert (out / "student" / "student.safetensors").exists()


def test_report_failure_is_one_clear_error_and_keeps_the_results(study_run, monkeypatch):
    cfg, out, _ = study_run
    import cxrdistill.report.study_report as sr
    from cxrdistill.study.run import run_study

    def broken(*a, **k):
        raise KeyError("no_such_section")

    monkeypatch.setattr(sr, "write_report", broken)
    with pytest.raises(CxrError, match=r"writing the report failed: KeyError.*report\.error\.txt.*re-run"):
        run_study(cfg, out, log=lambda s: None)
    assert "no_such_section" in (out / "report.error.txt").read_text()
    assert json.loads((out / "results.json").read_text())["teacher"]["params"] > 0


def test_report_opens_in_headless_chromium(study_run, tmp_path):
    from cxrdistill.report.browser import check_page

    _, out, _ = study_run
    html = (out / "report.html").read_text()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    for heading in ("Findings", "Teacher and student at a glance", "The cohort", "Subgroup performance",
                    "Feature space", "Attribute probes", "inherit", "Fair training",
                    "Can the student be fairer than its teacher?", "The study&#x27;s cohort"):
        assert heading in html, heading
    # the planted mechanisms of the synthetic cohort, in words, and the split sizes
    assert "30% of positives labelled 0" in html and "laminar" in html and "split by patient: train " in html
    shot = tmp_path / "report.png"
    r = check_page(out / "report.html", shot)
    assert r["tables"] >= 5 and r["overflowing_tables"] == [] and r["page_overflow_px"] == 0, r  # tables fit
    assert r["console_errors"] == [] and r["page_errors"] == []
    assert r["images"] >= 5 and r["broken_images"] == []
    assert shot.stat().st_size > 10_000
