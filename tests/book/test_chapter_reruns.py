"""Chapters rerun with other parameters through papermill follow them (another model, another language).

Each rerun executes a chapter from a copy of book/ (as on a fresh clone, where ../shared is out of
reach) with papermill's parameters, the way `make chapter NAME=... PARAMS=...` does, then checks that
what the chapter shows was computed with those parameters, and that the rerun note kn.rerun puts on
the page (see test_book.py) lists the values it ran with. Kept cheap: the explorer on the other
packaged model (about 20 s), the degenerate-neurons chapter in French at its small defaults (about 40 s).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest
import yaml

from kn import rerun

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def texts(nb, mime: str) -> str:
    return "\n".join(o.get("data", {}).get(mime, "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def check_explore(nb, tmp: Path) -> None:
    assert "FactExplorer(model='smollm2-135m'" in texts(nb, "text/plain")
    state = json.dumps(nb.metadata.get("widgets", {}))  # what the page's widget shows
    assert "smollm2-135m: next token after" in state and "gemma-3-270m: next token after" not in state


def check_degenerate(nb, tmp: Path) -> None:
    said = texts(nb, "text/markdown")
    assert "known to `gemma-3-270m` in `fr`" in said and "in `en`;" not in said, said[:500]
    runs = [p.name for p in (tmp / "runs").iterdir()]
    assert runs and all("-fr-" in name for name in runs), runs  # kn.runs.Keyed names the run by its language


RERUNS = {
    "explore": ({"model": "smollm2-135m"}, check_explore),
    "degenerate": ({"language": "fr"}, check_degenerate),
}


@pytest.mark.parametrize("chapter", RERUNS)
def test_a_chapter_rerun_with_other_parameters_follows_them(chapter, tmp_path):
    params, check = RERUNS[chapter]
    params = {**params, **({"out": str(tmp_path / "runs")} if chapter == "degenerate" else {})}
    book = tmp_path / "copy" / "book"
    shutil.copytree(ROOT / "book", book, ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
    src, out = tmp_path / f"{chapter}.src.ipynb", tmp_path / f"{chapter}.ipynb"
    nbformat.write(jupytext.read(ROOT / "book" / f"{chapter}.md"), src)
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"  # the kernel runs this venv's python
    papermill.execute_notebook(str(src), str(out), parameters=params, cwd=str(book), kernel_name="python3",
                               progress_bar=False, execution_timeout=1800)
    nb = nbformat.read(out, as_version=4)
    assert nb.metadata.papermill.parameters == params
    check(nb, tmp_path)
    note = rerun.annotate(out)
    shown = yaml.safe_load(note.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert all(shown[k] == v for k, v in params.items()), shown
    assert f"make chapter NAME={chapter}" in note and ", ".join(params) + " given to papermill" in note
