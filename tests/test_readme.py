"""README.md is assembled from docs/readme/*.md: the committed file must match the sources."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_is_built_from_its_sources():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "build_readme.py"), "--check"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
