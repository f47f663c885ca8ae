"""The run directories of the fair-distillation study (``teachers/<scenario>/``, ``runs/<scenario>/<method>/seed<s>/``):
a teacher or student that died after its first epoch resumes and ends where an uninterrupted one ends; a finished
one is reused; a changed setting starts that run over (its directory emptied) instead of resuming another
configuration's checkpoint."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cxrdistill.fairkd import experiment as X
from cxrdistill.training.methods.distill import Distill
from cxrdistill.training.methods.supervised import Supervised

TEACHER = {"backbone": "lcnet_035", "embed_dim": 8, "epochs": 2, "batch_size": 32}
STUDENT = {"backbone": "lcnet_035", "epochs": 2, "batch_size": 32}


def _cfg(**student):
    return X.make_config(scenarios=["underdiagnosis"], seeds=[0], n=80, size=16, distill_extra=0, methods=[],
                         tasks=["cardiomegaly", "pleural_effusion"], teacher=TEACHER, student={**STUDENT, **student},
                         ks_modes=2)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return X.prepare_cohort("underdiagnosis", _cfg(), tmp_path_factory.mktemp("fairkd_cache"), lambda s: None)


def test_killed_teacher_and_student_resume_and_a_changed_setting_starts_over(cohort, tmp_path, die_once_at_epoch_1):
    cfg, log = _cfg(), (lambda s: None)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    T0, tinfo = X.train_teacher(cohort, cfg, straight, log)
    E0, _, _ = X.train_student(cohort, T0, "kd", 0, cfg, straight, log, tinfo["key"])

    started = die_once_at_epoch_1(Supervised)
    with pytest.raises(RuntimeError, match="killed"):
        X.train_teacher(cohort, cfg, killed, log)
    td = killed / "teachers" / "underdiagnosis"
    assert (td / "run" / "checkpoints" / "last.pt").exists() and not (td / "teacher.json").exists()
    T1, tinfo1 = X.train_teacher(cohort, cfg, killed, log)
    assert started == [0, 1, 1]  # resumed at epoch 1: epoch 0 was not trained again
    assert tinfo1["epochs"] == 2 and not (td / "run").exists()  # the checkpoints go once the teacher is done
    np.testing.assert_allclose(T1, T0, rtol=0, atol=1e-5)
    assert tinfo1["key"] == tinfo["key"]  # same stamp: the students' cache key does not depend on the kill

    started = die_once_at_epoch_1(Distill)
    with pytest.raises(RuntimeError, match="killed"):
        X.train_student(cohort, T1, "kd", 0, cfg, killed, log, tinfo1["key"])
    sd = killed / "runs" / "underdiagnosis" / "kd" / "seed0"
    assert (sd / "run" / "checkpoints" / "last.pt").exists() and not (sd / "result.json").exists()
    E1, _, info = X.train_student(cohort, T1, "kd", 0, cfg, killed, log, tinfo1["key"])
    assert started == [0, 1, 1]
    np.testing.assert_allclose(E1, E0, rtol=0, atol=1e-5)
    assert info["epochs"] == 2 and not (sd / "run").exists()  # the checkpoints go once the student is done

    # finished: reused (nothing rewritten)
    stamp = (sd / "embeddings.npy").stat().st_mtime_ns
    X.train_student(cohort, T1, "kd", 0, cfg, killed, log, tinfo1["key"])
    assert (sd / "embeddings.npy").stat().st_mtime_ns == stamp

    # a changed setting starts that student over in an emptied directory
    (sd / "stray.txt").write_text("from the earlier configuration")
    E2, _, _ = X.train_student(cohort, T1, "kd", 0, _cfg(lr=0.05), killed, log, tinfo1["key"])
    assert started == [0, 1, 1, 0, 1]
    assert not (sd / "stray.txt").exists() and not np.allclose(E2, E1)
    assert json.loads((sd / "run.json").read_text())["config"]["student"]["lr"] == 0.05
