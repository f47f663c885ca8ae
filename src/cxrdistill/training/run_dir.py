"""A training run's directory: ``run.json`` (the stage, its inputs and resolved configuration — the stamp that
recognises the same run), ``config.yaml``, ``checkpoints/``, ``history.json`` and ``log.txt``.

:func:`open_run` is how every training call site starts a run: it returns the summary of an identical finished
run, refuses (or, for the runs a comparison keys by their settings, starts over) a directory that holds another run,
and otherwise stamps the directory so that a killed run resumes; :meth:`Run.finish` writes the summary. Its parts —
:func:`prepare_run_dir`, :func:`finished_run`, :func:`run_changed` — compare the same :func:`run_stamp`, read by
the one :func:`read_stamp`.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from cxrdistill.errors import InputError
from cxrdistill.storage.io import atomic_open, clean_json, stable_hash, write_json
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


def read_stamp(out: str | Path) -> dict[str, Any] | None:
    """The ``run.json`` stamp in ``out``: None when there is none; an unreadable one reads as ``{}`` (a run that
    cannot be recognised is another run)."""
    path = Path(out) / "run.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def run_stamp(stage: str, cfg, inputs: dict[str, Any]) -> dict[str, Any]:
    """What ``run.json`` holds: the stage, its inputs (as text) and the resolved configuration (a pydantic model or a
    JSON-able dict)."""
    config = (json.loads(cfg.model_dump_json()) if hasattr(cfg, "model_dump_json")
              else json.loads(json.dumps(clean_json(cfg), sort_keys=True, default=str)))
    return {"stage": stage, "inputs": {k: (str(v) if v is not None else None) for k, v in inputs.items()},
            "config": config}


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two stamps (``config.train.epochs``, ``inputs.cohort``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in [*old, *(k for k in new if k not in old)]:
            out += differences(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".") or "(the whole stamp)"]


def prepare_run_dir(out: str | Path, stage: str, cfg, inputs: dict[str, Any], fresh: bool = False,
                    hint: str = "choose a new --out, or pass --fresh to start this one over",
                    exclusive: bool = False) -> Path:
    """Create ``out``; write the resolved config. A checkpoint from another config/inputs (or one with no stamp) is an
    error naming the settings that differ, or is removed with ``fresh`` (the whole directory when ``exclusive``: it
    holds this run and nothing else), so a resume never mixes two runs."""
    out = Path(out)
    resolved = run_stamp(stage, cfg, inputs)
    if fresh:
        _start_over(out, exclusive)
    elif (out / "checkpoints" / "last.pt").exists():
        old = read_stamp(out)
        if old != resolved:
            what = (f"holds a {old.get('stage') or 'training'} run with another configuration or inputs (settings "
                    f"that differ: {', '.join(differences(old, resolved)[:6])})" if old
                    else "holds a checkpoint whose run.json is missing or unreadable, so it cannot be told to be "
                    "this run")
            raise InputError(what, path=out, hint=hint)
    out.mkdir(parents=True, exist_ok=True)
    write_json(clean_json(resolved), out / "run.json")
    with atomic_open(out / "config.yaml", "w", encoding="utf-8") as fh:
        if hasattr(cfg, "model_dump_json"):
            fh.write(to_yaml(cfg))
        else:
            import yaml

            fh.write(yaml.safe_dump(resolved["config"], sort_keys=False))
    return out


def _start_over(out: Path, exclusive: bool) -> None:
    if exclusive:
        shutil.rmtree(out, ignore_errors=True)
        return
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    for f in ("history.json", "best.safetensors"):
        (out / f).unlink(missing_ok=True)


def finished_run(out: str | Path, summary: str, stage: str, cfg, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """The stored summary (``out/summary``) of an identical finished run in ``out``; None when absent or different."""
    summ = Path(out) / summary
    if not summ.exists() or read_stamp(out) != run_stamp(stage, cfg, inputs):
        return None
    try:
        return json.loads(summ.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_changed(out: str | Path, stage: str, cfg, inputs: dict[str, Any]) -> bool:
    """True when ``out`` holds the stamp of a run with another configuration or inputs."""
    old = read_stamp(out)
    return old is not None and old != run_stamp(stage, cfg, inputs)


@dataclass
class Run:
    """An opened run directory. ``done``: the summary of an identical finished run (nothing left to train)."""

    dir: Path
    stamp: dict[str, Any]
    summary_file: str
    done: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        """A short key of the stamp (what recognises this run elsewhere, e.g. as another run's input)."""
        return stable_hash(self.stamp)

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Write the summary — written last, it marks the run finished — and return it."""
        write_json(clean_json(summary), self.dir / self.summary_file)
        return summary


def open_run(out: str | Path, stage: str, cfg, inputs: dict[str, Any], *, summary: str = "summary.json",
             fresh: bool = False, reuse: bool = True, on_change: Literal["refuse", "restart"] = "refuse",
             exclusive: bool = False, is_done: Callable[[dict[str, Any]], bool] | None = None,
             hint: str = "choose a new --out, or pass --fresh to start this one over") -> Run:
    """Open the run directory ``out`` of ``stage`` (its resolved ``cfg`` and ``inputs``), the one way every training
    call site starts:

    - an identical finished run (same stamp, its ``summary`` file present and, when given, ``is_done(summary)``, e.g.
      its outputs still exist) → ``Run.done`` holds its summary, nothing is touched (unless ``reuse`` is off or
      ``fresh``);
    - a directory holding another run → refused with an error naming the directory, the settings that differ and
      ``hint`` (``on_change="refuse"``: a command's ``--out``), or started over (``"restart"``: the runs a comparison
      keys by their settings, where a changed setting means a new run);
    - otherwise ``out`` is stamped (``run.json``, ``config.yaml``) and a killed run's checkpoint resumes.

    ``fresh`` starts over; ``exclusive``: ``out`` holds this run only, so starting over empties it (otherwise only the
    checkpoints, history and best weights go). Call ``Run.finish(summary)`` at the end."""
    out = Path(out)
    stamp = run_stamp(stage, cfg, inputs)
    if reuse and not fresh:
        done = finished_run(out, summary, stage, cfg, inputs)
        if done is not None and (is_done is None or is_done(done)):
            return Run(out, stamp, summary, done)
    if on_change == "restart" and not fresh and out.exists():
        old = read_stamp(out)
        fresh = old != stamp and (old is not None or any(out.iterdir()))
    prepare_run_dir(out, stage, cfg, inputs, fresh, hint=hint, exclusive=exclusive)
    (out / summary).unlink(missing_ok=True)  # an unfinished run has no summary
    return Run(out, stamp, summary)
