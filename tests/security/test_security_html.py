"""Hostile strings from users' tables are escaped in every HTML page the tool writes.

A predictions / cohort table whose race values are ``<script>alert(1)</script>`` and an attribute-breaking
``"><img src=x onerror=alert(1)>``, with a task, a feature column and a model name made of the same, goes through
``audit``, ``audit-features``, ``probe-attributes``, ``compare`` and ``fair``. Every ``.html`` file written is parsed:
no ``<script>`` element, no ``on*=`` event attribute, no ``javascript:`` URL — and the hostile text itself is there,
shown as text (so the page did render it, escaped).
"""
from __future__ import annotations

import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "corpus"))

import corpus_files as cf  # noqa: E402

from cxrdistill.cli import main  # noqa: E402

HOSTILE = cf.HOSTILE
BREAKOUT = '"><img src=x onerror=alert(1)>'
RACES = ["White", HOSTILE, BREAKOUT]


class _Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.bad_attrs, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k.lower().startswith("on") or (v or "").strip().lower().startswith("javascript:"):
                self.bad_attrs.append((tag, k, v))

    def handle_data(self, data):
        self.text.append(data)


def assert_safe(page: Path, must_show: list[str]) -> None:
    raw = page.read_text(encoding="utf-8")
    p = _Page()
    p.feed(raw)
    p.close()
    assert "script" not in p.tags, f"{page.name}: a <script> element"
    assert p.bad_attrs == [], f"{page.name}: event handler / javascript: URL {p.bad_attrs[:3]}"
    text = "".join(p.text)
    for s in must_show:
        assert s in text, f"{page.name}: {s!r} is not shown as text"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw


