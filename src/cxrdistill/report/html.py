"""Self-contained HTML pages: every string escaped, every figure embedded as a base64 PNG (opens offline)."""
from __future__ import annotations

import base64
import html
import io
import re
from typing import Any, Iterable

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;
color:#1d232a;line-height:1.45}
h1{font-size:1.7em;border-bottom:2px solid #2b6cb0;padding-bottom:.2em}h2{margin-top:1.8em;color:#2b4c7e}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}th,td{border:1px solid #cfd6de;padding:.25em .55em;
text-align:left;white-space:nowrap}td:last-child{white-space:normal}th{background:#eef2f7}
.scroll{overflow-x:auto;max-width:100%}:not(.scroll)>table{display:block;overflow-x:auto;max-width:100%}
pre{white-space:pre-wrap;overflow-wrap:anywhere;max-width:100%}details>summary{cursor:pointer}
td.n{text-align:right}
figure{margin:1em 0}figcaption{font-size:.9em;color:#44515f;margin-top:.3em}img{max-width:100%}
.reading{background:#f4f8fc;border-left:4px solid #2b6cb0;padding:.4em .8em;margin:.5em 0}
.muted{color:#6b7785;font-size:.85em}.bad{color:#b02a2a}.good{color:#1e7b34}
.pair{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:0 1.5em;align-items:start}
.pair figure{margin:.6em 0}nav.toc{font-size:.9em;margin:.4em 0 1em}nav.toc a{margin-right:1em;color:#2b4c7e}
ul.findings li{margin:.25em 0}
"""


def esc(x: Any) -> str:
    """Escape any value for HTML text or attribute context."""
    return html.escape("" if x is None else str(x), quote=True)


def fig_to_data_uri(fig, dpi: int = 110) -> str:
    """Render a matplotlib figure to an embedded PNG data URI and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def figure(fig, caption: str, alt: str | None = None) -> str:
    """A figure with its one-line reading as caption."""
    uri = fig_to_data_uri(fig)
    return (f'<figure><img src="{uri}" alt="{esc(alt or caption)}">'
            f'<figcaption>{esc(caption)}</figcaption></figure>')


_NUMERIC = re.compile(r"[-+−]?(\d|\.\d|\[)")


def _td(text: str) -> str:
    """A cell; numbers (and intervals) are right-aligned."""
    cls = ' class="n"' if _NUMERIC.match(text) else ""
    return f"<td{cls}>{esc(text)}</td>"


def _is_float(v) -> bool:
    import numbers

    return isinstance(v, numbers.Real) and not isinstance(v, (bool, numbers.Integral))


def _integral_columns(df) -> list[bool]:
    """Per column: every number in it is a whole number (counts stored as floats), so it prints without decimals."""
    import math

    out = []
    for c in range(df.shape[1]):
        vals = [v for v in df.iloc[:, c] if _is_float(v) and not math.isnan(v)]
        out.append(bool(vals) and all(math.isfinite(v) and float(v).is_integer() for v in vals)
                   and all(abs(v) < 1e15 for v in vals))
    return out


def table(df, float_fmt: str = "{:.3f}", max_rows: int = 500) -> str:
    """A pandas DataFrame as an escaped HTML table (no raw HTML from cells ever passes through). Columns whose
    numbers are all whole print as integers ("5", not "5.000"); the table scrolls inside its box when too wide."""
    import math

    cols = list(df.columns)
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    shown = df.head(max_rows)
    integral = _integral_columns(shown)
    rows = []
    for rec in shown.itertuples(index=False):
        cells = []
        for v, whole in zip(rec, integral):
            if _is_float(v):
                s = "" if math.isnan(v) else (str(int(v)) if whole else float_fmt.format(v))
            else:
                s = "" if v is None else str(v)
            cells.append(_td(s))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = f'<p class="muted">{len(df) - max_rows} more rows not shown</p>' if len(df) > max_rows else ""
    body = "".join(rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{more}'


def markdown_tables(text: str) -> str:
    """The Markdown our own writers produce (``### title`` or ``**title**`` lines, pipe tables, plain lines) as
    escaped HTML: headings become ``<h3>``, tables ``<table>``, other lines paragraphs. Nothing passes unescaped."""
    out: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if rows:
            _whole_numbers(rows)
            head = "".join(f"<th>{esc(c)}</th>" for c in rows[0])
            body = "".join("<tr>" + "".join(_td(c) for c in r) + "</tr>" for r in rows[1:])
            out.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')
            rows.clear()

    for line in text.splitlines():
        s = line.strip()
        if s.startswith("|") and s.endswith("|"):
            cells = [c.strip() for c in s[1:-1].split("|")]
            if not all(set(c) <= set("-: ") and c for c in cells):  # skip the |---|---| rule
                rows.append(cells)
            continue
        flush()
        if not s:
            continue
        if s.startswith("#"):
            out.append(f"<h3>{esc(s.lstrip('#').strip())}</h3>")
        elif s.startswith("**") and s.endswith("**") and len(s) > 4:
            out.append(f"<h3>{esc(s[2:-2])}</h3>")
        else:
            out.append(f'<p class="muted">{esc(s)}</p>')
    flush()
    return "".join(out)


_WHOLE = re.compile(r"^[-+]?\d+\.0+$")


def _whole_numbers(rows: list[list[str]]) -> None:
    """In place: a column whose numbers all read like "5.0" prints them as "5" (counts written as floats)."""
    width = max(len(r) for r in rows)
    for c in range(width):
        cells = [r[c] for r in rows[1:] if c < len(r) and r[c].strip()]
        if cells and all(_WHOLE.match(x.strip()) for x in cells):
            for r in rows[1:]:
                if c < len(r) and r[c].strip():
                    r[c] = str(int(float(r[c])))


def section(title: str, body_html: Iterable[str] | str, reading: str | None = None, anchor: str | None = None) -> str:
    body = body_html if isinstance(body_html, str) else "\n".join(body_html)
    rd = f'<p class="reading">{esc(reading)}</p>' if reading else ""
    aid = f' id="{esc(anchor)}"' if anchor else ""
    return f"<section{aid}><h2>{esc(title)}</h2>{rd}{body}</section>"


def pair(items: Iterable[str]) -> str:
    """Figures laid out two per row (teacher beside student), read left to right."""
    items = [x for x in items if x]
    return f'<div class="pair">{"".join(items)}</div>' if items else ""


def bullets(lines: Iterable[str], cls: str | None = None) -> str:
    c = f' class="{esc(cls)}"' if cls else ""
    return f"<ul{c}>" + "".join(f"<li>{esc(x)}</li>" for x in lines) + "</ul>"


def toc(entries: Iterable[tuple[str, str]]) -> str:
    """Links to the sections of a page: (anchor, title) pairs."""
    return '<nav class="toc">' + "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t in entries) + "</nav>"


def paragraph(text: str, cls: str | None = None) -> str:
    c = f' class="{esc(cls)}"' if cls else ""
    return f"<p{c}>{esc(text)}</p>"


def page(title: str, sections: Iterable[str], subtitle: str | None = None) -> str:
    sub = f'<p class="muted">{esc(subtitle)}</p>' if subtitle else ""
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{esc(title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>{sub}{''.join(sections)}</body></html>"
    )
