"""Cost growth with the cohort's size: every study stage's per-image cost at n and 10n rows of ``synth --like`` of
CheXpert's ``train.csv``, as a ratio (goal ≤ 1.2: cost grows linearly), with each stage's peak memory.

``make bench-scale`` (``python -m cxrdistill.bench --only scale``) runs the study of ``configs/chexpert_scale.yaml``
on n = 2,400 and 24,000 rows (``--quick``: 240 and 2,400); ``python -m cxrdistill.bench.scale point N`` runs one
point and prints its per-stage table. Each point runs in a fresh process (its memory is its own), one stage at a
time, so that a stage's time and peak RSS (its process plus the processes it starts: the teacher server, decoding
workers) are its own. Ratios use CPU time (process and finished children), which on a shared machine measures the
stage's work where wall time also measures its neighbours; wall time is reported beside it. A stage with a fixed
cost (the teacher's pretraining on its own cohort, the speed measurement) has a ratio near 0.1 by design.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "chexpert_scale.yaml"
# The teacher is pretrained on its own synthetic cohort whatever the study's size: a fixed cost that is not what is
# measured, so the benchmark pretrains a smaller one (same backbone, same interface) to spend its time on the rest.
BENCH_OVERRIDES = {"teacher.pretrain": {"n": 400, "epochs": 1, "backbone": "resnet18"}}
GOAL = 1.2
FIXED = {"teacher": "pretrained on its own synthetic cohort", "speed": "a fixed number of timed batches"}


def chexpert_csv() -> Path:
    """CheXpert's real train.csv metadata (no images), shipped in torchxrayvision's wheel (a dev dependency)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.origin:
        from cxrdistill.errors import CxrError

        raise CxrError("the scale benchmark needs CheXpert's metadata from torchxrayvision's wheel",
                       hint="pip install torchxrayvision (a dev dependency: pip install -e '.[dev]')")
    return Path(spec.origin).parent / "data" / "chexpert_train.csv.gz"


def dataset(n: int, root: Path, size: int = 64, workers: int = 2) -> Path:
    """``synth --like`` of CheXpert's first ``n`` rows under ``root`` (resumed when already partly rendered)."""
    from cxrdistill.synth.like import generate_like

    out = root / f"chexpert-like-{n}"
    if not (out / "train.csv").exists():
        generate_like(out, chexpert_csv(), size=size, seed=0, workers=workers, n=n)
    return out


# ----------------------------------------------------------------------------------------------- peak memory
def _rss_tree() -> int:
    """Resident bytes of this process and every process it started (0 for what cannot be read)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with the dev tools; without it, this process only
        return _own_rss()
    me = psutil.Process()
    total = 0
    for p in [me, *me.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def _own_rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident memory of this process tree while the block runs: sampled every ``interval`` s, and this
    process's exact high-water mark (Linux VmHWM, reset at the start through ``/proc/self/clear_refs``)."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakRSS":
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except OSError:
            pass
        self.peak = _rss_tree()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss_tree())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _hwm())


def _hwm() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its finished child processes (teacher server, workers): on a
    shared machine it measures a stage's work where wall time also measures its neighbours."""
    import resource

    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


