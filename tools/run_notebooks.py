"""Execute the notebooks under docs/notebooks/ and store their outputs in place (what the docs site shows).

    python tools/run_notebooks.py            # every notebook
    python tools/run_notebooks.py NAME.ipynb # one

Each notebook runs in a fresh temporary directory (its files land there, not in the repository) with the venv's
Python kernel; a failing cell stops with its traceback. tests/docs/test_notebooks.py runs them the same way
without saving.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "docs" / "notebooks"


def run(path: Path, timeout: int = 300) -> nbformat.NotebookNode:
    """Execute ``path`` in a temporary working directory and return the executed notebook."""
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as tmp:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": tmp}}).execute()
    for cell in nb.cells:  # keep the stored notebooks free of run-specific noise (timings, widget warnings)
        cell.get("metadata", {}).pop("execution", None)
        cell["outputs"] = [o for o in cell.get("outputs", []) if not (o.get("name") == "stderr" and
                                                                      "TqdmWarning" in o.get("text", ""))]
    return nb


def main(argv: list[str]) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    paths = [NOTEBOOKS / a for a in argv] or sorted(NOTEBOOKS.glob("*.ipynb"))
    for p in paths:
        t = time.perf_counter()
        nb = run(p)
        tmp = p.with_suffix(".ipynb.tmp")
        nbformat.write(nb, tmp)
        tmp.replace(p)
        print(f"{p.relative_to(ROOT)}: {time.perf_counter() - t:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
