"""The book as a test: every chapter executes with papermill, then the book builds strictly.

Each chapter (a MyST notebook under book/ with a kernelspec) is executed once, with its default
parameters, into `_build/executed/book/<chapter>.ipynb`, the file `make book` builds from; the build
test then runs the Makefile's `html` target on those notebooks (`jupyter-book build -W -n
--keep-going`), which finds them fresh and executes nothing again.
"""
from __future__ import annotations

import os
import subprocess
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


@pytest.mark.parametrize("chapter", chapters())
def test_chapter_executes(chapter):
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
        str(src), str(partial), cwd=str(BOOK), kernel_name="python3",
        progress_bar=False, execution_timeout=1800,
    )
    executed = nbformat.read(partial, as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), "some code cells did not run"
    assert not any(o.get("output_type") == "error" for c in code for o in c.outputs)
    partial.rename(out)
    src.unlink()


def test_book_builds_strictly():
    missing = [c for c in chapters() if not (EXECUTED / f"{c}.ipynb").exists()]
    if missing:
        pytest.fail(f"chapters not executed (see test_chapter_executes): {', '.join(missing)}")
    result = subprocess.run(
        ["make", "--no-print-directory", "html", f"BIN={BIN}"],
        cwd=ROOT, capture_output=True, text=True, timeout=1800,
    )
    log = result.stdout + result.stderr
    assert "executed book/" not in log, "the build executed a chapter again:\n" + log[-3000:]
    assert result.returncode == 0, "strict book build failed:\n" + log[-8000:]
    assert (ROOT / "_build" / "html" / "index.html").exists()
    for chapter in chapters():
        assert (ROOT / "_build" / "html" / "book" / f"{chapter}.html").exists(), chapter

