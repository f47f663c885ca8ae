"""Stage caching and scheduling: each stage's key hashes its own config and the keys of the stages it reads, so a
re-run does only what changed. A stage's record is written (atomically) only after it succeeds; a failure names the
stage and leaves every earlier stage's outputs intact. A stage that started with the same key and did not finish
resumes (``StudyContext.resume``: its training runs continue from their checkpoints). With ``jobs > 1`` independent
stages run at once, each in its own process with ``cores / jobs`` threads (on a CPU, two single-threaded trainings get
more done than one with two threads; docs/study.md, "Stages at once")."""
from __future__ import annotations

import json
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cxrdistill.errors import CxrError
from cxrdistill.storage.io import stable_hash, write_json


@dataclass
class Stage:
    name: str
    fn: Callable[["StudyContext"], dict]
    deps: tuple[str, ...] = ()
    config: Callable[["StudyContext"], Any] = lambda ctx: None
    enabled: Callable[["StudyContext"], bool] = lambda ctx: True
    description: str = ""
    exclusive: bool = False  # runs with no other stage beside it (timings)
    cost: float = 1.0  # rough relative run time (see :func:`ranks`)


def ranks(stages: list[Stage]) -> dict[str, float]:
    """Each stage's cost plus the costliest chain of stages that wait for it (critical-path list scheduling): with
    ``jobs > 1`` the ready stage of highest rank starts first, so long chains start early and the tail is short."""
    children: dict[str, list[str]] = {s.name: [] for s in stages}
    for s in stages:
        for d in s.deps:
            if d in children:
                children[d].append(s.name)
    cost = {s.name: s.cost for s in stages}
    out: dict[str, float] = {}

    def rank(name: str) -> float:
        if name not in out:
            out[name] = cost[name] + max((rank(c) for c in children[name]), default=0.0)
        return out[name]

    for s in stages:
        rank(s.name)
    return out


