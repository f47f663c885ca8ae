"""A training run's directory: ``run.json`` (the stage, its inputs and resolved configuration — the stamp that
recognises the same run), ``config.yaml``, ``checkpoints/``, ``history.json`` and ``log.txt``.

:func:`prepare_run_dir` opens a run (a directory holding a checkpoint of another configuration is refused, or
started over with ``fresh``), :func:`finished_run` returns the summary of an identical finished run, and
:func:`run_changed` says whether a directory holds another run; all three compare the same :func:`run_stamp`.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from cxrdistill.errors import InputError
from cxrdistill.storage.io import atomic_open, write_json
from cxrdistill.training.run_config import to_yaml


class RunLog:
    """Lines to ``log.txt`` in the run directory and to stderr (unless quiet)."""

    def __init__(self, out: Path, quiet: bool = False):
        self.path = out / "log.txt"
        self.quiet = quiet

    def __call__(self, msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        if not self.quiet:
            print(line, file=sys.stderr, flush=True)


def removes_new_run_dir_on_failure(fn):
    """A run that fails before its first checkpoint leaves no output behind when it created ``out`` itself (a bad
    loss name, backbone or input must not leave a half-made run directory)."""
    import functools
    import inspect

    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        out = Path(sig.bind(*args, **kwargs).arguments["out"])
        existed = out.exists() and any(out.iterdir())
        try:
            return fn(*args, **kwargs)
        except BaseException:
            if not existed and out.exists() and not (out / "checkpoints" / "last.pt").exists():
                shutil.rmtree(out, ignore_errors=True)
            raise

    return wrapper


def prepare_run_dir(out: str | Path, stage: str, cfg, inputs: dict[str, Any], fresh: bool = False) -> Path:
    """Create ``out``; write the resolved config. A checkpoint from another config/inputs is an error (or is
    removed with ``fresh``), so a resume never mixes two runs."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    resolved = run_stamp(stage, cfg, inputs)
    stamp = out / "run.json"
    ckpt = out / "checkpoints" / "last.pt"
    if fresh:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        for f in ("history.json", "best.safetensors"):
            (out / f).unlink(missing_ok=True)
    elif ckpt.exists() and stamp.exists():
        old = json.loads(stamp.read_text(encoding="utf-8"))
        if old != resolved:
            raise InputError("holds a run with another configuration or inputs", path=out,
                             hint="choose a new --out, or pass --fresh to start this one over")
    write_json(resolved, stamp)
    with atomic_open(out / "config.yaml", "w", encoding="utf-8") as fh:
        fh.write(to_yaml(cfg))
    return out


def run_stamp(stage: str, cfg, inputs: dict[str, Any]) -> dict[str, Any]:
    """What ``run.json`` holds: the stage, its inputs (as text) and the resolved configuration."""
    return {"stage": stage, "inputs": {k: (str(v) if v is not None else None) for k, v in inputs.items()},
            "config": json.loads(cfg.model_dump_json())}


def finished_run(out: str | Path, summary: str, stage: str, cfg, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """The stored summary (``out/summary``) of an identical finished run in ``out``; None when absent or different."""
    stamp, summ = Path(out) / "run.json", Path(out) / summary
    if not (stamp.exists() and summ.exists()):
        return None
    try:
        if json.loads(stamp.read_text(encoding="utf-8")) != run_stamp(stage, cfg, inputs):
            return None
        return json.loads(summ.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_changed(out: str | Path, stage: str, cfg, inputs: dict[str, Any]) -> bool:
    """True when ``out`` holds the stamp of a run with another configuration or inputs."""
    stamp = Path(out) / "run.json"
    if not stamp.exists():
        return False
    try:
        return json.loads(stamp.read_text(encoding="utf-8")) != run_stamp(stage, cfg, inputs)
    except (OSError, ValueError):
        return True
