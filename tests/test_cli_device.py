"""``--device`` on the commands that run a model without training it (evaluate, export-onnx, embed with an in-process
teacher, teacher serve, teacher info): the device asked for is the one used (and named in the JSON summary), and a
device this machine does not have is one clear error line, never a traceback (for the training commands too, before
any image is read)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import numpy as np
import pandas as pd
import pytest
import torch

from cxrdistill.cli import main
from cxrdistill.errors import InputError
from cxrdistill.models.device import resolve_device

SIZE = 32
TASKS = ["cardiomegaly", "pleural_effusion"]
NO_GPU = not torch.cuda.is_available()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 16-image synthetic cohort (all test split) and a tiny classifier of two of its findings."""
    from PIL import Image

    from cxrdistill import synth
    from cxrdistill.models.network import CxrNet, save_model

    d = tmp_path_factory.mktemp("device")
    images, meta = synth.render_batch(16, SIZE, seed=4, scenario="none")
    for a, p in zip(images, meta.path):
        (d / "images" / p).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(d / "images" / p)
    meta["split"] = "test"
    meta.to_parquet(d / "cohort.parquet")
    torch.manual_seed(0)
    save_model(CxrNet("resnet10t", num_classes=len(TASKS)), d / "model.safetensors",
               finetune={"image_size": SIZE, "tasks": TASKS})
    return {"dir": d, "cohort": str(d / "cohort.parquet"), "images": str(d / "images"),
            "model": str(d / "model.safetensors"), "pixels": images}


