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
installs both; the `chromium` fixture of tests/conftest.py). On the explorer's page a reader without a
kernel picks recorded facts (`test_recorded_facts_explore_offline`): each pick must show that fact's
neurons and recorded effect, read here from book/results.
"""
from __future__ import annotations

import re
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
def reports(book_html, chromium) -> dict[str, PageReport]:
    """Opens every page once, offline, and reports what it saw (the tests below read the reports)."""
    from playwright.sync_api import sync_playwright

    executable = chromium  # tests/conftest.py: Debian's chromium, or a skip (CI: a failure) saying how to install it
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


# The static explorer of book/explore.md: recorded facts picked in the page, offline, no kernel.
RECORDED = ROOT / "book" / "results" / "likn"


def _recorded(model: str, language: str, fact_id: str) -> tuple[list[tuple[int, int]], dict]:
    """The fact's neurons and its facts.csv row, read straight from the recording."""
    import pandas as pd

    neurons = pd.read_csv(RECORDED / model / "neurons.csv")
    facts = pd.read_csv(RECORDED / model / "facts.csv")
    mine = neurons[(neurons.fact_id == fact_id) & (neurons.language == language)]
    (row,) = facts[(facts.fact_id == fact_id) & (facts.language == language)].to_dict("records")
    return sorted(zip(mine.layer.astype(int), mine["index"].astype(int))), row


def test_recorded_facts_explore_offline(book_html, chromium):
    page_path = book_html / "book" / "explore.html"
    if not page_path.exists():
        pytest.skip("no explorer chapter in this book")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
            page, remote, errors = context.new_page(), [], []
            page.route(lambda url: not url.startswith(LOCAL_SCHEMES), lambda route: (remote.append(route.request.url),
                                                                                      route.abort()))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_path.as_uri(), wait_until="load", timeout=TIMEOUT_MS)
            pick = page.locator(".kn-recorded-pick select")
            pick.wait_for(timeout=TIMEOUT_MS)
            labels = pick.locator("option").all_inner_texts()
            models = {label.split("\xa0")[0].split(" ")[0] for label in labels}
            languages = {label.replace("\xa0", " ").split(" · ")[1] for label in labels}
            assert len(labels) >= 4 and len(models) >= 2 and len(languages) >= 2, labels
            seen = set()
            for i in [0, len(labels) // 2, len(labels) - 1]:  # the first, one in the middle, the last
                pick.select_option(index=i)
                fact = page.locator(".kn-recorded-fact")
                page.wait_for_function("(want) => { const f = document.querySelector('.kn-recorded-fact');"
                                       " return f && f.textContent.includes(want); }",
                                       arg=labels[i].replace("\xa0", " ").split(" · ")[2].split(": ", 1)[1])
                model, language, fact_id = fact.get_attribute("data-fact").split("/", 2)
                seen.add((model, language, fact_id))
                neurons, row = _recorded(model, language, fact_id)
                shown = [tuple(map(int, p)) for p in re.findall(r"\((\d+), (\d+)\)",
                                                                page.locator(".kn-recorded-neurons").inner_text())]
                assert sorted(shown) == neurons, (model, language, fact_id)
                assert page.locator(".kn-recorded-cell").count() == len(neurons)  # one shaded cell per neuron
                effect = page.locator(".kn-recorded-effect").inner_text()
                assert f"{row['p_before']:.4g}" in effect and f"{row['p_suppressed']:.4g}" in effect, effect
                assert f"{row['suppression']:+.1%}" in effect, effect
            assert len(seen) == 3, seen
            assert not remote and not errors, (remote, errors)
        finally:
            browser.close()
