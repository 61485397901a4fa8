"""The book as a test: every chapter executes with papermill, then the book builds strictly.

Each chapter (a MyST notebook under book/ with a kernelspec) is executed once, with its default
parameters, into `_build/executed/book/<chapter>.ipynb`, the file `make book` builds from; the build
test then runs the Makefile's `html` target on those notebooks (`jupyter-book build -W -n
--keep-going`), which finds them fresh and executes nothing again. That build is the session fixture
`book_build` (conftest.py), which test_browser.py reads too: one build per session.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
EXECUTED = ROOT / "_build" / "executed" / "book"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def chapters() -> list[str]:
    """Chapter names: the book/*.md files that are notebooks (same rule as the Makefile)."""
    return sorted(
        p.stem for p in BOOK.glob("*.md") if any(line.startswith("kernelspec:") for line in p.read_text().splitlines())
    )


def test_there_are_chapters():
    assert "knowledge_neurons" in chapters()


def test_toc_lists_every_chapter():
    """A chapter notebook missing from _toc.yml would be executed but never built into the book."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    listed = {toc["root"]}

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                listed.add(entry["file"])
            walk(entry.get("sections"))
            for part in entry.get("parts", []):
                walk(part.get("chapters"))

    walk(toc.get("chapters"))
    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    missing = [c for c in chapters() if f"book/{c}" not in listed]
    assert not missing, f"add these chapters to _toc.yml: {', '.join(missing)}"


# The chapters run from a copy of the book placed where `../shared` (the data beside the repository
# on our machines and in CI) cannot be reached, as on a user's fresh clone: their defaults must run on
# what kn ships. The copy sits at _build/nodata/book, so its ../../shared is _build/shared.
NODATA = ROOT / "_build" / "nodata"


@pytest.fixture(scope="session")
def fresh_book() -> Path:
    """book/ (and the files chapters read beside it) copied to where no `../shared` exists."""
    import shutil

    shutil.rmtree(NODATA / "book", ignore_errors=True)
    shutil.copytree(BOOK, NODATA / "book", ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
    for name in ("_toc.yml", "_config.yml"):
        shutil.copy(ROOT / name, NODATA / name)
    assert not (NODATA / "book" / ".." / ".." / "shared").exists()
    return NODATA / "book"


def test_default_parameters_need_no_shared_data():
    """No chapter's default parameters point at ../shared (a user's clone has none)."""
    for chapter in chapters():
        source = jupytext.read(BOOK / f"{chapter}.md")
        (cell,) = [c for c in source.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        code = "\n".join(line.split("#", 1)[0] for line in cell.source.splitlines())  # comments aside
        assert "shared/" not in code and "shared\"" not in code, f"{chapter}: its parameters point at ../shared:\n{cell.source}"


def stderr_outputs(cells) -> list[str]:
    """Text a reader would see as warnings or stray stderr in the rendered chapter."""
    out = []
    for c in cells:
        for o in c.get("outputs", []):
            text = o.get("text", "") if o.get("output_type") == "stream" else ""
            if o.get("name") == "stderr" or "Warning:" in text or "warn(" in text:
                out.append(text[:500])
    return out


@pytest.mark.parametrize("chapter", chapters())
def test_chapter_executes(chapter, fresh_book):
    source = jupytext.read(BOOK / f"{chapter}.md")
    tagged = [c for c in source.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code", "a chapter needs one code cell tagged `parameters`"

    EXECUTED.mkdir(parents=True, exist_ok=True)
    src, partial, out = (EXECUTED / f"{chapter}{suffix}" for suffix in (".src.ipynb", ".failed.ipynb", ".ipynb"))
    out.unlink(missing_ok=True)
    nbformat.write(source, src)
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"  # the kernel runs this venv's python
    # Raises PapermillExecutionError (with the failing cell's traceback) if any cell fails;
    # the partly executed notebook stays at `partial` for reading.
    papermill.execute_notebook(
        str(src), str(partial), cwd=str(fresh_book), kernel_name="python3",
        progress_bar=False, execution_timeout=1800,
    )
    executed = nbformat.read(partial, as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "some code cells did not run"
    assert not any(o.get("output_type") == "error" for c in code for o in c.outputs)
    assert not stderr_outputs(code), f"{chapter}: warnings or stderr in its outputs: {stderr_outputs(code)}"
    partial.rename(out)
    src.unlink()


def test_book_builds_strictly(book_build):
    """The Makefile's `html` target on the executed chapters (the build is conftest.py's `book_build`,
    run once per session and shared with test_browser.py)."""
    if os.environ.get("KN_BOOK_HTML"):
        pytest.skip("KN_BOOK_HTML is set: the tests read that built book and build nothing")
    assert "executed book/" not in book_build.log, "the build executed a chapter again:\n" + book_build.log[-3000:]
    assert book_build.ok, book_build.problem
    assert (book_build.html / "index.html").exists()
    for chapter in chapters():
        assert (book_build.html / "book" / f"{chapter}.html").exists(), chapter


def test_every_page_shows_its_parameters_and_how_to_rerun_it(book_build):
    """kn.rerun's note on each chapter's page: every parameter with its value, and the make chapter command."""
    import html
    import re

    from kn import rerun

    if not book_build.ok:
        pytest.skip(f"no built book (see test_book_builds_strictly): {book_build.problem[:300]}")
    for chapter in chapters():
        page = book_build.html / "book" / f"{chapter}.html"
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
        assert "Parameters of this page, and how to rerun it with others" in text, chapter
        assert f"make chapter NAME={chapter} PARAMS='-f params.yaml'" in text, chapter
        source = jupytext.read(BOOK / f"{chapter}.md")
        (cell,) = [c for c in source.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        for p in rerun.parameters(cell.source):
            assert re.search(rf"^{re.escape(p.name)}: ", text, re.M), f"{chapter}: parameter {p.name} not shown"