# ------------------------------------------------------------------------------------------------------ points
def run_point(data: Path, out: Path, config: Path = CONFIG, overrides: dict | None = None) -> list[dict]:
    """Run the study on the dataset ``data`` into ``out``, one stage at a time in this process, and return one row
    per stage: seconds, images, peak RSS. Rows are also written to ``out/scale_stages.json`` as stages finish."""
    import dataclasses

    import pandas as pd

    from cxrdistill.storage.io import write_json
    from cxrdistill.study.config import load_config
    from cxrdistill.study.engine import StudyContext, file_logger, run_stages
    from cxrdistill.study.stages import STAGES

    ov = {"cohort.reader_args": {"csv": str(data / "train.csv")}, "cohort.images_root": str(data), "jobs": 1,
          **(BENCH_OVERRIDES if overrides is None else overrides)}
    cfg = load_config(config, ov)
    out.mkdir(parents=True, exist_ok=True)
    rec = out / "scale_stages.json"
    # a resumed point keeps the measurements of the stages that are now cached
    rows: list[dict] = json.loads(rec.read_text())["rows"] if rec.exists() else []
    ctx = StudyContext(out=out, cfg=cfg, log=file_logger(out / "log.txt", echo=lambda s: print(s, file=sys.stderr,
                                                                                                flush=True)),
                       logfile=out / "log.txt")

    def wrap(name, fn):
        def timed(c):
            t0, c0 = time.perf_counter(), _cpu_seconds()
            with PeakRSS() as m:
                res = fn(c)
            rows[:] = [r for r in rows if r["stage"] != name]
            rows.append({"stage": name, "seconds": round(time.perf_counter() - t0, 2),
                         "cpu_seconds": round(_cpu_seconds() - c0, 2), "peak_rss_mib": round(m.peak / 2**20)})
            write_json({"data": str(data), "rows": rows}, out / "scale_stages.json")
            return res
        return timed

    stages = [dataclasses.replace(s, fn=wrap(s.name, s.fn)) for s in STAGES]
    run_stages(ctx, stages, jobs=1)
    n_img = len(pd.read_parquet(out / "cohort.parquet", columns=["image_id"]))
    for r in rows:
        r["images"] = n_img
    write_json({"data": str(data), "images": n_img, "rows": rows}, out / "scale_stages.json")
    return rows


def _point_in_child(n: int, root: Path) -> list[dict]:
    """One point in a fresh Python process (so that its peak memory is its own)."""
    data = dataset(n, root / "data")
    out = root / f"study-{n}"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    subprocess.run([sys.executable, "-m", "cxrdistill.bench.scale", "point", str(n), "--root", str(root)],
                   check=True, env=env)
    return json.loads((out / "scale_stages.json").read_text())["rows"]


def _cost(r: dict) -> float:
    """A stage's CPU seconds (wall seconds for a record made without them)."""
    return r["cpu_seconds"] if r.get("cpu_seconds") is not None else r["seconds"]


def growth_rows(small: list[dict], big: list[dict]) -> list[dict]:
    """Bench rows: per stage, (seconds per image at 10n) / (seconds per image at n), and the peak RSS of both."""
    by = {r["stage"]: r for r in big}
    out = []
    for a in small:
        b = by.get(a["stage"])
        if b is None:
            continue
        pa, pb = _cost(a) / a["images"], _cost(b) / b["images"]
        ratio = pb / pa if pa > 0 else float("nan")
        note = (f"CPU {_cost(a):.1f} s for {a['images']:,} images, {_cost(b):.1f} s for {b['images']:,} (wall "
                f"{a['seconds']:.0f} s, {b['seconds']:.0f} s); peak RSS {a['peak_rss_mib']:,} → "
                f"{b['peak_rss_mib']:,} MiB")
        if a["stage"] in FIXED:
            note += f" (fixed cost: {FIXED[a['stage']]})"
        out.append({"name": f"{a['stage']}: per-image cost at 10n / at n", "value": ratio, "unit": "×",
                    "goal": f"≤ {GOAL}", "note": note})
    same = [a for a in small if a["stage"] in by]
    ta, tb = sum(_cost(r) for r in same), sum(_cost(by[r["stage"]]) for r in same)
    na, nb = small[0]["images"], big[0]["images"]
    out.append({"name": "whole study: per-image cost at 10n / at n", "value": (tb / nb) / (ta / na), "unit": "×",
                "goal": f"≤ {GOAL}", "note": f"CPU {ta:.0f} s for {na:,} images, {tb:.0f} s for {nb:,}"})
    out.append({"name": "peak RSS of any stage at 10n", "value": max(r["peak_rss_mib"] for r in big), "unit": "MiB",
                "goal": "≤ 4096", "note": f"at n: {max(r['peak_rss_mib'] for r in small):,} MiB"})
    return out


