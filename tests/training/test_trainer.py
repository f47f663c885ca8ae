"""The shared trainer: learns, resumes exactly after SIGKILL, and runs under torchrun with the same result."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrdistill.errors import CxrError
from cxrdistill.storage.checkpoint import load_state, load_weights
from cxrdistill.training.data import ArrayDataset
from cxrdistill.training.methods.supervised import Supervised
from cxrdistill.training.trainer import Trainer, TrainConfig

HERE = Path(__file__).parent
SCRIPT = HERE / "train_script.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE)}


def _emb_data(n, seed, d=32, k=2):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    w = np.random.default_rng(99).normal(size=(d, k))
    y = (x @ w + rng.normal(size=(n, k)) > 0).astype(np.float32)
    return ArrayDataset(x=x, y=y, g=(x[:, 0] > 0).astype(np.int64))


def test_linear_head_learns_and_logs(tmp_path):
    model = torch.nn.Linear(32, 2)
    cfg = TrainConfig(epochs=5, batch_size=64, lr=1e-2, progress=False)
    tr = Trainer(model, Supervised(), _emb_data(600, 0), _emb_data(300, 1), cfg, run_dir=tmp_path)
    hist = tr.fit()
    assert len(hist) == 5
    assert hist[-1]["val_auc"] > 0.85
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert "val_worst_auc" in hist[-1] and hist[-1]["val_auc_gap"] >= 0
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "best.safetensors").exists()
    assert json.loads((tmp_path / "history.json").read_text())[-1]["epoch"] == 5


def test_early_stopping_stops(tmp_path):
    class Flat(Supervised):
        def validate(self, model, batches):
            return {"val_auc": 0.5}

    cfg = TrainConfig(epochs=20, batch_size=64, early_stopping=2, progress=False)
    hist = Trainer(torch.nn.Linear(32, 2), Flat(), _emb_data(200, 0), _emb_data(50, 1), cfg).fit()
    assert len(hist) == 3  # best at epoch 1, then two epochs without improvement


def test_grad_accumulation_equals_large_batch():
    d = _emb_data(256, 0)

    def run(bs, acc):
        torch.manual_seed(0)
        m = torch.nn.Linear(32, 2)
        cfg = TrainConfig(epochs=1, batch_size=bs, grad_accum=acc, lr=0.1, optimizer="sgd", momentum=0.0,
                          schedule="constant", weight_decay=0.0, progress=False)
        tr = Trainer(m, Supervised(), d, None, cfg)
        tr._epoch_indices = lambda e: torch.arange(256)  # same order for both
        tr.fit()
        return m.weight.detach().clone()

    assert torch.allclose(run(64, 1), run(16, 4), atol=1e-6)


def test_last_batch_of_one_is_folded_so_batchnorm_trains():
    """65 samples at batch 32: the lone 65th sample joins the second batch instead of crashing BatchNorm."""
    model = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 2))
    cfg = TrainConfig(epochs=2, batch_size=32, lr=1e-2, progress=False)
    tr = Trainer(model, Supervised(), _emb_data(65, 0), None, cfg)
    assert tr.steps_per_epoch == 2
    hist = tr.fit()
    assert [h["train_samples"] for h in hist] == [65, 65]  # every sample is still seen each epoch
    assert tr.global_step == 4


def test_divergence_is_a_clear_error():
    d = _emb_data(64, 0)
    d.arrays["x"][0, 0] = float("nan")
    with pytest.raises(CxrError, match="diverged"):
        Trainer(torch.nn.Linear(32, 2), Supervised(), d, None, TrainConfig(epochs=1, progress=False)).fit()


def _final(run_dir):
    sd, _ = load_weights(Path(run_dir) / "model.safetensors")
    hist = json.loads((Path(run_dir) / "history.json").read_text())
    return sd, hist


def test_sigkill_three_times_then_resume_matches_uninterrupted(tmp_path):
    epochs, n = 6, 384
    clean = tmp_path / "clean"
    subprocess.run([sys.executable, str(SCRIPT), str(clean), str(epochs), str(n)], check=True, env=ENV)
    ref_sd, ref_hist = _final(clean)

    killed = tmp_path / "killed"
    rng = random.Random(3)
    kills = 0
    for _ in range(3):
        p = subprocess.Popen([sys.executable, str(SCRIPT), str(killed), str(epochs), str(n)], env=ENV)
        time.sleep(rng.uniform(1.5, 4.0))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
    assert kills >= 2, "the job finished before it could be killed; make it longer"
    state = load_state(killed / "checkpoints" / "last.pt") if (killed / "checkpoints" / "last.pt").exists() else None
    assert state is None or state["epoch"] < epochs or kills < 3
    subprocess.run([sys.executable, str(SCRIPT), str(killed), str(epochs), str(n)], check=True, env=ENV)
    sd, hist = _final(killed)
    assert [h["epoch"] for h in hist] == list(range(1, epochs + 1))
    for k in ref_sd:
        assert torch.equal(sd[k], ref_sd[k]), k
    assert [round(h["val_auc"], 12) for h in hist] == [round(h["val_auc"], 12) for h in ref_hist]


def test_torchrun_two_processes_match_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, str(SCRIPT), str(one), "2", "256"], check=True, env=ENV)
    torchrun = Path(sys.executable).parent / "torchrun"
    subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(SCRIPT), str(two), "2", "256"],
                   check=True, env=ENV, timeout=300)
    sd1, h1 = _final(one)
    sd2, h2 = _final(two)
    for k in sd1:
        assert torch.allclose(sd1[k], sd2[k], atol=1e-4, rtol=1e-3), k
    assert abs(h1[-1]["val_auc"] - h2[-1]["val_auc"]) < 1e-3
