"""``cxrdistill fair`` in-process: tiny embeddings (every output file and its meaning), images, re-runs, bad input."""
import json

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from cxrdistill.cli import main
from cxrdistill.storage.store import EmbeddingStore


@pytest.fixture(scope="module")
def emb_cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp("emb")
    rng = np.random.default_rng(0)
    n = 300
    sex = np.where(rng.random(n) < 0.3, "F", "M").astype(object)
    sex[:5] = None  # unknown attribute: left out
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y1 = (x[:, 0] + np.where(sex == "F", x[:, 1], 0) + rng.normal(size=n) * 0.5 > 0).astype(float)
    y2 = np.where(rng.random(n) < 0.1, -1.0, (x[:, 2] > 0).astype(float))  # some uncertain labels
    ids = [f"im{i}" for i in range(n)]
    df = pd.DataFrame({"image_id": ids, "patient_id": [f"p{i // 2}" for i in range(n)], "sex": sex,
                       "split": np.array(["train", "train", "val", "test"])[(np.arange(n) // 2) % 4],
                       "pleural_effusion": y1, "edema": y2, "true_pleural_effusion": y1, "true_edema": (y2 == 1) * 1.0})
    df.to_parquet(d / "cohort.parquet")
    st = EmbeddingStore.create(d / "store", (8,), "float32", {"name": "unit-test"})
    st.append(ids, x)
    return d


def _run(d, out, *extra):
    main(["fair", "--cohort", str(d / "cohort.parquet"), "--attribute", "sex", "--tasks", "pleural_effusion,edema",
          "--embeddings", str(d / "store"), "--seeds", "0,1,2", "--epochs", "2", "--out", str(out), "--quiet",
          *extra])


def test_fair_cli_on_embeddings(emb_cohort, tmp_path, capsys):
    out = tmp_path / "out"
    _run(emb_cohort, out, "--method", "erm", "--method", "resample", "--method", "fairdi",
         "--label-policy", "u-ones", "--set", "fairdi.group_batch_size=16", "--set", "train.batch_size=32")
    text = capsys.readouterr().out
    assert "| fairdi | 3 |" in text
    for f in ("fair_results.parquet", "fair_table.csv", "fair_table.md", "fair.json", "pareto.png",
              "fair_config.json", "predictions/erm_seed0.parquet"):
        assert (out / f).exists(), f
    js = json.loads((out / "fair.json").read_text())
    assert set(js) == {"erm", "resample", "fairdi"}
    for v in js.values():
        assert {"auc", "worst_group_auc", "auc_gap", "es_auc", "psd", "group_auc"} <= set(v)
        assert set(v["group_auc"]) == {"F", "M"}
    tidy = pd.read_parquet(out / "fair_results.parquet")
    assert list(tidy.columns) == ["seed", "method", "labels", "attribute", "task", "group", "metric", "value", "n",
                                  "n_pos"]
    assert set(tidy["labels"]) == {"observed", "true"} and set(tidy["seed"]) == {0, 1, 2}
    # the per-seed numbers behind the table: mean over tasks; the p-value is scipy's paired t-test
    obs = tidy[(tidy.labels == "observed") & (tidy.group == "(summary)") & (tidy.metric == "auc_gap")]
    gaps = obs.groupby(["method", "seed"])["value"].mean()
    assert js["fairdi"]["auc_gap"] == pytest.approx(gaps["fairdi"].mean())
    p = scipy.stats.ttest_rel(gaps["fairdi"].sort_index(), gaps["erm"].sort_index()).pvalue
    assert js["fairdi"]["vs_erm"]["auc_gap"]["p"] == pytest.approx(p)
    # predictions table: the shared format, audit-ready
    pred = pd.read_parquet(out / "predictions" / "fairdi_seed1.parquet")
    assert {"image_id", "sex", "y_pleural_effusion", "p_pleural_effusion", "ytrue_edema"} <= set(pred.columns)
    assert pred["sex"].notna().all() and len(pred) == len(set(pred["image_id"]))
    cfg = json.loads((out / "fair_config.json").read_text())
    assert any("unknown sex" in n for n in cfg["notes"]) and cfg["groups"] == ["F", "M"]
    # a re-run reuses every finished (method, seed)
    before = (out / "predictions" / "erm_seed2.parquet").stat().st_mtime_ns
    _run(emb_cohort, out, "--method", "erm", "--method", "resample", "--method", "fairdi", "--label-policy",
         "u-ones", "--set", "fairdi.group_batch_size=16", "--set", "train.batch_size=32")
    assert (out / "predictions" / "erm_seed2.parquet").stat().st_mtime_ns == before


def test_fair_cli_on_images(synth_files, tmp_path):
    cohort, root = synth_files
    out = tmp_path / "img"
    main(["fair", "--cohort", str(cohort), "--images-root", str(root), "--size", "32", "--attribute", "race",
          "--tasks", "pleural_effusion,cardiomegaly", "--label-source", "true", "--backbone", "resnet10t",
          "--method", "erm", "--method", "groupdro", "--seeds", "0", "--epochs", "1", "--batch-size", "16",
          "--select", "worst", "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--quiet"])
    js = json.loads((out / "fair.json").read_text())
    assert set(js) == {"erm", "groupdro"}
    info = json.loads((out / "runs" / "erm" / "seed0" / "result.json").read_text())
    assert info["info"]["select"] == "worst"


@pytest.mark.parametrize("args, msg", [
    (["--method", "nope"], "unknown fairness method 'nope'"),
    (["--tasks", "no_such_label"], "no_such_label"),
    (["--attribute", "shoe_size"], "shoe_size"),
    (["--set", "fairdi.lam"], "KEY=VALUE"),
    (["--set", "train.epoch=3"], "train.epoch"),
    (["--seeds", "a,b"], "--seeds"),
])
def test_fair_cli_bad_input_is_one_line(emb_cohort, tmp_path, capsys, args, msg):
    base = {"--attribute": "sex", "--tasks": "pleural_effusion", "--method": "erm"}
    over = dict(zip(args[::2], args[1::2]))
    argv = ["fair", "--cohort", str(emb_cohort / "cohort.parquet"), "--embeddings", str(emb_cohort / "store"),
            "--out", str(tmp_path / "o"), "--epochs", "1", "--seeds", "0", "--quiet"]
    for k, v in {**base, **over}.items():
        argv += [k, v]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o" / "fair.json").exists()


def test_fair_cli_needs_exactly_one_input(emb_cohort, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["fair", "--cohort", str(emb_cohort / "cohort.parquet"), "--attribute", "sex", "--tasks", "edema",
              "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "exactly one of --embeddings" in capsys.readouterr().err


def test_fair_cli_yaml_config_is_validated(emb_cohort, tmp_path, capsys):
    cfg = tmp_path / "fair.yaml"
    cfg.write_text("methods: [erm]\nseeds: [0]\nmethod_parms: {fairdi: {lam: 0.9}}\n")
    with pytest.raises(SystemExit) as e:
        main(["fair", "--cohort", str(emb_cohort / "cohort.parquet"), "--embeddings", str(emb_cohort / "store"),
              "--attribute", "sex", "--tasks", "edema", "--config", str(cfg), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "method_parms" in err and "fair.yaml" in err
    cfg.write_text("methods: [erm, groupdro]\nseeds: [0]\nmethod_params: {groupdro: {step_size: 0.1}}\n"
                   "train: {epochs: 1, batch_size: 32}\nhead: linear\n")
    main(["fair", "--cohort", str(emb_cohort / "cohort.parquet"), "--embeddings", str(emb_cohort / "store"),
          "--attribute", "sex", "--tasks", "edema", "--config", str(cfg), "--out", str(tmp_path / "o"), "--quiet"])
    conf = json.loads((tmp_path / "o" / "fair_config.json").read_text())["config"]
    assert conf["head"] == "linear" and conf["method_params"] == {"groupdro": {"step_size": 0.1}}
    assert json.loads((tmp_path / "o" / "runs" / "erm" / "seed0" / "result.json").read_text())["epochs"] == 1
