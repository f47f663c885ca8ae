"""End to end on a tiny synthetic cohort, in-process through the CLI: a teacher's embedding store → distil a student →
probe teacher and student → evaluate → fine-tune → ONNX; exact resume; clear errors on bad input."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from cxrdistill.cli import main
from cxrdistill.training.method import METHODS
from cxrdistill.training.methods.distill import Distill

from distill_helpers import SIZE, TASKS


def cli(*args):
    try:
        main([str(a) for a in args])
    except SystemExit as e:  # typer/click may exit 0 after a command
        if e.code not in (0, None):
            raise


def common(d):
    return ["--cohort", d["cohort"], "--cache-dir", d["cache"]]


@pytest.fixture(scope="module")
def distilled(tiny_cohort):
    d = tiny_cohort
    out = d["root"] / "student_run"
    cli("distill", *common(d), "--images-root", d["images"], "--embeddings", d["store"], "--out", out,
        "--student", "mobilenetv3_small_050", "--loss", "mse_cosine", "--size", SIZE, "--epochs", 4,
        "--batch-size", 32, "--lr", 1e-3, "--set", "method_options={val_probe: true}", "--set", "train.progress=false", "--quiet")
    return out


def test_distill_learns_and_writes_the_student(distilled):
    from cxrdistill.models.network import load_model

    hist = json.loads((distilled / "history.json").read_text())
    assert len(hist) == 4
    assert hist[-1]["train_loss"] < 0.75 * hist[0]["train_loss"]  # the student's KD loss decreases
    assert hist[-1]["val_kd_loss"] < hist[0]["val_kd_loss"]
    assert "val_probe_auc" in hist[-1]
    student, meta = load_model(distilled / "student.safetensors")
    assert meta["student"]["teacher_shape"] == [512] and meta["student"]["image_size"] == SIZE
    summary = json.loads((distilled / "distill.json").read_text())
    assert summary["student_params"] < 2_000_000


def test_exported_student_is_in_teacher_units():
    """Folding the target standardisation into the projector gives exactly σ · student(x) + μ."""
    from cxrdistill.losses.kd import build_kd_loss
    from cxrdistill.models.students import create_student
    from cxrdistill.training.methods.distill import DistillModel

    torch.manual_seed(0)
    mean, std = torch.randn(4, 6), torch.rand(4, 6) + 0.1
    for hidden in (None, 16):
        model = DistillModel(create_student("resnet10t", (4, 6), token_mode="tokens", proj_hidden=hidden),
                             build_kd_loss("mse"), (4, 6), mean, std).eval()
        x = torch.randn(3, 1, SIZE, SIZE)
        with torch.no_grad():
            inner = model(x)["student"]
            raw = model.export_student()(x)["embedding"].reshape(3, 4, 6)
            t = torch.randn(3, 4, 6)
            assert torch.allclose(model(x, t=t)["kd_loss"], ((inner - (t - mean) / std) ** 2).mean(), atol=1e-5)
        assert torch.allclose(raw, inner * std + mean, atol=1e-5)


def test_probe_teacher_and_student_beat_chance(distilled, tiny_cohort):
    d = tiny_cohort
    cli("probe", *common(d), "--embeddings", d["store"], "--out", d["root"] / "probe_t", "--head", "linear",
        "--tasks", ",".join(TASKS), "--label-policy", "u-ones", "--n-boot", 200, "--quiet")
    cli("probe", *common(d), "--model", distilled / "student.safetensors", "--images-root", d["images"],
        "--out", d["root"] / "probe_s", "--head", "mlp3", "--n-boot", 200, "--epochs", 10, "--quiet")
    t = json.loads((d["root"] / "probe_t" / "probe.json").read_text())["splits"]["test"]
    s = json.loads((d["root"] / "probe_s" / "probe.json").read_text())["splits"]["test"]
    assert t["observed"]["mean_auc"] > 0.8
    assert s["observed"]["mean_auc"] > 0.6  # a probe on the student's embeddings beats chance
    assert "true" in t  # synthetic ground truth scored too
    m = pd.read_csv(d["root"] / "probe_s" / "metrics" / "test.csv")
    assert {"auc", "auc_pr", "max_youden", "youden", "tpr"} <= set(m.metric)
    assert (m.ci_low <= m.value + 1e-12).all() and (m.value <= m.ci_high + 1e-12).all()
    # the student's embeddings were stored for the feature audit
    from cxrdistill.storage.store import EmbeddingStore

    assert len(EmbeddingStore.open(d["root"] / "probe_s" / "embeddings")) == 220


def test_evaluate_writes_predictions_and_metrics(distilled, tiny_cohort):
    d = tiny_cohort
    out = d["root"] / "eval" / "test.parquet"
    cli("evaluate", *common(d), "--model", distilled / "student.safetensors", "--head",
        d["root"] / "probe_s" / "head.safetensors", "--images-root", d["images"], "--split", "test",
        "--out", out, "--n-boot", 100)
    pred = pd.read_parquet(out)
    assert len(pred) == 60 and pred["image_id"].is_unique
    for t in TASKS:
        assert pred[f"p_{t}"].between(0, 1).all()
        assert set(pred[f"y_{t}"].dropna().unique()) <= {0.0, 1.0}
        assert f"ytrue_{t}" in pred
    assert {"sex", "race", "age"} <= set(pred.columns)
    m = pd.read_csv(out.with_name("test.metrics.csv"))
    assert set(m.task) == set(TASKS) and set(m.labels) == {"observed", "true"}
    # the same head applied to the teacher store is refused: wrong width, said clearly
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--cohort", str(d["cohort"]), "--embeddings", str(d["store"]), "--head",
              str(d["root"] / "probe_t" / "head.safetensors"), "--out", str(d["root"] / "x.csv"), "--split", "nope"])
    assert e.value.code == 2


def test_export_onnx_matches_torch(distilled, tiny_cohort):
    from cxrdistill.export import onnx_embed
    from cxrdistill.models.network import load_model
    from cxrdistill.training.inputs import ImageBatches
    from cxrdistill.training.predict import model_outputs
    from distill_helpers import make_images

    out = tiny_cohort["root"] / "student.onnx"
    cli("export-onnx", distilled / "student.safetensors", "--out", out)  # checks parity itself (raises if not)
    imgs, _ = make_images(5, seed=3)
    student, _ = load_model(distilled / "student.safetensors")
    ref = model_outputs(student, ImageBatches(imgs))
    got = onnx_embed(out, imgs)[0]
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)


def test_finetune_from_the_student(distilled, tiny_cohort):
    from cxrdistill.models.network import load_model

    d = tiny_cohort
    out = d["root"] / "ft"
    cli("finetune", *common(d), "--images-root", d["images"], "--out", out, "--init",
        distilled / "student.safetensors", "--size", SIZE, "--epochs", 2, "--loss", "aucm", "--n-boot", 50,
        "--set", "train.progress=false", "--set", "train.batch_size=32", "--quiet")
    model, meta = load_model(out / "model.safetensors")
    assert model.config["head_on"] == "embedding" and model.config["num_classes"] == 2
    assert meta["finetune"]["tasks"] == TASKS
    res = json.loads((out / "finetune.json").read_text())
    assert res["splits"]["test"]["observed"]["mean_auc"] is not None
    assert (out / "predictions" / "test.parquet").exists()
    # starting again from this classifier keeps its head only for the same tasks in the same order
    from cxrdistill.models.students import load_for_finetune

    same, _ = load_for_finetune(out / "model.safetensors", 2, tasks=TASKS)
    other, _ = load_for_finetune(out / "model.safetensors", 2, tasks=TASKS[::-1])
    assert torch.equal(same.head.weight, model.head.weight)
    assert not torch.equal(other.head.weight, model.head.weight)
    assert torch.equal(other.backbone.conv_stem.weight, model.backbone.conv_stem.weight)


CRASH = {"armed": False}


@METHODS.register("distill_test_crash")
class _CrashOnce(Distill):
    """Distill that dies at the start of epoch 2 once (after epoch 1's checkpoint), like a killed job."""

    def on_epoch_start(self, epoch, trainer):
        if CRASH["armed"] and epoch == 1:
            CRASH["armed"] = False
            raise RuntimeError("simulated crash")
        super().on_epoch_start(epoch, trainer)


def test_resume_after_a_crash_is_exact(tiny_cohort):
    """With a learned-weight loss and the contrastive memory bank, a crashed + resumed run equals an uninterrupted
    one bit for bit."""
    from cxrdistill.storage.checkpoint import load_weights
    from cxrdistill.training.run_config import load_config
    from cxrdistill.training.runs import run_distill

    d = tiny_cohort
    cfg = load_config("distill", options={"size": SIZE, "method": "distill_test_crash", "train.epochs": 2,
                                          "train.batch_size": 40, "train.progress": False,
                                          "loss": {"mse_cosine_learned": 1.0, "contrastive": 0.5},
                                          "loss_options": {"contrastive": {"bank_size": 64}}})
    args = (d["cohort"], d["images"], d["store"])
    run_distill(cfg, *args, d["root"] / "straight", cache_dir=d["cache"], quiet=True)
    CRASH["armed"] = True
    with pytest.raises(RuntimeError, match="simulated"):
        run_distill(cfg, *args, d["root"] / "crashed", cache_dir=d["cache"], quiet=True)
    assert json.loads((d["root"] / "crashed" / "history.json").read_text())[-1]["epoch"] == 1
    run_distill(cfg, *args, d["root"] / "crashed", cache_dir=d["cache"], quiet=True)
    a, _ = load_weights(d["root"] / "straight" / "model.safetensors")
    b, _ = load_weights(d["root"] / "crashed" / "model.safetensors")
    assert any("bank" in k for k in a) and any("log_var" in k for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # a different configuration in the same directory is refused instead of mixing two runs
    other = cfg.model_copy(update={"size": SIZE * 2})
    with pytest.raises(Exception, match="another configuration"):
        run_distill(other, *args, d["root"] / "crashed", cache_dir=d["cache"], quiet=True)


def test_logit_kd_trains_a_teacher_probe(tiny_cohort):
    from cxrdistill.training.run_config import load_config
    from cxrdistill.training.runs import run_distill

    d = tiny_cohort
    cfg = load_config("distill", options={"size": SIZE, "train.epochs": 1, "train.progress": False,
                                          "loss": "mse=1,logit_kd=1", "logit_kd_probe.epochs": 3})
    s = run_distill(cfg, d["cohort"], d["images"], d["store"], d["root"] / "lkd", cache_dir=d["cache"], quiet=True)
    assert s["epochs"] == 1 and np.isfinite(s["history"]["train_loss"])


def test_bad_inputs_are_one_line_errors(tiny_cohort, capsys):
    d = tiny_cohort
    df = d["df"].copy()
    df.loc[0, "image_id"] = "not-embedded"
    bad = d["root"] / "bad_cohort.parquet"
    df.to_parquet(bad, index=False)
    for args, needle in [
        (["--cohort", bad, "--embeddings", d["store"]], "no embedding"),
        (["--cohort", d["cohort"], "--embeddings", d["store"], "--loss", "msee"], "unknown kd loss"),
        (["--cohort", d["cohort"], "--embeddings", d["store"], "--set", "train.lrr=1"], "unknown key"),
        (["--cohort", d["cohort"], "--embeddings", d["store"], "--student", "no_such_net"], "unknown backbone"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(["distill", "--images-root", str(d["images"]), "--out", str(d["root"] / "bad_run"),
                  "--cache-dir", str(d["cache"]), "--quiet", *map(str, args)])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert needle in err.lower() and "Traceback" not in err


def test_torchrun_two_processes_match_one(tiny_cohort):
    """The distill command under torchrun (2 gloo processes) ends with the same student as 1 process. A LayerNorm
    student (BatchNorm statistics are per process) and a per-sample loss with learned weights (synchronised too)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from cxrdistill.storage.checkpoint import load_weights

    d = tiny_cohort
    args = ["distill", *map(str, common(d)), "--images-root", str(d["images"]), "--embeddings", str(d["store"]),
            "--student", "test_convnext", "--loss", "mse_cosine_learned", "--size", str(SIZE), "--epochs", "2",
            "--batch-size", "32", "--lr", "1e-3", "--set", "train.progress=false", "--quiet"]
    cli(*args, "--out", d["root"] / "ddp1")
    exe = Path(sys.executable).parent
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([str(exe / "torchrun"), "--standalone", "--nproc_per_node", "2", str(exe / "cxrdistill"), *args,
                    "--out", str(d["root"] / "ddp2")], check=True, env=env, timeout=300)
    a, _ = load_weights(d["root"] / "ddp1" / "student.safetensors")
    b, _ = load_weights(d["root"] / "ddp2" / "student.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4, rtol=1e-3), k
    h1 = json.loads((d["root"] / "ddp1" / "history.json").read_text())
    h2 = json.loads((d["root"] / "ddp2" / "history.json").read_text())
    assert abs(h1[-1]["val_kd_loss"] - h2[-1]["val_kd_loss"]) < 1e-3
