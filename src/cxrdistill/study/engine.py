"""Stage caching: each stage's key hashes its own config and the keys of the stages it reads, so a re-run does only
what changed. A stage's record is written (atomically) only after it succeeds; a failure names the stage and leaves
every earlier stage's outputs intact."""
from __future__ import annotations

import hashlib
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cxrdistill.errors import CxrError
from cxrdistill.io import write_json


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Stage:
    name: str
    fn: Callable[["StudyContext"], dict]
    deps: tuple[str, ...] = ()
    config: Callable[["StudyContext"], Any] = lambda ctx: None
    enabled: Callable[["StudyContext"], bool] = lambda ctx: True
    description: str = ""


@dataclass
class StudyContext:
    out: Path
    cfg: Any
    results: dict[str, dict] = field(default_factory=dict)  # stage name -> its returned summary
    keys: dict[str, str] = field(default_factory=dict)
    log: Callable[[str], None] = print

    def path(self, *parts: str) -> Path:
        p = self.out.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


class StageFailed(CxrError):
    pass


def run_stages(ctx: StudyContext, stages: list[Stage], only: list[str] | None = None,
               force: list[str] | None = None) -> dict[str, dict]:
    """Run the stages in order, reusing cached results whose key still matches. ``only`` re-runs just those stages
    (their dependencies must be cached); ``force`` re-runs those stages even when cached."""
    names = {s.name for s in stages}
    for n in (only or []) + (force or []):
        if n not in names:
            raise CxrError(f"unknown stage {n!r}; stages: {', '.join(s.name for s in stages)}")
    rec_dir = ctx.out / "stages"
    rec_dir.mkdir(parents=True, exist_ok=True)
    for st in stages:
        if not st.enabled(ctx):
            continue
        key = stable_hash({"stage": st.name, "config": st.config(ctx),
                           "deps": {d: ctx.keys.get(d) for d in st.deps}})
        rec_path = rec_dir / f"{st.name}.json"
        rec = json.loads(rec_path.read_text()) if rec_path.exists() else None
        cached = rec is not None and rec.get("key") == key
        must_run = (st.name in (force or [])) or (only is not None and st.name in only) or not cached
        if only is not None and st.name not in only:
            if not cached:
                raise CxrError(f"stage {st.name!r} has no cached result for this config; run the study without "
                               f"--only first")
            must_run = False
        if not must_run:
            ctx.keys[st.name] = key
            ctx.results[st.name] = rec["result"]
            ctx.log(f"[{st.name}] cached")
            continue
        ctx.log(f"[{st.name}] running{': ' + st.description if st.description else ''}")
        t0 = time.perf_counter()
        try:
            result = st.fn(ctx) or {}
        except CxrError as e:
            raise StageFailed(f"stage {st.name!r} failed: {e} (earlier stages' results are kept in {ctx.out})") \
                from None
        except Exception as e:
            (ctx.out / "stages" / f"{st.name}.error.txt").write_text(traceback.format_exc())
            raise StageFailed(f"stage {st.name!r} failed: {type(e).__name__}: {e} (traceback in "
                              f"{ctx.out / 'stages' / (st.name + '.error.txt')}; earlier stages are kept)") from None
        secs = time.perf_counter() - t0
        result = {**result, "_seconds": round(secs, 2)}
        write_json({"key": key, "result": result}, rec_path)
        ctx.keys[st.name] = key
        ctx.results[st.name] = result
        ctx.log(f"[{st.name}] done in {secs:.1f} s")
    return ctx.results
