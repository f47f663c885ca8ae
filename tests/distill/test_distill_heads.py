"""Heads on frozen embeddings (linear / MLP-3 / MLP-5 of Glocker et al.), their saving, and the predictions table."""
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cxrdistill.models.heads import HEADS, head_input_dim, load_head, save_head
from cxrdistill.training.data import ArrayDataset
from cxrdistill.training.methods.probe import Probe
from cxrdistill.training.predict import aggregate_studies, attach_metrics, predictions_table
from cxrdistill.training.trainer import TrainConfig, Trainer

WIDTHS = {"linear": [3], "mlp3": [512, 512, 3], "mlp5": [512, 512, 128, 128, 3]}


@pytest.mark.parametrize("kind", ["linear", "mlp3", "mlp5"])
def test_architecture_and_shapes(kind):
    head = HEADS.create(kind, in_dim=20, num_classes=3)
    lins = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in lins] == WIDTHS[kind]
    assert lins[0].in_features == 20
    assert head(torch.randn(7, 20)).shape == (7, 3)
    assert head(torch.randn(7, 5, 20)).shape == (7, 3)  # tokens mean-pooled
    flat = HEADS.create(kind, in_dim=head_input_dim((5, 4), "flatten"), num_classes=3, pool="flatten")
    assert flat(torch.randn(2, 5, 4)).shape == (2, 3)


def _data(n, seed, d=24, scale=30.0):
    r = np.random.default_rng(seed)
    w = np.random.default_rng(99).normal(size=(d, 2))
    x = r.normal(size=(n, d))
    y = (x @ w + 0.5 * r.normal(size=(n, 2)) > 0).astype(np.float32)
    return ArrayDataset(x=(x * scale + 100).astype(np.float32), y=y)  # badly scaled: standardisation matters


@pytest.mark.parametrize("kind", ["linear", "mlp3", "mlp5"])
def test_heads_learn_on_standardised_embeddings(kind, tmp_path):
    tr, va = _data(600, 0), _data(300, 1)
    head = HEADS.create(kind, in_dim=24, num_classes=2)
    x = tr.arrays["x"].double()
    head.set_standardization(x.mean(0), x.std(0))
    cfg = TrainConfig(epochs=5, batch_size=64, lr=1e-2, optimizer="adam", weight_decay=0, schedule="constant",
                      progress=False)
    hist = Trainer(head, Probe(), tr, va, cfg, run_dir=tmp_path).fit()
    assert hist[-1]["val_auc"] > 0.9
    save_head(head, tmp_path / "h.safetensors", probe={"tasks": ["a", "b"]})
    back, meta = load_head(tmp_path / "h.safetensors")
    xs = va.arrays["x"][:10]
    assert torch.allclose(back.eval()(xs), head.eval()(xs), atol=1e-6)
    assert meta["probe"]["tasks"] == ["a", "b"]


def test_folded_linear_equals_standardised_head():
    head = HEADS.create("linear", in_dim=6, num_classes=2)
    head.set_standardization(torch.randn(6), torch.rand(6) + 0.5)
    x = torch.randn(9, 6)
    assert torch.allclose(head.folded_linear()(x), head(x), atol=1e-5)


def _rows():
    return pd.DataFrame({"image_id": ["a", "b", "c", "d"], "patient_id": ["p1", "p1", "p2", "p3"],
                         "study_id": ["s1", "s1", "s2", "s3"], "sex": ["F", "F", "M", None],
                         "race": ["Asian", "Asian", "Black", "White"], "age": [50.0, 50.0, 61.0, 70.0],
                         "view": ["PA", "LATERAL", "AP", "PA"], "frontal": [True, False, True, True],
                         "split": "test", "true_edema": [1.0, 1.0, 0.0, 0.0], "synth_site": [0, 0, 1, 1]})


def test_predictions_table_format():
    scores = np.array([[0.9], [0.2], [0.4], [0.1]])
    y = np.array([[1.0], [np.nan], [0.0], [0.0]])
    pred = predictions_table(_rows(), ["edema"], scores, y)
    assert list(pred["image_id"]) == ["a", "b", "c", "d"]
    for c in ("sex", "race", "age", "patient_id", "synth_site", "y_edema", "p_edema", "ytrue_edema"):
        assert c in pred.columns
    assert np.isnan(pred["y_edema"][1])  # unknown label stays blank
    assert pred["ytrue_edema"].tolist() == [1.0, 1.0, 0.0, 0.0]
    from cxrdistill.evaluation.predictions import find_tasks

    assert find_tasks(pred) == ["edema"] and find_tasks(pred, labels="true") == ["edema"]


def test_study_aggregation_takes_the_max_over_views():
    scores = np.array([[0.3], [0.8], [0.4], [0.1]])
    y = np.array([[np.nan], [1.0], [0.0], [0.0]])
    st = predictions_table(_rows(), ["edema"], scores, y, aggregate="study")
    assert list(st["image_id"]) == ["s1", "s2", "s3"]
    s1 = st.set_index("image_id").loc["s1"]
    assert s1["p_edema"] == 0.8 and s1["y_edema"] == 1.0 and s1["n_images"] == 2 and s1["sex"] == "F"
    with pytest.raises(Exception, match="study_id"):
        predictions_table(_rows().drop(columns="study_id"), ["edema"], scores, y, aggregate="study")
    assert len(aggregate_studies(predictions_table(_rows(), ["edema"], scores, y), ["edema"])) == 3


def test_metrics_table_point_values_match_sklearn():
    r = np.random.default_rng(0)
    n = 200
    rows = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "sex": r.choice(["F", "M"], n)})
    y = (r.random((n, 2)) < 0.3).astype(float)
    s = y * 0.8 + r.random((n, 2))
    pred = predictions_table(rows, ["t1", "t2"], s, y)
    m = attach_metrics(pred, ["t1", "t2"], n_boot=200)
    auc = m[(m.metric == "auc")].set_index("task")
    for k, t in enumerate(["t1", "t2"]):
        assert auc.loc[t, "value"] == pytest.approx(roc_auc_score(y[:, k], s[:, k]), abs=1e-12)
        assert auc.loc[t, "ci_low"] < auc.loc[t, "value"] < auc.loc[t, "ci_high"]
    assert set(m.metric) >= {"auc", "auc_pr", "max_youden", "youden", "tpr", "fpr"}
    assert set(m.columns) >= {"labels", "task", "metric", "value", "ci_low", "ci_high"}
