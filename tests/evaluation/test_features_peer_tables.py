"""audit-features on tables keyed the way peers key them: Glocker et al.'s published sample layout (an unnamed index,
``Path``, PCA-mode columns, no image_id) run exactly as their command reads, checked against scipy's KS test and an
independent Benjamini–Yekutieli adjustment; joins keyed by ``--id-column``."""
from __future__ import annotations

import csv
import itertools
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from cxrdistill.cli import main

MODES = [f"PCA Mode {k}" for k in range(1, 5)]
# the header of samples/cxr-foundation.embeddings.csv (its first field is blank: pandas' unnamed index)
HEADER = ["", "Unnamed: 0", "Unnamed: 0.1", "patient_id", "race", "ethnicity", "Path", "sex", "age", "Frontal/Lateral",
          "AP/PA", "Pleural Effusion", "Unnamed: 0.1.1", "split", "race_label", "sex_label", "disease",
          "disease_label", "path_preproc", "age_bin", "path_embed", *MODES, "t-SNE Dimension 1",
          "t-SNE Dimension 2"]


def _fails(argv, capsys, *needles):
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    for n in needles:
        assert n in err, err
    return err


def by_adjust(p: np.ndarray) -> np.ndarray:
    """Benjamini–Yekutieli (1993/2001) step-up, written out directly: p_(i) * m * c(m) / i, made monotone from
    the largest p down, capped at 1 (c(m) = sum 1/k)."""
    m = len(p)
    c = sum(1.0 / k for k in range(1, m + 1))
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p[i] * m * c / rank)
        out[i] = min(running, 1.0)
    return np.array(out)


def write_peer_table(path, n=300, seed=3):
    """A small file laid out like Glocker et al.'s: race shifts mode 1, sex shifts mode 2, effusion shifts mode 3."""
    rng = np.random.default_rng(seed)
    race = rng.choice(["White", "Asian", "Black"], n)
    sex = rng.choice(["Female", "Male"], n)
    disease = rng.choice(["Pleural Effusion", "No Finding", "Other"], n, p=[0.4, 0.3, 0.3])
    Z = rng.normal(size=(n, 4))
    Z[:, 0] += np.select([race == "Asian", race == "Black"], [1.0, -0.8], 0.0)
    Z[:, 1] += np.where(sex == "Male", 1.0, 0.0)
    Z[:, 2] += np.where(disease == "Pleural Effusion", 1.2, 0.0)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for i in range(n):
            pid = f"patient{10000 + i}"
            rel = f"CheXpert-v1.0/train/{pid}/study1/view1_frontal.jpg"
            w.writerow([i * 7, i * 3, i * 5, pid, race[i], "Non-Hispanic/Non-Latino", rel, sex[i], 60, "Frontal", "AP",
                        "1.0" if disease[i] == "Pleural Effusion" else "", float(i), "test", 0, int(sex[i] == "Female"),
                        disease[i], 1, f"preproc_224x224/{pid}.jpg", 5, f"cxr-foundation/chexpert/{pid}.tfrecord",
                        *[repr(float(v)) for v in Z[i]], *rng.normal(size=2).round(4)])
    return pd.DataFrame({"Path": [f"CheXpert-v1.0/train/patient{10000 + i}/study1/view1_frontal.jpg"
                                  for i in range(n)], "race": race, "sex": sex, "disease": disease}), Z


