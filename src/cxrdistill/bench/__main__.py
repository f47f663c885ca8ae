"""``python -m cxrdistill.bench --out BENCHMARKS.md [--quick] [--only AREA]``: run every area's benchmark and write
one Markdown file (atomically) with the machine described and every ratio measured in this run."""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import sys
import time
import traceback

from cxrdistill.bench import AREAS
from cxrdistill.bench.machine import machine
from cxrdistill.storage.io import atomic_open


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cxrdistill.bench")
    ap.add_argument("--out", default="BENCHMARKS.md")
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds), for checking the benchmarks run")
    ap.add_argument("--only", action="append", help="run only these areas")
    args = ap.parse_args(argv)
    areas = args.only or AREAS
    lines = ["# Benchmarks", "",
             f"Written by `make bench` on {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}"
             f"{' (quick mode)' if args.quick else ''}. Every ratio below was measured side by side in this one run; "
             "this machine is noisy (±50% between runs), so read ratios, not absolute rates.", "", "## Machine", "",
             *machine(), ""]
    failed = 0
    for area in areas:
        try:
            mod = importlib.import_module(f"cxrdistill.bench.{area}")
        except ModuleNotFoundError:
            continue
        print(f"[bench] {area} …", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        lines += [f"## {area}", ""]
        try:
            rows = mod.run(quick=args.quick)
        except Exception:  # one failing benchmark must not lose the others; it is reported in the file
            failed += 1
            lines += ["```", traceback.format_exc()[-2000:], "```", ""]
            continue
        lines += ["| measurement | value | unit | goal | note |", "|---|---|---|---|---|"]
        for r in rows:
            lines.append("| " + " | ".join(fmt(r.get(k)).replace("|", "\\|")
                                           for k in ("name", "value", "unit", "goal", "note")) + " |")
        lines += ["", f"_{area}: {time.perf_counter() - t0:.0f} s_", ""]
    if args.only is None:  # runs at a real dataset's size take hours: their recorded tables are carried over
        from cxrdistill.bench.scale import recorded_sections

        lines += recorded_sections()
    with atomic_open(args.out) as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