def run(quick: bool = False) -> list[dict]:
    n = 240 if quick else 2400
    root = Path(os.environ.get("CXRDISTILL_BENCH_SCALE_DIR", "runs/bench-scale"))
    small = _point_in_child(n, root)
    big = _point_in_child(10 * n, root)
    return growth_rows(small, big)


# ------------------------------------------------------------------------------------------- a recorded full run
RECORDS = Path(__file__).resolve().parent / "records"
TARGET_HOURS, TARGET_RSS_MIB = 2.0, 4096


def planned_stages(config: Path = CONFIG) -> list[str]:
    """The study stages that ``config`` enables, in order."""
    from types import SimpleNamespace

    from cxrdistill.study.config import load_config
    from cxrdistill.study.stages import STAGES

    ctx = SimpleNamespace(cfg=load_config(config))
    return [s.name for s in STAGES if s.enabled(ctx)]


def make_record(run: Path, *, title: str, config: Path = CONFIG, notes: list[str] | None = None) -> dict:
    """A record of one finished (or partly finished) point run in ``run`` (its ``scale_stages.json``): what ran,
    on what machine, and per stage its wall and CPU time and peak memory — kept in ``bench/records/`` because a
    run at a real dataset's size takes hours, far more than ``make bench`` may."""
    import pandas as pd

    stages = json.loads((run / "scale_stages.json").read_text())
    split = pd.read_parquet(run / "cohort.parquet", columns=["split"])["split"]  # one read: count and splits
    n_img, splits = len(split), split.value_counts().to_dict()
    from cxrdistill.bench.machine import machine

    return {"title": title, "config": config.name, "images": int(n_img),
            "splits": {str(k): int(v) for k, v in splits.items()},
            "machine": [x.removeprefix("- ") for x in machine()], "load_average": [round(x, 1) for x in os.getloadavg()],
            "rows": [{k: r[k] for k in ("stage", "seconds", "cpu_seconds", "peak_rss_mib")} for r in stages["rows"]],
            "pending": [s for s in planned_stages(config) if s not in {r["stage"] for r in stages["rows"]}],
            "notes": list(notes or [])}


def record_lines(rec: dict) -> list[str]:
    """The Markdown section of a record: one row per stage, then the totals against the targets."""
    n = rec["images"]
    lines = [f"## {rec['title']}", "",
             f"Recorded run (not re-measured by `make bench`): `{rec['config']}` on {n:,} images "
             f"({', '.join(f'{k} {v:,}' for k, v in sorted(rec.get('splits', {}).items()))}). "
             "Throughput is the cohort's images divided by the stage's wall time; CPU seconds count the stage's "
             "process and the processes it started.", "",
             "| stage | wall | CPU s | images / s (wall) | CPU ms / image | peak RSS, MiB |",
             "|---|---|---|---|---|---|"]
    for r in rec["rows"]:
        wall = r["seconds"]
        lines.append(f"| {r['stage']} | {_hms(wall)} | {r['cpu_seconds']:,.0f} | {n / wall:,.0f} | "
                     f"{1e3 * r['cpu_seconds'] / n:.2f} | {r['peak_rss_mib']:,} |")
    wall = sum(r["seconds"] for r in rec["rows"])
    cpu = sum(r["cpu_seconds"] for r in rec["rows"])
    peak = max((r["peak_rss_mib"] for r in rec["rows"]), default=0)
    pending = rec.get("pending", [])
    lines.append(f"| **{'stages so far' if pending else 'all stages'}** | **{_hms(wall)}** | **{cpu:,.0f}** | "
                 f"{n / wall:,.0f} | {1e3 * cpu / n:.2f} | **{peak:,}** |")
    lines.append("")
    if pending:  # a partial run: the whole-run target cannot be judged yet
        lines += [f"Not yet run: {', '.join(pending)}. The whole-run targets (≤ {TARGET_HOURS:g} h wall, peak RSS ≤ "
                  f"{TARGET_RSS_MIB:,} MiB) are judged when every stage has run; so far peak RSS is {peak:,} MiB and "
                  f"the measured stages took {_hms(wall)}.", ""]
    else:
        lines += [f"Target: the whole run ≤ {TARGET_HOURS:g} h wall "
                  f"({'met' if wall <= TARGET_HOURS * 3600 else 'not met'}: {_hms(wall)}), peak RSS ≤ "
                  f"{TARGET_RSS_MIB:,} MiB ({'met' if peak <= TARGET_RSS_MIB else 'not met'}: {peak:,} MiB).", ""]
    lines += [f"- {x}" for x in rec.get("notes", [])] + ([""] if rec.get("notes") else [])
    lines += [f"- {x}" for x in rec.get("machine", [])] + [f"- load average when recorded: "
                                                           f"{', '.join(map(str, rec.get('load_average', [])))}", ""]
    return lines


