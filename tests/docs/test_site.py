"""The documentation site builds in strict mode (a broken link, anchor or API reference fails) and works offline."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import cxrdistill

ROOT = Path(__file__).resolve().parents[2]


def _nav_pages(nav) -> list[str]:
    out = []
    for item in nav:
        for v in (item.values() if isinstance(item, dict) else [item]):
            out += _nav_pages(v) if isinstance(v, list) else [v]
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(out)], cwd=ROOT,
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def test_every_page_is_in_the_nav_and_built(site):
    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = _nav_pages(cfg["nav"])
    pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*")
             if p.suffix in (".md", ".ipynb") and "readme" not in p.parts}
    assert pages == set(nav), (pages - set(nav), set(nav) - pages)
    for page in nav:
        assert (site / Path(page).with_suffix(".html")).is_file(), page


def test_api_reference_documents_every_public_function(site):
    html = (site / "api.html").read_text(encoding="utf-8")
    for name in cxrdistill.__all__:
        if name != "__version__":
            assert f'id="cxrdistill.api.{name}"' in html, name
    assert "Parameters" in html and "Returns" in html and "Raises" in html


def test_pages_load_nothing_from_the_network(site):
    """No fonts, scripts, styles or images from another host: the site browses offline."""
    remote = re.compile(r'<(?:script|img|iframe)[^>]*\ssrc="(?:https?:)?//|<link[^>]*rel="(?:stylesheet|preconnect|'
                        r'icon)"[^>]*href="(?:https?:)?//|<link[^>]*href="(?:https?:)?//[^"]*"[^>]*rel="stylesheet"|'
                        r'@import\s+url\(["\']?(?:https?:)?//')
    pages = list(site.rglob("*.html"))
    assert len(pages) > 20
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert not remote.search(text), (page.name, remote.search(text).group(0))
        assert "fonts.googleapis" not in text and "fonts.gstatic" not in text, page.name
    assert (site / "search" / "search_index.json").is_file()  # search runs in the browser, from this file


def test_readme_links_into_the_docs_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(((?!https?:)[^)#\s]+)(?:#[^)]*)?\)", text)
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        assert (ROOT / link).exists(), link


def test_site_browses_and_searches_offline_in_chromium(site):
    """Opened from file:// in headless Chromium with every non-file request refused: pages render without errors and
    search finds a phrase."""
    from playwright.sync_api import sync_playwright

    from cxrdistill.report.browser import CHROMIUM_ARGS, find_chromium

    remote, problems = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file://")
                       else (remote.append(r.request.url), r.abort()))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            for name in ("api.html", "notebooks/audit_predictions.html", "index.html"):
                page.goto((site / name).as_uri(), wait_until="load")
            page.wait_for_selector(".md-search__input", state="attached")
            page.keyboard.press("/")
            page.keyboard.type("embedding store")
            page.wait_for_selector(".md-search-result__item", timeout=20_000)
            hits = page.inner_text(".md-search-result__meta")
        finally:
            browser.close()
    assert remote == [] and problems == []
    assert re.search(r"\d+ matching document", hits), hits


def test_readme_is_a_short_entry_point():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    for must in ("make demo", "make test", "runs/demo/report.html", ".venv/bin/cxrdistill", "source .venv/bin/activate",
                 "minutes", "docs/img/report.png", "make docs"):
        assert must in text, must
    shot = ROOT / "docs" / "img" / "report.png"
    assert 10_000 < shot.stat().st_size < 300_000
    assert "Known issues" not in text
