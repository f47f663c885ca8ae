"""Report pages in headless Chromium: wide tables scroll inside their box instead of spilling past the column (the
check itself is shown to fail on a page without the report's styles)."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from cxrdistill.report.html import page, section, table

pytest.importorskip("playwright")
pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (make browser)")

WIDE = pd.DataFrame(np.arange(3 * 40, dtype=float).reshape(3, 40) / 7, columns=[f"quantity_{k:02d}" for k in range(40)])


def test_wide_tables_scroll_inside_their_box(tmp_path):
    from cxrdistill.report.browser import check_page

    raw = "<table>" + "".join(f"<td>raw_cell_number_{k}</td>" for k in range(40)) + "</table>"  # no wrapper
    html = page("wide", [section("A wide table", [table(WIDE)]), section("A raw table", [raw]),
                         section("Scenario", ["<details open><summary>json</summary><pre>"
                                              + "x" * 3000 + "</pre></details>"])])
    (tmp_path / "ok.html").write_text(html, encoding="utf-8")
    r = check_page(tmp_path / "ok.html", tmp_path / "ok.png", width=900)
    assert r["tables"] == 2 and r["overflowing_tables"] == [] and r["page_overflow_px"] == 0, r
    assert r["console_errors"] == [] and r["page_errors"] == []

    bare = html.split("<style>")[0] + html.split("</style>")[1]  # the same page without the report's CSS
    (tmp_path / "bare.html").write_text(bare, encoding="utf-8")
    r = check_page(tmp_path / "bare.html", width=900)
    assert r["page_overflow_px"] > 100 and len(r["overflowing_tables"]) == 2, r
    assert r["overflowing_tables"][0] == "quantity_00"


def test_whole_numbers_print_as_integers():
    df = pd.DataFrame({"images": [5.0, 12.0], "auc": [0.75, 1.0], "mixed": [3.0, "n/a"]}).astype({"mixed": object})
    html = table(df)
    assert "<td class=\"n\">5</td>" in html and "<td class=\"n\">12</td>" in html and "5.000" not in html
    assert "0.750" in html and "1.000" in html  # a column with fractions keeps its decimals everywhere
    assert ">3<" in html