def _last(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _evaluate(data, out, device):
    return ["evaluate", "--cohort", data["cohort"], "--images-root", data["images"], "--model", data["model"],
            "--out", str(out), "--n-boot", "0", "--cache-dir", str(data["dir"] / "cache"), "--device", device]


def test_evaluate_runs_the_model_on_the_device(data, tmp_path, capsys):
    from cxrdistill.images.preprocess import MEAN, STD
    from cxrdistill.models.network import load_model

    main(_evaluate(data, tmp_path / "pred.csv", "cpu"))
    s = _last(capsys)
    assert (s["command"], s["status"], s["device"], s["n"]) == ("evaluate", "ok", "cpu", 16)
    # the scores are the model's own on these pixels
    net, _ = load_model(data["model"])
    x = (torch.from_numpy(data["pixels"]).float() / 255 - MEAN) / STD
    with torch.inference_mode():
        p = torch.sigmoid(net.eval()(x[:, None])["logits"]).numpy()
    pred = pd.read_csv(tmp_path / "pred.csv")
    np.testing.assert_allclose(pred[[f"p_{t}" for t in TASKS]].to_numpy(), p, rtol=1e-4, atol=1e-5)


def test_export_onnx_traces_on_the_device(data, tmp_path, capsys):
    main(["export-onnx", data["model"], "--out", str(tmp_path / "m.onnx"), "--size", str(SIZE), "--device", "cpu"])
    s = _last(capsys)
    assert (s["command"], s["status"], s["device"], s["checked"]) == ("export-onnx", "ok", "cpu", True)
    assert (tmp_path / "m.onnx").stat().st_size > 0


def test_embed_places_an_in_process_teacher_on_the_device(data, tmp_path, capsys):
    from cxrdistill.storage.store import EmbeddingStore
    from cxrdistill.teachers.local import resolve_teacher

    main(["embed", "--teacher", "timm:resnet10t", "--cohort", data["cohort"], "--images-root", data["images"],
          "--out", str(tmp_path / "store"), "--size", str(SIZE), "--device", "cpu", "--quiet"])
    s = _last(capsys)
    assert (s["command"], s["status"], s["device"], s["embedded"]) == ("embed", "ok", "cpu", 16)
    ids = pd.read_parquet(data["cohort"])["image_id"].tolist()
    want = resolve_teacher("timm:resnet10t", image_size=SIZE, device="cpu").embed(data["pixels"])
    np.testing.assert_allclose(EmbeddingStore.open(tmp_path / "store").get(ids), want, rtol=1e-4, atol=1e-5)


def test_teacher_info_runs_the_model_on_the_device(capsys):
    main(["teacher", "info", "timm:resnet10t", "--size", str(SIZE), "--device", "cpu"])
    s = _last(capsys)
    assert (s["command"], s["device"], s["embedding_shape"]) == ("teacher info", "cpu", [512])


def test_teacher_serve_serves_from_the_device(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cxrdistill", "teacher", "serve", "timm:resnet10t", "--port", "0",
                             "--size", str(SIZE), "--device", "cpu", "--threads", "1", "--log-level", "warning"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines, url, t0 = [], None, time.monotonic()
        while url is None and time.monotonic() - t0 < 90:
            lines.append(proc.stderr.readline())
            m = re.search(r"on cpu\) serving at (http://\S+)", lines[-1])
            url = m.group(1) if m else None
            assert proc.poll() is None, "".join(lines)
        assert url, "".join(lines)
        assert httpx.get(f"{url}/v1/info").json()["embedding_shape"] == [512]
    finally:
        proc.send_signal(signal.SIGTERM)  # how a container is stopped: a normal end, with the summary line
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    s = json.loads(out.strip().splitlines()[-1])
    assert (s["command"], s["status"], s["device"], s["url"]) == ("teacher serve", "ok", "cpu", url)


@pytest.mark.skipif(not NO_GPU, reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("command", ["evaluate", "export-onnx", "embed", "teacher serve", "teacher info", "probe"])
def test_a_missing_gpu_is_one_clear_error(command, data, tmp_path, capsys):
    argv = {
        "evaluate": _evaluate(data, tmp_path / "pred.csv", "cuda"),
        "export-onnx": ["export-onnx", data["model"], "--out", str(tmp_path / "m.onnx"), "--device", "cuda"],
        "embed": ["embed", "--teacher", "timm:resnet10t", "--cohort", data["cohort"], "--images-root",
                  data["images"], "--out", str(tmp_path / "store"), "--device", "cuda"],
        "teacher serve": ["teacher", "serve", "timm:resnet10t", "--port", "0", "--device", "cuda"],
        "teacher info": ["teacher", "info", "timm:resnet10t", "--device", "cuda"],
        "probe": ["probe", "--cohort", data["cohort"], "--model", data["model"], "--images-root", data["images"],
                  "--out", str(tmp_path / "store"), "--set", "train.device=cuda"],  # from --set, checked at once
    }[command]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    cap = capsys.readouterr()
    assert cap.err.strip().splitlines() == ["error: --device cuda: torch sees no CUDA GPU on this machine — use "
                                            "--device cpu, or auto (a GPU only when there is one)"]
    s = json.loads(cap.out.strip().splitlines()[-1])
    assert (s["command"], s["status"]) == (command, "error") and "--device cuda" in s["error"]
    assert not (tmp_path / "store").exists() and not (tmp_path / "m.onnx").exists()


@pytest.mark.skipif(not NO_GPU, reason="this machine has a CUDA GPU")
def test_a_missing_gpu_is_not_a_traceback_from_the_shell(data, tmp_path):
    p = subprocess.run([sys.executable, "-m", "cxrdistill", "export-onnx", data["model"], "--out",
                        str(tmp_path / "m.onnx"), "--device", "cuda:1"], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "--device cuda:1: torch sees no CUDA GPU" in p.stderr


def test_device_names_are_checked():
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(None) == resolve_device("auto")
    assert resolve_device(" CPU ") == torch.device("cpu")
    with pytest.raises(InputError, match="'gpu' is not a device — use auto, cpu, cuda, cuda:N or mps"):
        resolve_device("gpu")
    with pytest.raises(InputError, match="meta is not supported"):
        resolve_device("meta")


def test_device_is_refused_for_an_api_teacher(capsys):
    with pytest.raises(SystemExit) as e:
        main(["teacher", "info", "http://127.0.0.1:9", "--device", "cpu"])
    assert e.value.code == 2
    assert "applies to a teacher run in this process" in capsys.readouterr().err
