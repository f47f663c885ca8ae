"""Assemble README.md from the sections in docs/readme/ (the sources; edit those, then run `make readme`).

    python tools/build_readme.py           # rewrite README.md
    python tools/build_readme.py --check   # exit 1 when README.md is out of date (run by the tests)
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ["_head", "study", "synth", "cohorts", "images_store", "teacher", "distill", "audit", "feature_audit",
            "fairness", "fairkd", "pretraining", "scale", "reliability", "_tail"]
# links inside docs/readme/ are relative to that folder; in README.md they are relative to the repository root
LINK_FIXES = {"](../synth_preview.png)": "](docs/synth_preview.png)"}


def build() -> str:
    parts = [(ROOT / "docs" / ("readme/" + name if name.startswith("_") else name)).with_suffix(".md").read_text(encoding="utf-8").strip() for name in SECTIONS]
    text = "\n\n".join(parts) + "\n"
    for old, new in LINK_FIXES.items():
        text = text.replace(old, new)
    return text


def main(argv: list[str]) -> int:
    readme = ROOT / "README.md"
    text = build()
    if "--check" in argv:
        if readme.read_text(encoding="utf-8") != text:
            print("README.md is out of date: edit docs/readme/*.md, then run `make readme`", file=sys.stderr)
            return 1
        return 0
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(readme)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