def file_logger(logfile: Path | None, echo: Callable[[str], None] | None = print) -> Callable[[str], None]:
    """Timestamped lines to ``echo`` and appended to ``logfile`` (one ``write`` per line, so processes interleave
    whole lines)."""
    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        if echo is not None:
            echo(line)
        if logfile is not None:
            with open(logfile, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")

    return log


@dataclass
class StudyContext:
    out: Path
    cfg: Any
    results: dict[str, dict] = field(default_factory=dict)  # stage name -> its returned summary
    keys: dict[str, str] = field(default_factory=dict)
    log: Callable[[str], None] = print
    logfile: Path | None = None  # where a stage running in another process logs
    # the running stage started before with the same key and did not finish (killed or failed), and is not forced:
    # its training runs resume their checkpoints; otherwise (first run, changed config or inputs, force) they start
    # over
    resume: bool = False

    def path(self, *parts: str) -> Path:
        p = self.out.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


class StageFailed(CxrError):
    pass


def _call(name: str, fn: Callable[[StudyContext], dict], ctx: StudyContext) -> dict:
    """Run one stage; every error becomes ``{"error": message}`` (the traceback of an unexpected one is kept in
    ``stages/<name>.error.txt``) so that it crosses a process boundary as plain data."""
    t0, cpu0 = time.perf_counter(), _cpu_seconds()
    try:
        result = fn(ctx) or {}
    except CxrError as e:
        return {"error": f"stage {name!r} failed: {e} (earlier stages' results are kept in {ctx.out})"}
    except Exception as e:
        err = ctx.out / "stages" / f"{name}.error.txt"
        err.write_text(traceback.format_exc(), encoding="utf-8")
        return {"error": f"stage {name!r} failed: {type(e).__name__}: {e} (traceback in {err}; earlier stages "
                         "are kept)"}
    return {"result": {**result, "_seconds": round(time.perf_counter() - t0, 2),
                       "_cpu_seconds": round(_cpu_seconds() - cpu0, 2)}}


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished child processes: a stage's cost in core-seconds,
    which (unlike its wall time) does not grow when other programs share the cores."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _worker_init(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:  # pragma: no cover - scikit-learn brings threadpoolctl
        pass


def _call_in_worker(name: str, fn: Callable[[StudyContext], dict], ctx: StudyContext) -> dict:
    ctx.log = file_logger(ctx.logfile, echo=lambda line: print(line, flush=True))
    return _call(name, fn, ctx)


def _started_key(path: Path) -> str | None:
    """The key of the stage's unfinished start (``stages/<name>.started.json``), None when none is readable."""
    try:
        return json.loads(path.read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None


def run_stages(ctx: StudyContext, stages: list[Stage], only: list[str] | None = None,
               force: list[str] | None = None, jobs: int = 1) -> dict[str, dict]:
    """Run the stages (in order, or ``jobs`` at a time as their dependencies finish), reusing cached results whose
    key still matches. ``only`` re-runs just those stages (their dependencies must be cached); ``force`` re-runs
    those stages even when cached. A disabled stage counts as done for the stages that read it."""
    names = {s.name for s in stages}
    for n in (only or []) + (force or []):
        if n not in names:
            raise CxrError(f"unknown stage {n!r}; stages: {', '.join(s.name for s in stages)}")
    rec_dir = ctx.out / "stages"
    rec_dir.mkdir(parents=True, exist_ok=True)
    by_name = {s.name: s for s in stages}

    def upstream(name: str) -> set[str]:
        seen: set[str] = set()
        stack = list(by_name[name].deps)
        while stack:
            d = stack.pop()
            if d in by_name and d not in seen:
                seen.add(d)
                stack.extend(by_name[d].deps)
        return seen

    todo = [s for s in stages if s.enabled(ctx)]
    rank = ranks(todo)
    done = {s.name for s in stages} - {s.name for s in todo}
    pool = None
    if jobs > 1:
        import concurrent.futures as cf
        import multiprocessing as mp

        threads = max(1, (os.cpu_count() or 1) // jobs)
        pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                                      initializer=_worker_init, initargs=(threads,))
    running: dict[Any, tuple[Stage, str, float]] = {}
    failures: list[tuple[int, str]] = []  # (position in the stage list, message): reported in list order
    pos = {s.name: i for i, s in enumerate(stages)}

    def finish(st: Stage, key: str, out: dict, t0: float) -> None:
        if "error" in out:
            failures.append((pos[st.name], out["error"]))
            return
        write_json({"key": key, "result": out["result"]}, rec_dir / f"{st.name}.json")
        (rec_dir / f"{st.name}.started.json").unlink(missing_ok=True)
        ctx.keys[st.name], ctx.results[st.name] = key, out["result"]
        done.add(st.name)
        ctx.log(f"[{st.name}] done in {time.perf_counter() - t0:.1f} s")

    try:
        while (todo and not failures) or running:
            started = False
            # one job: list order; several: highest rank first among the ready ones
            queue = [] if failures else (sorted(todo, key=lambda x: -rank[x.name]) if pool is not None else list(todo))
            for st in queue:
                if not all(d in done for d in st.deps):
                    continue
                try:  # a stage's config is checked when its inputs are ready; a bad one fails that stage
                    conf = st.config(ctx)
                except CxrError as e:
                    todo.remove(st)
                    failures.append((pos[st.name], f"stage {st.name!r} failed: {e} (earlier stages' results are kept "
                                                   f"in {ctx.out})"))
                    break
                key = stable_hash({"stage": st.name, "config": conf, "deps": {d: ctx.keys.get(d) for d in st.deps}})
                rec_path = rec_dir / f"{st.name}.json"
                rec = json.loads(rec_path.read_text()) if rec_path.exists() else None
                cached = rec is not None and rec.get("key") == key
                must_run = (st.name in (force or [])) or (only is not None and st.name in only) or not cached
                if only is not None and st.name not in only:
                    if not cached:
                        raise CxrError(f"stage {st.name!r} has no cached result for this config; run the study "
                                       "without --only first")
                    must_run = False
                if not must_run:
                    todo.remove(st)
                    ctx.keys[st.name], ctx.results[st.name] = key, rec["result"]
                    done.add(st.name)
                    ctx.log(f"[{st.name}] cached")
                    started = True
                    break
                if pool is not None and (len(running) >= jobs or (running and (st.exclusive or any(
                        s.exclusive for s, _, _ in running.values())))):
                    continue
                todo.remove(st)
                started_path = rec_dir / f"{st.name}.started.json"
                resume = not cached and st.name not in (force or []) and _started_key(started_path) == key
                write_json({"key": key}, started_path)
                ctx.log(f"[{st.name}] {'resuming' if resume else 'running'}"
                        f"{': ' + st.description if st.description else ''}")
                t0 = time.perf_counter()
                # a stage sees only what it (transitively) reads: the same in one process or many, and covered
                # by its cache key
                up = upstream(st.name)
                sub = StudyContext(out=ctx.out, cfg=ctx.cfg, results={k: v for k, v in ctx.results.items() if k in up},
                                   keys={k: v for k, v in ctx.keys.items() if k in up}, log=ctx.log,
                                   logfile=ctx.logfile, resume=resume)
                if pool is None:
                    finish(st, key, _call(st.name, st.fn, sub), t0)
                else:
                    sub.log = print
                    running[pool.submit(_call_in_worker, st.name, st.fn, sub)] = (st, key, t0)
                started = True
                break
            if started:
                continue
            if running:
                import concurrent.futures as cf

                finished, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    st, key, t0 = running.pop(fut)
                    try:
                        out = fut.result()
                    except Exception as e:  # the worker process itself died (killed, out of memory)
                        out = {"error": f"stage {st.name!r} failed: its process ended ({type(e).__name__}: {e}); "
                                        "earlier stages are kept"}
                    finish(st, key, out, t0)
            elif todo and not failures:
                raise CxrError(f"stages {[s.name for s in todo]} wait for stages that never run")
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if failures:
        first = min(failures)[1]  # the same stage is named whichever process finished first
        raise StageFailed(first + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""))
    return ctx.results
