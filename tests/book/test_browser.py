"""The built book in a real browser: every page opened from file:// in headless Chromium, offline.

Reads the build of conftest.py's `book_build` (the one test_book.py checks; no second build) and
opens each page of `_build/html` with Playwright driving Debian's Chromium (/usr/bin/chromium,
never a browser that Playwright downloads). Every request that is not a local file is aborted and
counted, so a page that needs a CDN fails here. Each page is checked for: no console error or
uncaught exception, no failed request and no request to a non-file URL, every <img> loaded, its
formulas typeset by MathJax (an mjx-container per math element, no MathJax error, no raw TeX
delimiters left in the text), its embedded ipywidgets rendered. A full-page screenshot of each
page goes to `_build/screenshots/` (beside the html directory).

Missing Playwright or Chromium skips, saying how to install them (CI=true: fails, since .ci/run
installs both).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
# The chapter with the ipywidgets fact explorer: where it exists, its page must hold widgets.
WIDGET_CHAPTERS = ["explore"]
TIMEOUT_MS = 60_000


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _missing(what: str) -> None:
    if _in_ci():
        pytest.fail(what)
    pytest.skip(what)


def chromium_path() -> str:
    path = os.environ.get("KN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        _missing("Chromium not found (Debian: `apt-get install -y chromium`; or set KN_CHROMIUM=/path/to/chromium)")
    return path


@dataclass
class PageReport:
    url: str
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    remote_requests: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    math: dict = field(default_factory=dict)
    widgets: dict = field(default_factory=dict)
    screenshot: Path | None = None


def pages(html: Path) -> list[Path]:
    """Every page of the book: the .html files outside _static/ (which holds theme templates) and _sources/."""
    return sorted(
        p for p in html.rglob("*.html")
        if not {"_static", "_sources", "_images"} & set(p.relative_to(html).parts[:-1])
    )


# Runs in the page once it has loaded: waits for MathJax and the widget manager, then reads the page.
INSPECT = """
async () => {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  const views = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
  const rendered = () => views.filter((v) => {
    const area = v.previousElementSibling;
    const w = area && area.querySelector('.jupyter-widgets');
    return w && w.getBoundingClientRect().width > 0 && w.getBoundingClientRect().height > 0;
  }).length;
  for (let i = 0; i < 200 && rendered() < views.length; i++) await sleep(100);
  for (const img of document.images) {
    img.loading = 'eager';
    if (!img.complete) await Promise.race([new Promise((r) => { img.onload = img.onerror = r; }), sleep(10000)]);
  }
  await document.fonts.ready;
  const mathEls = [...document.querySelectorAll('.math')];
  const main = document.querySelector('main') || document.body;
  const prose = main.cloneNode(true);
  prose.querySelectorAll('pre, code, script, style, mjx-container, .highlight, textarea').forEach((e) => e.remove());
  const text = prose.textContent;
  return {
    images: [...document.images].filter((i) => !(i.complete && i.naturalWidth > 0)).map((i) => i.currentSrc || i.src),
    math: {
      elements: mathEls.length,
      typeset: mathEls.filter((e) => e.querySelector('mjx-container') || e.tagName === 'MJX-CONTAINER').length,
      containers: document.querySelectorAll('mjx-container').length,
      errors: [...document.querySelectorAll('mjx-merror')].map((e) => e.getAttribute('data-mjx-error') || e.textContent),
      raw: ['$$', '\\\\(', '\\\\[', '\\\\begin{'].filter((d) => text.includes(d)),
      mathjax: !!(window.MathJax && MathJax.version),
    },
    widgets: {
      views: views.length,
      rendered: rendered(),
      state: !!document.querySelector('script[type="application/vnd.jupyter.widget-state+json"]'),
      elements: document.querySelectorAll('.jupyter-widgets, [class*="widget-"]').length,
    },
  };
}
"""


@pytest.fixture(scope="module")
def book_html(book_build) -> Path:
    if not book_build.ok:
        pytest.skip(f"no built book to open (see test_book_builds_strictly): {book_build.problem[:300]}")
    return book_build.html


@pytest.fixture(scope="module")
def reports(book_html) -> dict[str, PageReport]:
    """Opens every page once, offline, and reports what it saw (the tests below read the reports)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright for Python not installed (`pip install playwright`, in the project's test extra; "
                 "never `playwright install`: the tests use Debian's chromium)")
    executable = chromium_path()
    shots = book_html.parent / "screenshots"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    out: dict[str, PageReport] = {}
    with sync_playwright() as pw, tempfile.TemporaryDirectory(prefix="kn-chromium-") as profile:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900}, offline=True,
        )
        try:
            for path in pages(book_html):
                name = path.relative_to(book_html).as_posix()
                report = out[name] = PageReport(path.as_uri())
                page = context.new_page()

                def on_request(request, report=report):
                    if not request.url.startswith(LOCAL_SCHEMES):
                        report.remote_requests.append(request.url)

                page.route(lambda url: not url.startswith(LOCAL_SCHEMES), lambda route: route.abort())
                page.on("request", on_request)
                page.on("requestfailed", lambda r, report=report: report.failed_requests.append(
                    f"{r.url} ({r.failure})"))
                page.on("console", lambda m, report=report: m.type == "error" and report.console_errors.append(
                    f"{m.text} [{m.location.get('url', '')}:{m.location.get('lineNumber', '')}]"))
                page.on("pageerror", lambda e, report=report: report.console_errors.append(f"uncaught: {e}"))
                page.goto(report.url, wait_until="load", timeout=TIMEOUT_MS)
                if 'http-equiv="refresh"' in path.read_text(errors="replace")[:2000].lower():
                    # a redirect stub (index.html -> the root chapter): inspect where it lands
                    page.wait_for_url(lambda url, start=report.url: url != start, timeout=TIMEOUT_MS)
                    page.wait_for_load_state("load")
                    report.url = page.url
                seen = page.evaluate(INSPECT)
                report.broken_images, report.math, report.widgets = seen["images"], seen["math"], seen["widgets"]
                report.screenshot = shots / (name.removesuffix(".html").replace("/", "__") + ".png")
                page.screenshot(path=str(report.screenshot), full_page=True)
                page.close()
        finally:
            context.close()
    return out


