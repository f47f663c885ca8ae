"""`teacher pretrain` keeps its checkpoints in OUT.run/ by default: a killed run resumes there and ends with the
weights of an uninterrupted one, a finished run returns its summary at once, and another configuration is refused."""
from __future__ import annotations

import json

import pytest
import torch

from cxrdistill.cli import main
from cxrdistill.storage.checkpoint import load_weights
from cxrdistill.training.methods.teacher_pretrain import TeacherPretrain

ARGS = ["--n", "40", "--size", "32", "--backbone", "resnet10t", "--epochs", "2", "--batch-size", "16",
        "--workers", "1", "--threads", "1", "--no-progress"]


def _pretrain(out, *extra):
    main(["teacher", "pretrain", "--out", str(out), *ARGS, *extra])


def test_killed_teacher_pretrain_resumes_from_out_run(tmp_path, die_once_at_epoch_1, capsys):
    straight, killed = tmp_path / "straight.safetensors", tmp_path / "killed.safetensors"
    _pretrain(straight)
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    started = die_once_at_epoch_1(TeacherPretrain)
    with pytest.raises(RuntimeError, match="killed"):
        _pretrain(killed)
    assert not killed.exists()
    run = tmp_path / "killed.safetensors.run"
    assert (run / "checkpoints" / "last.pt").exists() and not (run / "teacher_pretrain.json").exists()
    assert [h["epoch"] for h in json.loads((run / "history.json").read_text())] == [1]
    capsys.readouterr()

    _pretrain(killed)
    err = capsys.readouterr().err
    assert f"resumed from {run / 'checkpoints' / 'last.pt'} after epoch 1" in err and started == [0, 1, 1]
    a, _ = load_weights(straight)
    b, _ = load_weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((run / "run.json").read_text())["stage"] == "teacher-pretrain"

    # finished: the stored summary comes back without training again (the checkpoint is not rewritten)
    stamp = killed.stat().st_mtime_ns
    _pretrain(killed)
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert killed.stat().st_mtime_ns == stamp
    assert again["val_auc"] == first["val_auc"] and again["epochs"] == 2

    # another configuration in the same run directory is refused, naming the directory, the setting and what to do
    with pytest.raises(SystemExit) as exc:
        _pretrain(killed, "--lr", "0.01")
    assert exc.value.code == 2
    msg = capsys.readouterr().err
    assert str(run) in msg and "config.lr" in msg and "use another --run-dir" in msg

    # ... or started over when asked to (the study's teacher stage, whose settings changed)
    from cxrdistill.teachers.pretrain import TeacherPretrainConfig, pretrain_teacher

    cfg = TeacherPretrainConfig(n=40, size=32, backbone="resnet10t", epochs=2, batch_size=16, workers=1, lr=0.01)
    pretrain_teacher(killed, cfg, run_dir=run, progress=False, restart_changed=True)
    assert started == [0, 1, 1, 0, 1] and json.loads((run / "run.json").read_text())["config"]["lr"] == 0.01