def test_glocker_sample_layout_runs_as_published(tmp_path, capsys):
    f = tmp_path / "cxr-foundation.embeddings.csv"
    truth, Z = write_peer_table(f)
    out = tmp_path / "audit"
    # their command, word for word (no id column, no --id-column: a single table needs no join)
    main(["audit-features", str(f), "--features", "PCA Mode 1", "--features", "PCA Mode 2", "--features",
          "PCA Mode 3", "--features", "PCA Mode 4", "--attribute", "race", "--attribute", "sex", "--pair",
          "disease=Pleural Effusion,No Finding", "--out", str(out)])
    s = json.loads((out / "features_audit.json").read_text())
    assert s["features"] == MODES and s["n_images"] == len(truth)
    assert not any(str(c).startswith("Unnamed") for c in s["features"])

    # independent recomputation: the same 5 comparisons × 4 modes as their notebook, BY over all 20
    comps = [("race", a, b) for a, b in itertools.combinations(["Asian", "Black", "White"], 2)]
    comps += [("sex", "Female", "Male"), ("disease", "Pleural Effusion", "No Finding")]
    want = []
    for attr, a, b in comps:
        for k, mode in enumerate(MODES):
            r = ks_2samp(Z[truth[attr] == a, k], Z[truth[attr] == b, k])
            want.append((mode, attr, a, b, r.statistic, r.pvalue))
    p_raw = np.array([w[-1] for w in want])
    p_adj = by_adjust(p_raw)
    try:  # statsmodels, when installed, as a third opinion on the BY adjustment
        from statsmodels.stats.multitest import multipletests
        np.testing.assert_allclose(multipletests(p_raw, method="fdr_by")[1], p_adj, rtol=1e-12)
    except ImportError:
        pass
    got = {(t["feature"], t["attribute"], frozenset((t["group_a"], t["group_b"]))): t for t in s["tests"]}
    assert len(got) == len(want) == 20
    for (mode, attr, a, b, stat, p), q in zip(want, p_adj):
        t = got[(mode, attr, frozenset((a, b)))]
        assert t["ks_stat"] == pytest.approx(stat, rel=1e-12)
        assert t["p"] == pytest.approx(p, rel=1e-9)
        assert t["p_adj"] == pytest.approx(q, rel=1e-9)
        assert t["significant"] == (q < 0.05)
    # the planted shifts are found, and BY is not a no-op on this family
    assert got[("PCA Mode 1", "race", frozenset(("Asian", "Black")))]["significant"]
    assert got[("PCA Mode 3", "disease", frozenset(("Pleural Effusion", "No Finding")))]["significant"]
    assert p_adj.max() > p_raw.max() or (p_adj > p_raw).any()
    assert "20 tests" in capsys.readouterr().out


def test_joins_keyed_by_id_column_on_either_side(tmp_path, capsys):
    f = tmp_path / "peer.csv"
    truth, _ = write_peer_table(f, n=120, seed=5)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(len(truth), 6))
    X[:, 0] += np.where(truth["sex"] == "Male", 3.0, 0.0)
    # an embedding table keyed by Path, written with pandas' default (unnamed) index
    emb = pd.DataFrame(X, columns=[f"emb_{j}" for j in range(6)]).assign(Path=truth["Path"])
    emb.iloc[::-1].to_csv(tmp_path / "emb.csv")
    np.save(tmp_path / "emb.npy", X)
    truth[["Path"]].to_csv(tmp_path / "ids.csv")  # a .npy's ids as a table keyed by Path
    runs = {
        "table": ["--embeddings", tmp_path / "emb.csv", "--metadata", f],
        "npy": ["--embeddings", tmp_path / "emb.npy", "--embedding-ids", tmp_path / "ids.csv", "--metadata", f],
    }
    p_first = {}
    for name, args in runs.items():
        main([str(a) for a in ["audit-features", *args, "--id-column", "Path", "-a", "sex", "--modes", "2",
                               "--no-tsne", "--out", tmp_path / name]])
        s = json.loads((tmp_path / name / "features_audit.json").read_text())
        assert s["inputs"]["ids"]["n_matched"] == len(truth) and s["inputs"]["ids"]["n_only_in_metadata"] == 0
        assert s["tests"][0]["significant"]  # the planted sex direction is PCA mode 1
        p_first[name] = [t["p"] for t in s["tests"]]
    assert p_first["table"] == pytest.approx(p_first["npy"], rel=1e-9)
    # the embeddings keyed by Path, the metadata by its own image_id column (same values): --id-column on one side
    truth.assign(image_id=truth["Path"]).drop(columns="Path").to_parquet(tmp_path / "meta.parquet")
    main([str(a) for a in ["audit-features", "--embeddings", tmp_path / "emb.csv", "--metadata",
                           tmp_path / "meta.parquet", "--id-column", "Path", "-a", "sex", "--modes", "2",
                           "--no-tsne", "--out", tmp_path / "mixed"]])
    s = json.loads((tmp_path / "mixed" / "features_audit.json").read_text())
    assert [t["p"] for t in s["tests"]] == pytest.approx(p_first["table"], rel=1e-9)
    # a join without a key says which option to use
    _fails(["audit-features", "--embeddings", tmp_path / "emb.csv", "--metadata", f, "-a", "sex",
            "--out", tmp_path / "x"], capsys, "no image_id column", "--id-column")
    _fails(["audit-features", "--embeddings", tmp_path / "emb.csv", "--metadata", f, "--id-column", "Pth",
            "-a", "sex", "--out", tmp_path / "x"], capsys, "neither 'Pth' nor 'image_id'")
