"""The recorded full-size run of the scale benchmark: its record, its Markdown section, and the section's place in
BENCHMARKS.md (replaced, not duplicated, when recorded again)."""
from __future__ import annotations

import json

import pandas as pd

from cxrdistill.bench import scale


def _run_dir(tmp_path, rows):
    run = tmp_path / "study-1000"
    run.mkdir(parents=True)
    pd.DataFrame({"image_id": [f"i{k}" for k in range(1000)],
                  "split": ["train"] * 700 + ["val"] * 100 + ["test"] * 200}).to_parquet(run / "cohort.parquet")
    (run / "scale_stages.json").write_text(json.dumps({"data": "x", "rows": rows}))
    return run


ROWS = [{"stage": "images", "seconds": 50.0, "cpu_seconds": 40.0, "peak_rss_mib": 900},
        {"stage": "distill", "seconds": 3700.0, "cpu_seconds": 7000.0, "peak_rss_mib": 1500}]


def _complete(monkeypatch):
    monkeypatch.setattr(scale, "planned_stages", lambda config=scale.CONFIG: [r["stage"] for r in ROWS])


def test_record_table_sums_the_stages_and_judges_the_targets(tmp_path, monkeypatch):
    _complete(monkeypatch)
    rec = scale.make_record(_run_dir(tmp_path, ROWS), title="Big run", notes=["a note"])
    assert rec["images"] == 1000 and rec["splits"] == {"train": 700, "val": 100, "test": 200}
    lines = scale.record_lines(rec)
    text = "\n".join(lines)
    assert lines[0] == "## Big run"
    assert "| images | 0:50 | 40 | 20 | 40.00 | 900 |" in text          # 1000 images / 50 s; 40 s CPU / 1000
    assert "| distill | 1:01:40 | 7,000 | 0 | 7000.00 | 1,500 |" in text
    assert "**1:02:30**" in text and "**7,040**" in text and "**1,500**" in text
    assert "≤ 2 h wall (met: 1:02:30)" in text and "peak RSS ≤ 4,096 MiB (met: 1,500 MiB)" in text
    assert "- a note" in text
    slow = scale.make_record(_run_dir(tmp_path / "b", [ROWS[0], {**ROWS[1], "seconds": 7300.0,
                                                                  "peak_rss_mib": 5000}]), title="Slow")
    slow_text = "\n".join(scale.record_lines(slow))
    assert "(not met: 2:02:30)" in slow_text and "(not met: 5,000 MiB)" in slow_text


def test_a_partial_run_lists_its_pending_stages_and_judges_no_target(tmp_path):
    rec = scale.make_record(_run_dir(tmp_path, ROWS), title="Partial")   # the scale config plans every stage
    assert rec["pending"][:2] == ["cohort", "split"] and "distill" not in rec["pending"]
    text = "\n".join(scale.record_lines(rec))
    assert "**stages so far**" in text and "Not yet run: cohort, split," in text
    assert "Target:" not in text and "met" not in text.replace("measured", "")


def test_the_section_replaces_its_old_version_and_keeps_the_others():
    md = "# Benchmarks\n\n## distill\n\n| a |\n\n## Big run\n\nold table\n\n## teacher\n\nrow\n"
    out = scale.replace_section(md, ["## Big run", "", "new table", ""])
    assert "old table" not in out and out.count("## Big run") == 1 and "new table" in out
    assert out.index("## distill") < out.index("## Big run") < out.index("## teacher") and "row" in out
    appended = scale.replace_section("# Benchmarks\n", ["## Big run", "", "t", ""])
    assert appended.endswith("## Big run\n\nt\n")


def test_record_command_writes_the_record_and_the_benchmarks_section(tmp_path, monkeypatch):
    _complete(monkeypatch)
    monkeypatch.setattr(scale, "RECORDS", tmp_path / "records")
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\n## distill\n\nx\n")
    run = _run_dir(tmp_path, ROWS)
    assert scale.main(["record", str(run), "--title", "Big run", "--name", "big", "--benchmarks", str(bench)]) == 0
    rec = json.loads((tmp_path / "records" / "big.json").read_text())
    assert [r["stage"] for r in rec["rows"]] == ["images", "distill"]
    text = bench.read_text()
    assert "## distill" in text and "## Big run" in text and "| distill | 1:01:40 |" in text
    assert scale.recorded_sections(tmp_path / "records")[0] == "## Big run"