def _cli(argv) -> None:
    try:
        main(argv)
    except SystemExit as e:
        raise AssertionError(f"{argv[0]} exited {e.code}") from None


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Predictions with hostile race values and a hostile task name; embeddings table with the same metadata."""
    d = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    n = 180
    race = np.array(RACES * (n // 3), dtype=object)
    y = (np.arange(n) % 4 == 0).astype(int)
    df = pd.DataFrame({"image_id": [f"img{k}" for k in range(n)], "patient_id": [f"p{k}" for k in range(n)],
                       "sex": ["F", "M"] * (n // 2), "race": race, "y_effusion": y,
                       "p_effusion": np.clip(0.4 * y + rng.uniform(0, 0.6, n), 0, 1),
                       f"y_{HOSTILE}": y[::-1], f"p_{HOSTILE}": np.clip(0.3 * y[::-1] + rng.uniform(0, 0.7, n), 0, 1)})
    pred = d / "pred.csv"
    df.to_csv(pred, index=False)
    emb = df[["image_id", "patient_id", "sex", "race"]].copy()
    X = rng.standard_normal((n, 6)) + (race == HOSTILE)[:, None] * 0.8
    for j in range(6):
        emb[f"emb_{j}"] = X[:, j]
    emb_path = d / "emb.parquet"
    emb.to_parquet(emb_path)
    return d, pred, emb_path


@pytest.fixture(scope="module")
def audits(hostile, tmp_path_factory):
    """Two audit directories (audit + feature audit + probes), as `compare` reads them; built once."""
    d, pred, emb = hostile
    out = tmp_path_factory.mktemp("audits")
    a = out / "teacher"
    for argv in (["audit", str(pred), "--attribute", "race", "--attribute", "sex", "--n-boot", "20", "--min-n", "5",
                  "--out", str(a)],
                 ["audit-features", str(pred), "--features", "p_effusion", "--features", f"p_{HOSTILE}",
                  "--attribute", "race", "--out", str(a)],
                 ["probe-attributes", "--embeddings", str(emb), "--attribute", "race", "--folds", "2",
                  "--repeats", "1", "--n-boot", "20", "--out", str(a)]):
        _cli(argv)
    shutil.copytree(a, out / "student")  # compare reads directories; a copy is a valid (unchanged) second model
    return [a, out / "student"]


def test_audit_report_escapes(audits):
    assert_safe(audits[0] / "report.html", [HOSTILE, BREAKOUT])


def test_features_report_escapes(audits):
    assert_safe(audits[0] / "features_report.html", [HOSTILE, BREAKOUT])


def test_probes_report_escapes(audits):
    assert_safe(audits[0] / "probes_report.html", [HOSTILE])


@pytest.fixture(scope="module")
def compared(audits, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "compare"
    _cli(["compare", str(audits[0]), str(audits[1]), "--names", f"teacher,{HOSTILE}", "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def fair_out(hostile, tmp_path_factory):
    """`fair` on embeddings of a cohort whose race values are hostile (one method, one seed, one epoch)."""
    from cxrdistill.storage.store import EmbeddingStore

    d, pred, emb = hostile
    tmp = tmp_path_factory.mktemp("fair")
    df = pd.read_parquet(emb)
    n = len(df)
    cohort = cf.cohort_table(tmp / "cohort.parquet", n=n, image_id=df.image_id, patient_id=df.patient_id,
                             race=df.race, pleural_effusion=(np.arange(n) % 4 == 0).astype(float),
                             split=(["train", "train", "val", "test"] * n)[:n])
    st = EmbeddingStore.create(tmp / "store", (6,), "float32", {"name": "t", "version": "1"})
    st.append(list(df.image_id), df[[f"emb_{j}" for j in range(6)]].to_numpy(np.float32))
    out = tmp / "fair"
    _cli(["fair", "--cohort", str(cohort), "--embeddings", str(tmp / "store"), "--attribute", "race",
          "--tasks", "pleural_effusion", "--method", "erm", "--seeds", "0", "--epochs", "1", "--quiet",
          "--out", str(out)])
    return out


def test_compare_report_escapes(compared):
    pages = list(compared.glob("*.html"))
    assert pages
    for page in pages:
        assert_safe(page, [HOSTILE])


def test_fair_outputs_escape(fair_out):
    """`fair` writes tables and a plot (no HTML page today): every HTML file it writes is checked, and the hostile
    group name does reach its outputs."""
    assert HOSTILE in (fair_out / "fair_table.csv").read_text(encoding="utf-8")
    for page in fair_out.rglob("*.html"):
        assert_safe(page, [HOSTILE])


def test_study_report_escapes(hostile, audits, compared, fair_out, tmp_path):
    """The study report (``report.study_report.write_report``), rendered over a run directory assembled from the real
    hostile outputs above — the same files a study writes — and a results summary carrying the hostile names
    where a cohort's values and columns end up (groups, tasks, attributes, model names)."""
    from cxrdistill.report.study_report import write_report

    d, pred, emb = hostile
    run = tmp_path / "study"
    for who in ("teacher", "student"):
        shutil.copytree(audits[0], run / "audit" / who)
        (run / "probe" / who / "predictions").mkdir(parents=True)
        pd.read_csv(pred).to_parquet(run / "probe" / who / "predictions" / "test.parquet")
    shutil.copytree(compared, run / "audit" / "compare")
    shutil.copytree(fair_out, run / "fairness")
    block = {"params": 1000, "mean_auc": 0.8, "auc": {HOSTILE: 0.8, "effusion": 0.7},
             "auc_ci": {HOSTILE: [0.7, 0.9]}, "audit": {"race": {HOSTILE: {"auc_gap": 0.1}}},
             "attribute_probes": {"race": 0.7, HOSTILE: 0.6}, "feature_tests": {"n_tests": 3, "n_significant": 1}}
    res = {"name": HOSTILE, "tasks": [HOSTILE, "effusion"], "attributes": ["race"], "fairness_attribute": "race",
           "teacher": block, "student": block,
           "cohort": {"summary": {"images": 10, "race": {HOSTILE: 5, BREAKOUT: 5},
                                  "labels": {HOSTILE: {"pos": 1, "prevalence": 0.1}}},
                      "splits": {HOSTILE: 1}, "planted": {"scenario": {"race": HOSTILE}}},
           "fairness": {"erm": {"auc": 0.8, "auc_gap": 0.1}, HOSTILE: {"auc": 0.7, "auc_gap": 0.05}},
           "fair_distill": {HOSTILE: 1}, "pretraining": [{"init": HOSTILE, "auc": 0.7}],
           "stage_seconds": {HOSTILE: 1.0}}
    page = write_report(run, res)
    assert_safe(page, [HOSTILE, BREAKOUT])


def test_features_report_of_a_table_without_ids_escapes(hostile, tmp_path):
    """A peer's single table (unnamed index, no image_id, a hostile group and feature name) audited as published."""
    d, pred, emb = hostile
    df = pd.read_parquet(emb).drop(columns=["image_id"]).rename(columns={"emb_0": HOSTILE})
    df.to_csv(tmp_path / "peer.csv")  # pandas' default: an unnamed index column
    out = tmp_path / "out"
    _cli(["audit-features", str(tmp_path / "peer.csv"), "--features", HOSTILE, "--features", "emb_1",
          "--attribute", "race", "--out", str(out)])
    assert_safe(out / "features_report.html", [HOSTILE, BREAKOUT])