def _problems(reports: dict[str, PageReport], attr: str) -> str:
    """The pages whose `attr` list is not empty, one finding a line ("" if none)."""
    return "\n".join(f"{name}: {item}" for name, r in reports.items() for item in getattr(r, attr))


def test_there_are_pages(reports, book_html):
    assert "index.html" in reports
    assert any(name.startswith("book/") for name in reports), sorted(reports)


def test_no_console_errors(reports):
    problems = _problems(reports, "console_errors")
    assert not problems, "console errors:\n" + problems


def test_no_request_leaves_the_machine(reports):
    """Everything a page loads (scripts, styles, fonts, images) comes from the built book itself."""
    problems = _problems(reports, "remote_requests")
    assert not problems, "requests to non-file URLs (aborted):\n" + problems


def test_no_failed_requests(reports):
    problems = _problems(reports, "failed_requests")
    assert not problems, "failed requests:\n" + problems


def test_images_load(reports):
    problems = _problems(reports, "broken_images")
    assert not problems, "images that did not load:\n" + problems


def test_math_is_typeset(reports):
    bad = {}
    for name, r in reports.items():
        m = r.math
        if m["elements"] and (not m["mathjax"] or m["typeset"] < m["elements"] or m["errors"]):
            bad[name] = m
        elif m["raw"]:
            bad[name] = m
    assert not bad, "math not typeset:\n" + "\n".join(f"{name}: {m}" for name, m in bad.items())
    assert any(r.math["containers"] for r in reports.values()), "no page holds typeset math"


def test_widgets_render(reports, book_html):
    bad = {name: r.widgets for name, r in reports.items() if r.widgets["rendered"] < r.widgets["views"]}
    assert not bad, "widgets not rendered:\n" + "\n".join(f"{name}: {w}" for name, w in bad.items())
    for chapter in WIDGET_CHAPTERS:
        name = f"book/{chapter}.html"
        if (ROOT / "book" / f"{chapter}.md").exists() and (book_html / name).exists():
            assert reports[name].widgets["views"] > 0, f"{name}: the widget chapter shows no widget (no saved widget state?)"


def test_screenshots_saved(reports):
    for name, r in reports.items():
        assert r.screenshot and r.screenshot.stat().st_size > 1000, name
