"""The one run-directory helper (``training.run_dir.open_run``): finished → its summary, another run → refused with
the directory, the settings that differ and what to do (or started over, for a comparison's keyed runs), otherwise
stamped so that a killed run resumes."""
from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from cxrdistill.errors import InputError
from cxrdistill.training.run_dir import open_run, read_stamp


class Cfg(BaseModel):
    lr: float = 0.1
    epochs: int = 2


def _checkpoint(d):
    (d / "checkpoints").mkdir(parents=True, exist_ok=True)
    (d / "checkpoints" / "last.pt").write_bytes(b"state")


def test_open_finish_reuse_and_refuse(tmp_path):
    d = tmp_path / "run"
    run = open_run(d, "demo", Cfg(), {"cohort": tmp_path / "c.parquet"})
    assert run.done is None and read_stamp(d) == run.stamp == {
        "stage": "demo", "inputs": {"cohort": str(tmp_path / "c.parquet")}, "config": {"lr": 0.1, "epochs": 2}}
    assert (d / "config.yaml").read_text() == "lr: 0.1\nepochs: 2\n"
    _checkpoint(d)
    # killed before the summary: the same run opens again without touching the checkpoint (the trainer resumes it)
    assert open_run(d, "demo", Cfg(), {"cohort": tmp_path / "c.parquet"}).done is None
    assert (d / "checkpoints" / "last.pt").exists()
    assert run.finish({"auc": float("nan"), "n": 3})["n"] == 3
    assert json.loads((d / "summary.json").read_text()) == {"auc": None, "n": 3}
    again = open_run(d, "demo", Cfg(), {"cohort": tmp_path / "c.parquet"})
    assert again.done == {"auc": None, "n": 3} and again.key == run.key
    assert open_run(d, "demo", Cfg(), {"cohort": tmp_path / "c.parquet"}, is_done=lambda s: False).done is None
    assert not (d / "summary.json").exists()  # an unfinished run has no summary

    with pytest.raises(InputError) as e:
        open_run(d, "demo", Cfg(lr=0.2), {"cohort": tmp_path / "other.parquet"})
    msg = str(e.value)
    assert msg.startswith(f"{d}: holds a demo run with another configuration or inputs")
    assert "config.lr" in msg and "inputs.cohort" in msg and "config.epochs" not in msg and "--fresh" in msg
    assert read_stamp(d)["config"]["lr"] == 0.1 and (d / "checkpoints" / "last.pt").exists()  # untouched

    fresh = open_run(d, "demo", Cfg(lr=0.2), {"cohort": tmp_path / "c.parquet"}, fresh=True)
    assert fresh.done is None and not (d / "checkpoints").exists() and read_stamp(d)["config"]["lr"] == 0.2


def test_a_checkpoint_without_a_stamp_is_refused(tmp_path):
    d = tmp_path / "run"
    _checkpoint(d)
    with pytest.raises(InputError, match="checkpoint whose run.json is missing or unreadable.* use another --run-dir"):
        open_run(d, "demo", {"lr": 0.1}, {}, hint="use another --run-dir")


def test_keyed_runs_start_over_in_an_emptied_directory(tmp_path):
    d = tmp_path / "runs" / "erm" / "seed0"
    open_run(d, "fair", {"train": {"lr": 0.1}}, {"data": "fp1"}, summary="result.json", on_change="restart",
             exclusive=True)
    _checkpoint(d)
    (d / "step0" / "checkpoints").mkdir(parents=True)  # a sub-run's checkpoint must go too
    run = open_run(d, "fair", {"train": {"lr": 0.1}}, {"data": "fp1"}, summary="result.json", on_change="restart",
                   exclusive=True)
    assert (d / "checkpoints" / "last.pt").exists() and (d / "step0").exists()  # same run: resumes
    run.finish({"ok": 1})
    assert open_run(d, "fair", {"train": {"lr": 0.1}}, {"data": "fp1"}, summary="result.json",
                    on_change="restart").done == {"ok": 1}
    changed = open_run(d, "fair", {"train": {"lr": 0.1}}, {"data": "fp2"}, summary="result.json",
                       on_change="restart", exclusive=True)
    assert changed.done is None and sorted(p.name for p in d.iterdir()) == ["config.yaml", "run.json"]
    # a directory of an older layout (files, no stamp) is started over too
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "run_key.json").write_text("{}")
    open_run(legacy, "fair", {}, {}, on_change="restart", exclusive=True)
    assert not (legacy / "run_key.json").exists()
