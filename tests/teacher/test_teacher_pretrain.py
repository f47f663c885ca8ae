"""The default teacher: contrastive losses against their definitions, batch augmentation, and the README flow
(pretrain a tiny teacher → serve it with the real CLI → info → embed a synthetic cohort over HTTP)."""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxrdistill.cli import main
from cxrdistill.teachers.local import resolve_teacher
from cxrdistill.storage.store import EmbeddingStore
from cxrdistill.training.methods.teacher_pretrain import batch_augment, multilabel_supcon, nt_xent

CLI = str(Path(sys.executable).with_name("cxrdistill"))


def test_nt_xent_matches_its_definition():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    t = 0.2
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z)
    losses = []
    for i in range(n):  # Chen et al. 2020, eq. 1: -log exp(s_ij/t) / sum_{k != i} exp(s_ik/t), j = i's other view
        j = (i + 6) % n
        den = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(n) if k != i)
        losses.append(-math.log(math.exp(float(z[i] @ z[j]) / t) / den))
    assert float(nt_xent(z1, z2, t)) == pytest.approx(np.mean(losses), rel=1e-5)
    # identical views far apart from the others → near-zero loss; it cannot go below zero
    e = torch.eye(6) * 10
    assert float(nt_xent(e, e, 0.05)) < 1e-3


def test_multilabel_supcon_reduces_to_supcon_and_weights_by_jaccard():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(8, 5, generator=g)
    cls = torch.tensor([0, 1, 0, 2, 1, 0, 2, 1])
    y = F.one_hot(cls, 3).float()
    t = 0.1
    zn = F.normalize(z, dim=1)
    losses = []
    for i in range(8):  # Khosla et al. 2020, L_out
        den = sum(math.exp(float(zn[i] @ zn[a]) / t) for a in range(8) if a != i)
        pos = [p for p in range(8) if p != i and cls[p] == cls[i]]
        losses.append(-np.mean([math.log(math.exp(float(zn[i] @ zn[p]) / t) / den) for p in pos]))
    assert float(multilabel_supcon(z, y, t)) == pytest.approx(np.mean(losses), rel=1e-5)
    # multi-label: weight = Jaccard of the positive sets; NaN counts as not positive; anchors without partners skip
    y2 = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 1], [float("nan"), 0, 0]])
    z2 = torch.randn(4, 5, generator=g)
    zn = F.normalize(z2, dim=1)
    lp = torch.log_softmax((zn @ zn.t() / t).masked_fill(torch.eye(4, dtype=torch.bool), -1e9), dim=1)
    # anchor 0 ↔ 1: |{0}| / |{0,1}| = 0.5 both ways; anchor 2 and 3 have no partner
    want = -(0.5 * lp[0, 1] / 0.5 + 0.5 * lp[1, 0] / 0.5) / 2
    assert float(multilabel_supcon(z2, y2, t)) == pytest.approx(float(want), rel=1e-5)
    assert float(multilabel_supcon(z2, torch.zeros(4, 3), t)) == 0.0


def test_batch_augment_is_seeded_and_identity_at_zero_strength():
    x = torch.randn(4, 1, 16, 16)
    torch.manual_seed(3)
    a = batch_augment(x)
    torch.manual_seed(3)
    b = batch_augment(x)
    assert torch.equal(a, b) and a.shape == x.shape and not torch.allclose(a, x)
    same = batch_augment(x, degrees=0, translate=0, scale=0, brightness=0, contrast=0, noise=0)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)


def test_pretrain_serve_info_embed_readme_flow(tmp_path, capsys):
    ckpt = tmp_path / "teacher.safetensors"
    main(["teacher", "pretrain", "--out", str(ckpt), "--n", "48", "--size", "32", "--backbone", "resnet10t",
          "--epochs", "1", "--batch-size", "16", "--contrastive", "0.1", "--workers", "1", "--no-progress",
          "--run-dir", str(tmp_path / "run")])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    from cxrdistill.errors import CxrError
    from cxrdistill.teachers.pretrain import TeacherPretrainConfig, pretrain_teacher

    with pytest.raises(CxrError, match="another configuration.*differ: config.epochs"):  # a run dir only resumes its own run
        pretrain_teacher(tmp_path / "t2.safetensors", TeacherPretrainConfig(n=48, size=32, backbone="resnet10t", epochs=2,
                         batch_size=16), run_dir=tmp_path / "run")
    assert summary["backbone"] == "resnet10t" and summary["embedding_dim"] == 512 and summary["image_size"] == 32
    assert summary["n_train"] + summary["n_val"] == 48 and summary["n_val"] > 0
    t = resolve_teacher(f"torch:{ckpt}")
    assert t.info.embedding_shape == (512,) and t.info.image_size == 32 and len(t.info.extra["tasks"]) == 14
    assert t.info.extra["scenario"] == "pretrain" and t.info.name == "cxrdistill-synth-teacher"
    assert "proj.0.weight" not in t.model.state_dict()  # the contrastive projection head is not part of the teacher

    # a downstream synthetic cohort, embedded through the real `teacher serve` process
    from cxrdistill import synth

    images, meta = synth.render_batch(24, 32, seed=9, scenario="none")
    root = tmp_path / "ds"
    from PIL import Image
    for a, p in zip(images, meta.path):
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(root / p)
    meta.to_parquet(tmp_path / "cohort.parquet")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TEACHER_TOKEN": "s3cr3t-abc"}
    proc = subprocess.Popen([CLI, "teacher", "serve", f"torch:{ckpt}", "--port", "0", "--token-env",
                             "TEACHER_TOKEN", "--max-batch", "8"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        url, lines, t0 = None, [], time.monotonic()
        while url is None and time.monotonic() - t0 < 60:
            line = proc.stderr.readline()
            lines.append(line)
            m = re.search(r"serving at (http://127\.0\.0\.1:\d+) with bearer-token auth", line)
            url = m.group(1) if m else None
            assert proc.poll() is None, "".join(lines)
        assert url, "".join(lines)
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        os.environ["TEACHER_TOKEN"] = "s3cr3t-abc"
        try:
            main(["teacher", "info", url, "--token-env", "TEACHER_TOKEN"])
            info = json.loads(capsys.readouterr().out)
            assert info["embedding_shape"] == [512] and info["limits"]["max_batch"] == 8
            main(["embed", "--teacher", url, "--token-env", "TEACHER_TOKEN", "--cohort", str(tmp_path / "cohort.parquet"),
                  "--images-root", str(root), "--out", str(tmp_path / "store"), "--batch-size", "32", "--no-progress"])
        finally:
            del os.environ["TEACHER_TOKEN"]
        res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert res["embedded"] == 24 and res["requests"] == 1 + 3  # batch clamped to the server's max of 8
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    st = EmbeddingStore.open(tmp_path / "store")
    np.testing.assert_allclose(st.get(meta.image_id.tolist()), t.embed(images), rtol=1e-4, atol=1e-5)
    assert "s3cr3t-abc" not in "".join(lines) + proc.stderr.read()
