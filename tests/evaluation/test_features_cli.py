"""The audit-features / probe-attributes / compare commands end to end, on real files, in-process."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cxrdistill.cli import main
from features_fixtures import make_meta, write_npy

EVIL = "<script>alert(1)</script>"


def _run(argv):
    main([str(a) for a in argv])


def _fails(argv, capsys, *needles):
    with pytest.raises(SystemExit) as e:
        _run(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("feat")
    n = 160
    meta = make_meta(n, 11, race_values=("Asian", "Black or African American", EVIL))
    rng = np.random.default_rng(11)
    X = rng.normal(size=(n, 8))
    X[:, 0] += np.where(meta["sex"] == "M", 4.0, 0.0)
    write_npy(d, X[:150], meta["image_id"][:150].tolist())  # 10 metadata rows have no embedding
    meta.to_parquet(d / "meta.parquet")
    table = meta.copy()
    for j in range(3):
        table[f"emb_{j}"] = X[:, j]
    table.to_csv(d / "table.csv", index=False)
    return d, meta, X


def test_audit_features_embeddings_end_to_end(data, capsys):
    d, meta, _ = data
    out = d / "audit_emb"
    _run(["audit-features", "--embeddings", d / "emb.npy", "--metadata", d / "meta.parquet", "-a", "sex",
          "--pair", "race=Black or African American,Asian", "--split", "test", "--pca-variance", "0.9",
          "--tsne-points", "60", "--out", out])
    s = json.loads((out / "features_audit.json").read_text())
    test_ids = set(meta.loc[meta["split"] == "test", "image_id"])
    emb_ids = set(meta["image_id"][:150])
    ids = s["inputs"]["ids"]
    assert ids["n_matched"] == len(test_ids & emb_ids) == s["n_images"]
    assert ids["n_only_in_metadata"] == len(test_ids - emb_ids) and ids["n_only_in_embeddings"] == len(
        emb_ids - test_ids)
    k = s["pca"]["n_components"]
    assert s["n_tests"] == 2 * k and len(s["tests"]) == 2 * k
    assert {t["group_a"] for t in s["tests"]} == {"F", "Black or African American"}
    assert set(s["tests"][0]) >= {"feature", "attribute", "group_a", "group_b", "ks_stat", "p", "p_adj",
                                  "significant"}
    assert s["tests"][0]["feature"] == "mode_1" and s["tests"][0]["significant"]  # the planted sex direction
    assert 0 < s["bias_score"]["value"] <= s["bias_score"]["max_possible"]
    for f in ("features_report.html", "features_tests.parquet", "features_ks_heatmap.png", "features_pca12_sex.png",
              "features_tsne_sex.png", "features_pca_variance.png"):
        assert (out / f).stat().st_size > 0, f
    assert len(pd.read_parquet(out / "features_tests.parquet")) == 2 * k
    assert "matched" in capsys.readouterr().out


def test_columns_form_table_with_patterns_and_html_escaping(data):
    d, meta, _ = data
    out = d / "audit_cols"
    _run(["audit-features", d / "table.csv", "-f", "emb_*", "-a", "race", "--correction", "bonferroni",
          "--out", out])
    s = json.loads((out / "features_audit.json").read_text())
    assert s["features"] == ["emb_0", "emb_1", "emb_2"] and s["n_tests"] == 9
    assert s["bias_score"]["weighting"] == "uniform"
    html = (out / "features_report.html").read_text()
    assert EVIL not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html.lower()


def test_embeddings_as_parquet_table(data, tmp_path):
    d, meta, X = data
    t = pd.DataFrame(X, columns=[f"emb_{j}" for j in range(X.shape[1])]).assign(image_id=meta["image_id"])
    t.to_parquet(tmp_path / "e.parquet")
    _run(["audit-features", "--embeddings", tmp_path / "e.parquet", "--metadata", d / "meta.parquet", "-a", "sex",
          "--modes", "2", "--no-tsne", "--out", tmp_path / "o"])
    s = json.loads((tmp_path / "o" / "features_audit.json").read_text())
    assert s["pca"]["n_components"] == 2 and s["tsne"] is None and s["n_images"] == 160
    # the list-column layout of `cxrdistill embeddings export` gives the same audit
    pd.DataFrame({"image_id": meta["image_id"], "embedding": list(X)}).to_parquet(tmp_path / "l.parquet")
    _run(["audit-features", "--embeddings", tmp_path / "l.parquet", "--metadata", d / "meta.parquet", "-a", "sex",
          "--modes", "2", "--no-tsne", "--out", tmp_path / "o2"])
    s2 = json.loads((tmp_path / "o2" / "features_audit.json").read_text())
    assert [t["p"] for t in s2["tests"]] == [t["p"] for t in s["tests"]]


def test_embedding_store_input(data, tmp_path):
    from cxrdistill.storage.store import EmbeddingStore

    d, meta, X = data
    st = EmbeddingStore.create(tmp_path / "store", (X.shape[1],), "float32", {"name": "test"})
    st.append(meta["image_id"].tolist()[:100], X[:100].astype(np.float32))
    tok = EmbeddingStore.create(tmp_path / "tokens", (2, X.shape[1]), "float32", {"name": "tok"})
    tok.append(meta["image_id"].tolist()[:100], np.stack([X[:100], X[:100]], axis=1).astype(np.float32))
    from cxrdistill.evaluation.embedding_input import align, open_embeddings

    for store in ("store", "tokens"):
        al = align(open_embeddings(tmp_path / store), meta)
        assert al.ids["n_matched"] == 100 and al.ids["n_only_in_metadata"] == 60
        np.testing.assert_allclose(al.X, X[:100].astype(np.float32), rtol=1e-6)
    assert "mean-pooled" in al.ids["note"]
    _run(["audit-features", "--embeddings", tmp_path / "store", "--metadata", d / "meta.parquet", "-a", "sex",
          "--no-tsne", "--out", tmp_path / "o"])
    assert json.loads((tmp_path / "o" / "features_audit.json").read_text())["n_images"] == 100


def test_bad_inputs_exit_2_with_one_line(data, tmp_path, capsys):
    d, meta, _ = data
    _fails(["audit-features", d / "table.csv", "-f", "emb_9", "-a", "sex", "--out", tmp_path], capsys, "emb_9")
    _fails(["audit-features", d / "table.csv", "-f", "race", "-a", "sex", "--out", tmp_path], capsys, "not numeric")
    _fails(["audit-features", d / "table.csv", "-f", "emb_0", "-a", "nope", "--out", tmp_path], capsys, "nope")
    one = meta.assign(sex="F")
    one.to_csv(tmp_path / "one.csv", index=False)
    _fails(["audit-features", "--embeddings", d / "emb.npy", "--metadata", tmp_path / "one.csv", "-a", "sex",
            "--out", tmp_path], capsys, "distinct value")
    other = meta.assign(image_id=[f"other{i}" for i in range(len(meta))])
    other.to_csv(tmp_path / "other.csv", index=False)
    _fails(["audit-features", "--embeddings", d / "emb.npy", "--metadata", tmp_path / "other.csv", "-a", "sex",
            "--out", tmp_path], capsys, "no image_id is shared")
    _fails(["audit-features", d / "table.csv", "-f", "emb_0", "--pair", "race=Martian,Asian", "--out", tmp_path],
           capsys, "Martian")
    _fails(["audit-features", d / "table.csv", "-f", "emb_0", "-a", "sex", "--split", "holdout", "--out", tmp_path],
           capsys, "holdout")
    np.save(tmp_path / "noids.npy", np.zeros((3, 2)))
    _fails(["probe-attributes", "--embeddings", tmp_path / "noids.npy", "--metadata", d / "meta.parquet", "-a", "sex",
            "--out", tmp_path], capsys, "ids")
    _fails(["compare", tmp_path / "nowhere", tmp_path / "nowhere2", "--out", tmp_path], capsys, "not found")


def test_probe_attributes_cli(data, tmp_path, capsys):
    d, meta, _ = data
    _run(["probe-attributes", "--embeddings", d / "emb.npy", "--metadata", d / "meta.parquet", "-a", "sex",
          "-a", "age", "--folds", "3", "--n-boot", "200", "--out", tmp_path])
    p = json.loads((tmp_path / "probes.json").read_text())
    assert set(p) == {"sex", "age"}
    assert p["sex"]["auc"] > 0.9 and p["sex"]["grouped_cv"] and p["sex"]["chance"] == 0.5
    assert "regression" in p["age"]
    assert (tmp_path / "probes_auc.png").stat().st_size > 0 and (tmp_path / "probes_report.html").exists()
    assert "sex: AUC" in capsys.readouterr().out


def test_compare_cli_on_real_audits(tmp_path, capsys):
    """Audits from the performance audit's own ``run_audit``: a student with half the teacher's sex gap."""
    from cxrdistill.evaluation.audit import run_audit
    from cxrdistill.storage.io import write_json

    rng = np.random.default_rng(0)
    n = 3000
    sex = rng.choice(["F", "M"], n)
    y = rng.integers(0, 2, n)
    for name, gap in (("teacher", 1.0), ("student", 0.5)):
        sep = np.where(sex == "F", 1.6, 1.6 - gap)
        df = pd.DataFrame({"image_id": [f"i{i}" for i in range(n)], "sex": sex, "y_effusion": y,
                           "p_effusion": 1 / (1 + np.exp(-(y * sep + rng.normal(size=n))))})
        (tmp_path / name).mkdir()
        write_json(run_audit(df, ["sex"], n_boot=200, seed=1).to_json(), tmp_path / name / "audit.json")
        probes = {"sex": {"auc": 0.9 if name == "teacher" else 0.7, "auc_ci": [0.88, 0.92] if name == "teacher"
                          else [0.67, 0.73], "n": n, "per_class": {}}}
        (tmp_path / name / "probes.json").write_text(json.dumps(probes))
    _run(["compare", tmp_path / "teacher", tmp_path / "student", "--names", f"teacher,{EVIL}", "--out",
          tmp_path / "cmp"])
    c = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    row = next(r for r in c["rows"] if r["metric"] == "auc_gap")
    assert row["vs_reference"][EVIL]["verdict"] == "reduced"
    assert set(row["values"]) == {"teacher", EVIL}
    assert next(r for r in c["rows"] if r["metric"] == "probe_auc")["vs_reference"][EVIL]["verdict"] == "reduced"
    tidy = pd.read_parquet(tmp_path / "cmp" / "compare.parquet")
    assert {"model", "value", "ci_low", "ci_high", "se", "delta", "p", "p_adj", "verdict"} <= set(tidy.columns)
    html = (tmp_path / "cmp" / "report.html").read_text()
    assert EVIL not in html and "&lt;script&gt;" in html
    assert (tmp_path / "cmp" / "compare_gaps.png").stat().st_size > 0
    assert "reduced" in capsys.readouterr().out


def test_evaluation_modules_do_not_import_torch():
    code = ("import sys; import cxrdistill.evaluation.features, cxrdistill.evaluation.probes, "
            "cxrdistill.evaluation.compare, cxrdistill.evaluation.embedding_input, cxrdistill.report.feature_report, "
            "cxrdistill.commands.audit_features; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
