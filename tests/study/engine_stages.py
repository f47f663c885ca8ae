"""Stage functions for the scheduler tests (module level, so that spawned worker processes can import them). Each
records when it ran and in which process, in ``<out>/trace/<name>.json``."""
import json
import os
import time
from pathlib import Path

from cxrdistill.errors import CxrError


def _record(ctx, name: str, seconds: float) -> dict:
    t0 = time.time()
    time.sleep(seconds)
    deps = {k: v.get("value") for k, v in ctx.results.items()}
    rec = {"start": t0, "end": time.time(), "pid": os.getpid(), "deps_seen": deps}
    p = Path(ctx.out) / "trace" / f"{name}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(rec))
    return {"value": f"{name}({','.join(sorted(deps))})"}


def a(ctx):
    ctx.log("[a] hello from the stage")
    return _record(ctx, "a", 2.5)


def b(ctx):
    return _record(ctx, "b", 2.5)


def c(ctx):  # reads a and b
    return _record(ctx, "c", 0.2)


def timing(ctx):  # exclusive
    return _record(ctx, "timing", 0.3)


def d(ctx):
    return _record(ctx, "d", 0.6)


def boom(ctx):
    time.sleep(0.1)
    raise CxrError("the input is bad")


def crash(ctx):
    raise ZeroDivisionError("division by zero")


def slowfail(ctx):
    time.sleep(1.5)
    raise CxrError("slow and bad")


def spin(ctx):  # busy for 0.3 s of CPU time, however long that takes on a shared machine
    t0 = time.process_time()
    while time.process_time() - t0 < 0.3:
        pass
    return {"value": "spin"}
