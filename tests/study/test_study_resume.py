"""A study killed during a training stage resumes that stage's run from its checkpoint on the re-run (and ends where
an uninterrupted study ends); a changed stage config starts the run over."""
import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file

from cxrdistill.study.config import load_config
from cxrdistill.study.engine import Stage, StageFailed, StudyContext, run_stages
from cxrdistill.study.stages import STAGES
from cxrdistill.training.methods.distill import Distill

TINY = {"size": 32, "tasks": ["pleural_effusion", "cardiomegaly"], "attributes": ["sex"], "jobs": 1,
        "cohort": {"source": "synth", "synth": {"n": 120, "scenario": "mixed", "seed": 0, "workers": 1}},
        "teacher": {"serve": False, "pretrain": {"n": 80, "epochs": 1, "backbone": "resnet10t", "workers": 1}},
        "distill": {"student": {"name": "mobilenetv3_small_050"}, "train": {"epochs": 2}}}
UP_TO_DISTILL = STAGES[: [s.name for s in STAGES].index("distill") + 1]


def study(out, lr=None):
    over = {**TINY, "distill": {**TINY["distill"], "train": {**TINY["distill"]["train"], **({"lr": lr} if lr else {})}}}
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    ctx = StudyContext(out=out, cfg=load_config(None, over), log=lines.append)
    run_stages(ctx, UP_TO_DISTILL, jobs=1)
    return ctx, lines


def student(out):
    return load_file(out / "student" / "student.safetensors")


def test_a_killed_distill_stage_resumes_and_a_changed_config_starts_over(tmp_path, die_once_at_epoch_1):
    out = tmp_path / "study"
    study(out)
    clean = student(out)
    clean_hist = json.loads((out / "student" / "history.json").read_text())
    shutil.rmtree(out / "student")  # the same study again from the distill stage (the stages before it are cached)
    (out / "stages" / "distill.json").unlink()
    started = die_once_at_epoch_1(Distill)
    with pytest.raises(StageFailed, match="distill"):
        study(out)
    assert started == [0, 1]
    assert (out / "student" / "checkpoints" / "last.pt").exists()
    _, lines = study(out)
    assert started == [0, 1, 1]  # resumed at epoch 1, not started over
    assert any("[distill] resuming" in line for line in lines)
    assert any("[embed] cached" in line for line in lines)
    resumed = student(out)
    assert clean.keys() == resumed.keys()
    for k in clean:  # ends where the uninterrupted run ended
        np.testing.assert_allclose(resumed[k], clean[k], rtol=1e-5, atol=1e-6, err_msg=k)
    hist = json.loads((out / "student" / "history.json").read_text())
    assert len(hist) == len(clean_hist) == 2
    assert not (out / "stages" / "distill.started.json").exists()

    _, lines = study(out, lr=3e-4)  # another distill config: its run starts over at epoch 0
    assert started == [0, 1, 1, 0, 1]
    assert any("[distill] running" in line for line in lines)
    assert json.loads((out / "student" / "run.json").read_text())["config"]["train"]["lr"] == 3e-4


def test_only_an_unfinished_stage_of_the_same_key_resumes(tmp_path):
    """The engine's part, without training: ``ctx.resume`` is set for a stage that failed with the same key, and not
    after a success, a changed config or a forced re-run."""
    seen, fail = [], [True]

    def train(ctx):
        seen.append(ctx.resume)
        if fail[0]:
            fail[0] = False
            raise RuntimeError("killed")
        return {}

    def run(conf, **kw):
        ctx = StudyContext(out=tmp_path, cfg=None, log=lambda line: None)
        return run_stages(ctx, [Stage("train", train, config=lambda c: conf)], jobs=1, **kw)

    with pytest.raises(StageFailed, match="train"):
        run(1)
    run(1)  # the same key after a failure: resumes
    fail[0] = True
    with pytest.raises(StageFailed):
        run(2, force=["train"])  # a changed key (and a failure)
    run(3)  # another key than the failed start: starts over
    run(3, force=["train"])  # a forced re-run of a finished stage: starts over
    fail[0] = True
    with pytest.raises(StageFailed):
        run(3, force=["train"])
    run(3, force=["train"])  # forced: starts over although the same key failed
    assert seen == [False, True, False, False, False, False, False]