def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def recorded_sections(folder: Path = RECORDS) -> list[str]:
    """Every record in ``folder`` as Markdown sections (``make bench`` appends them to BENCHMARKS.md)."""
    lines: list[str] = []
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        lines += record_lines(json.loads(f.read_text()))
    return lines


def replace_section(markdown: str, section: list[str]) -> str:
    """``markdown`` with the ``## `` section of the same heading as ``section`` replaced (appended when absent)."""
    head = section[0]
    out, skip, done = [], False, False
    for line in markdown.splitlines():
        if line == head:
            out += section
            skip, done = True, True
            continue
        if skip and line.startswith("## "):
            skip = False
        if not skip:
            out.append(line)
    if not done:
        out += ([""] if out and out[-1] else []) + section
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cxrdistill.bench.scale")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("point", help="run the scale study on CheXpert's first N rows; print its per-stage table")
    p.add_argument("n", type=int)
    p.add_argument("--root", type=Path, default=Path("runs/bench-scale"))
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--full-teacher", action="store_true", help="pretrain the config's own teacher (not the "
                   "benchmark's smaller one)")
    r = sub.add_parser("record", help="record a point run (its scale_stages.json) in bench/records/ and put its "
                       "section into BENCHMARKS.md")
    r.add_argument("run", type=Path, help="the point's study directory, e.g. runs/bench-scale/study-223414")
    r.add_argument("--title", default="CheXpert-size run: every stage on 2 CPU cores")
    r.add_argument("--note", action="append", default=[], help="a line under the table (repeatable)")
    r.add_argument("--name", default="chexpert_scale", help="file name of the record (without .json)")
    r.add_argument("--benchmarks", type=Path, default=Path("BENCHMARKS.md"))
    args = ap.parse_args(argv)
    if args.cmd == "record":
        from cxrdistill.storage.io import atomic_open, write_json

        rec = make_record(args.run, title=args.title, notes=args.note)
        RECORDS.mkdir(exist_ok=True)
        write_json(rec, RECORDS / f"{args.name}.json")
        text = args.benchmarks.read_text(encoding="utf-8") if args.benchmarks.exists() else "# Benchmarks\n"
        with atomic_open(args.benchmarks) as fh:
            fh.write(replace_section(text, record_lines(rec)))
        print("\n".join(record_lines(rec)))
        return 0
    data = dataset(args.n, args.root / "data")
    rows = run_point(data, args.root / f"study-{args.n}", args.config, {} if args.full_teacher else None)
    for r in rows:
        print(f"{r['stage']:>14}  wall {r['seconds']:8.1f} s  CPU {_cost(r):8.1f} s  "
              f"{_cost(r) / r['images'] * 1e3:8.3f} CPU ms/image  peak RSS {r['peak_rss_mib']:,} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
