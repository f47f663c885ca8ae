"""The stage scheduler: jobs=2 runs independent stages at once in worker processes, keeps the dependency order and the
exclusive stages alone, gives the same results and cache records as jobs=1, and on a failure names the stage, keeps
what finished and runs nothing that depends on it."""
import json

import pytest

import engine_stages as S
from cxrdistill.errors import CxrError
from cxrdistill.study.engine import Stage, StageFailed, StudyContext, run_stages


def pipeline(extra=()):
    return [Stage("a", S.a), Stage("b", S.b), Stage("c", S.c, ("a", "b")),
            Stage("timing", S.timing, ("c",), exclusive=True), Stage("d", S.d, ("a",)), *extra]


def run(tmp_path, name, jobs, stages=None, **kw):
    out = tmp_path / name
    out.mkdir(exist_ok=True)
    lines = []
    ctx = StudyContext(out=out, cfg=None, log=lines.append, logfile=out / "log.txt")
    res = run_stages(ctx, stages or pipeline(), jobs=jobs, **kw)
    return out, res, lines


def trace(out):
    return {p.stem: json.loads(p.read_text()) for p in (out / "trace").glob("*.json")}


def test_two_jobs_overlap_independent_stages_and_respect_order(tmp_path):
    out, res, lines = run(tmp_path, "par", jobs=2)
    t = trace(out)
    assert "[a] hello from the stage" in (out / "log.txt").read_text()  # written by the worker process
    assert any("[a] done" in line for line in lines)
    assert t["a"]["pid"] != t["b"]["pid"]  # two worker processes …
    assert t["a"]["start"] < t["b"]["end"] and t["b"]["start"] < t["a"]["end"]  # … at the same time
    assert t["c"]["start"] >= max(t["a"]["end"], t["b"]["end"])  # after both of its dependencies
    assert set(t["c"]["deps_seen"]) == {"a", "b"} and set(t["timing"]["deps_seen"]) == {"a", "b", "c"}
    assert set(t["d"]["deps_seen"]) == {"a"}  # a stage sees only what it (transitively) reads
    # the exclusive stage overlaps nothing
    for other in ("a", "b", "c", "d"):
        assert t["timing"]["end"] <= t[other]["start"] or t["timing"]["start"] >= t[other]["end"], other
    assert res["c"]["value"].startswith("c(") and res["c"]["_seconds"] > 0


def test_same_results_and_records_as_one_job(tmp_path):
    out1, r1, _ = run(tmp_path, "seq", jobs=1)
    out2, r2, _ = run(tmp_path, "par", jobs=2)
    timings = ("_seconds", "_cpu_seconds")
    strip = {k: {kk: vv for kk, vv in v.items() if kk not in timings} for k, v in r1.items()}
    assert strip == {k: {kk: vv for kk, vv in v.items() if kk not in timings} for k, v in r2.items()}
    for name in "abcd":
        k1 = json.loads((out1 / "stages" / f"{name}.json").read_text())["key"]
        assert k1 == json.loads((out2 / "stages" / f"{name}.json").read_text())["key"]
    t = trace(out1)  # one job: strictly one stage after the other, in list order
    order = sorted(t, key=lambda n: t[n]["start"])
    assert order == ["a", "b", "c", "timing", "d"]


def test_rerun_is_cached_with_either_job_count(tmp_path):
    out, _, _ = run(tmp_path, "r", jobs=2)
    before = {n: t["start"] for n, t in trace(out).items()}
    _, _, lines = run(tmp_path, "r", jobs=1)
    assert sum("cached" in line for line in lines) == 5
    assert {n: t["start"] for n, t in trace(out).items()} == before  # nothing ran again
    _, _, lines = run(tmp_path, "r", jobs=2, force=["c"])
    assert any("[c] running" in line for line in lines) and not any("[a] running" in line for line in lines)
    with pytest.raises(CxrError, match="unknown stage 'nope'"):
        run(tmp_path, "r", jobs=2, only=["nope"])


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_failure_names_the_stage_keeps_finished_ones_and_skips_dependents(tmp_path, jobs):
    stages = [Stage("a", S.a), Stage("boom", S.boom), Stage("after", S.c, ("boom",)), Stage("d", S.d, ("a",))]
    with pytest.raises(StageFailed, match=r"stage 'boom' failed: the input is bad"):
        run(tmp_path, f"f{jobs}", jobs=jobs, stages=stages)
    out = tmp_path / f"f{jobs}"
    assert (out / "stages" / "a.json").exists()
    assert not (out / "stages" / "boom.json").exists() and not (out / "trace" / "c.json").exists()


def test_an_unexpected_error_in_a_worker_keeps_its_traceback(tmp_path):
    with pytest.raises(StageFailed, match=r"stage 'crash' failed: ZeroDivisionError.*crash\.error\.txt"):
        run(tmp_path, "x", jobs=2, stages=[Stage("crash", S.crash), Stage("a", S.a)])
    assert "ZeroDivisionError" in (tmp_path / "x" / "stages" / "crash.error.txt").read_text()
    assert (tmp_path / "x" / "stages" / "a.json").exists()  # the sibling running beside it finished and was kept


def test_with_two_jobs_the_costliest_ready_stage_starts_first(tmp_path):
    # in list order a and d would start together; by cost b (cost 5) and a start, and d waits for a free worker
    stages = [Stage("a", S.a), Stage("d", S.d), Stage("b", S.b, cost=5)]
    out, _, _ = run(tmp_path, "cost", jobs=2, stages=stages)
    t = trace(out)
    assert t["d"]["start"] >= min(t["a"]["end"], t["b"]["end"]) - 0.05


def test_ranks_are_cost_plus_the_costliest_chain_waiting():
    from cxrdistill.study.engine import ranks

    f = S.a
    st = [Stage("teacher", f, cost=3), Stage("distill", f, ("teacher",), cost=3), Stage("audit", f, ("distill",), cost=2),
          Stage("fair", f, ("teacher",), cost=4), Stage("alone", f, cost=5)]
    r = ranks(st)
    assert r == {"teacher": 8, "distill": 5, "audit": 2, "fair": 4, "alone": 5}
    from cxrdistill.study.stages import STAGES

    real = ranks(STAGES)  # the study: the distillation chain outranks fair distillation, which has no dependents
    assert real["distill"] > real["fair_distill"] and real["teacher"] > real["pretraining"]


def test_two_failures_at_once_name_the_earlier_stage_whichever_ends_first(tmp_path):
    stages = [Stage("slowfail", S.slowfail), Stage("boom", S.boom)]  # boom fails first in time
    with pytest.raises(StageFailed, match=r"^stage 'slowfail' failed: slow and bad .*\(and 1 more\)$"):
        run(tmp_path, "two", jobs=2, stages=stages)


@pytest.mark.parametrize("jobs", [1, 2])
def test_each_stage_records_its_cpu_time_apart_from_its_wall_time(tmp_path, jobs):
    out, res, _ = run(tmp_path, f"cpu{jobs}", jobs=jobs, stages=[Stage("a", S.a), Stage("spin", S.spin)])
    assert res["a"]["_seconds"] >= 2.5 and res["a"]["_cpu_seconds"] < 1.0  # it slept
    assert res["spin"]["_cpu_seconds"] >= 0.3
