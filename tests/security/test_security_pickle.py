"""A crafted malicious checkpoint (unpickling it would run ``touch MARKER`` through ``os.system``) is refused by every
loader that accepts a user's checkpoint — library functions and CLI commands — and no code runs: the marker file is
never created. A control test first proves that the payload is live (a plain unpickler does create the marker)."""
from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "corpus"))

import corpus_files as cf  # noqa: E402

from cxrdistill.cli import main  # noqa: E402
from cxrdistill.errors import InputError  # noqa: E402

KINDS = ("raw.pt", "zip.pt", "zip.pth", "raw.bin")


@pytest.fixture(scope="module")
def evil(tmp_path_factory):
    """Malicious checkpoints of each kind (legacy raw pickle and torch.save zip) and the marker they would create."""
    d = tmp_path_factory.mktemp("evil")
    marker = d / "MARKER_code_ran"
    files = {}
    for kind in KINDS:
        how, ext = kind.split(".")
        write = cf.malicious_pickle if how == "raw" else cf.malicious_torch_zip
        files[kind] = write(d / f"checkpoint_{how}.{ext}", marker)
    return files, marker


def test_payload_is_live(tmp_path):
    """Control: the same files do run their payload when unpickled naively — so the tests below are not vacuous."""
    import torch

    marker = tmp_path / "control_marker"
    raw = cf.malicious_pickle(tmp_path / "c_raw.pt", marker)
    with open(raw, "rb") as fh:
        pickle.load(fh)  # noqa: S301 - deliberately unsafe, on our own test file
    assert marker.exists()
    marker.unlink()
    z = cf.malicious_torch_zip(tmp_path / "c_zip.pt", marker)
    torch.load(z, weights_only=False)  # noqa: S614 - deliberately unsafe, on our own test file
    assert marker.exists()


def _library_loaders():
    from cxrdistill.models.heads import load_head
    from cxrdistill.models.network import create_backbone, load_model
    from cxrdistill.models.students import load_for_finetune
    from cxrdistill.teachers.local import resolve_teacher
    from cxrdistill.storage.checkpoint import load_state, load_weights

    return {
        "load_weights": load_weights,
        "load_state": load_state,
        "load_model": load_model,
        "load_head": load_head,
        "load_for_finetune": lambda p: load_for_finetune(p, 3),
        "create_backbone(weights=)": lambda p: create_backbone("resnet10t", weights=p),
        "resolve_teacher(torch:)": lambda p: resolve_teacher(f"torch:{p}", image_size=32),
        "resolve_teacher(timm::weights)": lambda p: resolve_teacher(f"timm:resnet10t:{p}", image_size=32),
        "resolve_teacher(bare path)": lambda p: resolve_teacher(str(p), image_size=32),
    }


def test_library_loaders_refuse(evil):
    files, marker = evil
    loaders = _library_loaders()
    for name, load in loaders.items():
        for kind, path in files.items():
            with pytest.raises(InputError) as e:
                load(path)
            msg = str(e.value)
            assert "refused to load checkpoint" in msg and str(path) in msg, (name, kind, msg)
            # the user is not advised to switch the protection off
            assert "weights_only` set to `False" not in msg, (name, kind, msg)
            assert not marker.exists(), f"{name} ran the payload of {kind}"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A tiny labelled, split cohort (the CLI commands read it before they reach the checkpoint)."""
    d = tmp_path_factory.mktemp("cohort")
    p = cf.cohort_table(d / "cohort.parquet", n=8)
    for k in range(8):
        cf.png(d / "images" / f"img{k}.png")
    return p, d / "images"


def _cli_commands(ckpt: Path, cohort: Path, images: Path, out: Path) -> dict[str, list[str]]:
    common = ["--cohort", str(cohort), "--images-root", str(images), "--cache-dir", str(out / "cache"), "--quiet"]
    return {
        "finetune --init": ["finetune", *common, "--init", str(ckpt), "--out", str(out / "ft"), "--epochs", "1"],
        "finetune --init imagenet:": ["finetune", *common, "--init", f"imagenet:{ckpt}", "--backbone", "resnet10t",
                                      "--out", str(out / "ft2"), "--epochs", "1"],
        "export-onnx": ["export-onnx", str(ckpt), "--out", str(out / "model.onnx")],
        "embed --teacher torch:": ["embed", "--teacher", f"torch:{ckpt}", "--cohort", str(cohort), "--images-root",
                                   str(images), "--out", str(out / "store"), "--no-progress"],
        "teacher info torch:": ["teacher", "info", f"torch:{ckpt}"],
        "evaluate --model": ["evaluate", "--cohort", str(cohort), "--images-root", str(images), "--model", str(ckpt),
                             "--out", str(out / "pred.parquet"), "--cache-dir", str(out / "cache")],
        "probe --model": ["probe", "--cohort", str(cohort), "--images-root", str(images), "--model", str(ckpt),
                          "--out", str(out / "probe"), "--cache-dir", str(out / "cache"), "--quiet"],
    }


@pytest.mark.parametrize("kind", ["raw.pt", "zip.pt"])
def test_cli_commands_refuse(kind, evil, cohort, tmp_path, capsys):
    files, marker = evil
    ckpt = files[kind]
    for name, argv in _cli_commands(ckpt, *cohort, tmp_path / "out").items():
        with pytest.raises(SystemExit) as e:
            main(argv)
        out, err = capsys.readouterr()
        assert e.value.code == 2, (name, out, err)
        err = err.strip()
        assert err.startswith("error: ") and "\n" not in err and "Traceback" not in out + err, (name, err)
        assert "refused to load checkpoint" in err and ckpt.name in err, (name, err)
        assert not marker.exists(), f"{name} ran the payload"
    # no model, prediction or ONNX file was written by any of them
    written = {p.name for p in (tmp_path / "out").rglob("*")}
    assert not written & {"model.onnx", "pred.parquet", "model.safetensors", "finetune.json", "probe.json"}, written


def test_teacher_serve_refuses(evil, capsys):
    """``teacher serve torch:EVIL`` fails before it listens (port 0: nothing is bound if it got that far)."""
    files, marker = evil
    with pytest.raises(SystemExit) as e:
        main(["teacher", "serve", f"torch:{files['zip.pt']}", "--port", "0"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "refused to load checkpoint" in err and "Traceback" not in err
    assert not marker.exists()
