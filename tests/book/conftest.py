"""The one strict book build that test_book.py and test_browser.py share.

`book_build` runs the Makefile's `html` target once per session, on the chapters that
test_chapter_executes left in `_build/executed/book/` (test_book.py runs first: its name sorts
before test_browser.py), and hands its outcome to every test that asks for it. With
`KN_BOOK_HTML=<dir>` set, nothing is built: the tests read the HTML already in that directory
(e.g. `KN_BOOK_HTML=_build/html pytest tests/book -k browser` after a `make book`).
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
EXECUTED = ROOT / "_build" / "executed" / "book"
BIN = Path(sys.executable).parent


def chapters() -> list[str]:
    """Chapter names: the book/*.md files that are notebooks (same rule as the Makefile)."""
    return sorted(
        p.stem for p in BOOK.glob("*.md") if any(line.startswith("kernelspec:") for line in p.read_text().splitlines())
    )


@dataclass
class BookBuild:
    html: Path          # the built book's root (index.html)
    ok: bool            # the build ran and exited 0 (or KN_BOOK_HTML pointed at a built book)
    problem: str = ""   # why not, with the log's tail
    log: str = ""


@pytest.fixture(scope="session")
def book_build() -> BookBuild:
    given = os.environ.get("KN_BOOK_HTML")
    if given:
        html = Path(given).resolve()
        ok = (html / "index.html").exists()
        return BookBuild(html, ok, "" if ok else f"KN_BOOK_HTML={given}: no index.html there")
    html = ROOT / "_build" / "html"
    missing = [c for c in chapters() if not (EXECUTED / f"{c}.ipynb").exists()]
    if missing:
        return BookBuild(html, False, f"chapters not executed (see test_chapter_executes): {', '.join(missing)}")
    result = subprocess.run(
        ["make", "--no-print-directory", "html", f"BIN={BIN}"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )
    log = result.stdout + result.stderr
    if result.returncode != 0:
        return BookBuild(html, False, "strict book build failed:\n" + log[-8000:], log)
    return BookBuild(html, True, "", log)
