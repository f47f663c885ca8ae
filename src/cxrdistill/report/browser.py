"""Open an HTML report in headless Chromium (Debian's package, no download) and check it: console errors, images
that failed to load, tables wider than their box, and a screenshot for a person to look at."""
from __future__ import annotations

import shutil
from pathlib import Path

from cxrdistill.errors import CxrError

# A table overflows when it sticks out of the page's content column without a scrolling box around it; the page
# overflows when the document is wider than the window (a horizontal scrollbar on the whole page).
_OVERFLOW_JS = """() => {
  const de = document.documentElement;
  const right = document.body.getBoundingClientRect().right;
  const scrolls = el => { for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      const o = getComputedStyle(a).overflowX; if (o === 'auto' || o === 'scroll') return a; } return null; };
  const out = [];
  document.querySelectorAll('table').forEach(t => {
    const own = getComputedStyle(t).overflowX;
    const box = (own === 'auto' || own === 'scroll') ? t : scrolls(t);
    const edge = box ? box.getBoundingClientRect().right : t.getBoundingClientRect().right;
    if (edge > right + 1) out.push((t.querySelector('th') || t).textContent.trim().slice(0, 60));
  });
  return {page_overflow_px: Math.max(0, de.scrollWidth - de.clientWidth), overflowing_tables: out,
          tables: document.querySelectorAll('table').length};
}"""

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    raise CxrError("no Chromium found; install Debian's package: apt-get install chromium")


def check_page(html_path: str | Path, screenshot: str | Path | None = None, width: int = 1280,
               full_page: bool = False) -> dict:
    """Load the page offline; return {console_errors, page_errors, images, broken_images, title, failed_requests,
    tables, overflowing_tables (first header of each table wider than its box), page_overflow_px}."""
    from playwright.sync_api import sync_playwright

    url = Path(html_path).resolve().as_uri()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            console, errors, failed = [], [], []
            page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: failed.append(r.url[:100]))
            page.goto(url, wait_until="load")
            imgs = page.evaluate("() => Array.from(document.images).map(i => ({src: i.src.slice(0, 40), "
                                 "ok: i.complete && i.naturalWidth > 0}))")
            layout = page.evaluate(_OVERFLOW_JS)
            if screenshot:
                page.screenshot(path=str(screenshot), full_page=full_page)
            title = page.title()
        finally:
            browser.close()
    return {"console_errors": console, "page_errors": errors, "failed_requests": failed, "title": title,
            "images": len(imgs), "broken_images": [i["src"] for i in imgs if not i["ok"]], **layout}
