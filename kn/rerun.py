"""Each chapter says how to rerun it: its parameters, as executed, and the command with others.

A chapter of the book is a notebook with one code cell tagged `parameters` (papermill's). `parameters`
reads that cell (each assignment's name, value as written and comment); `note` writes the Markdown
a chapter's page shows after it: the values the page was executed with (the cell's, or the ones
papermill injected, which it records in the notebook's metadata) as a YAML file, and the `make
chapter` command that reruns the chapter with that file edited, or with one value changed.
`annotate(notebook_path)` inserts the note into an executed notebook; the Makefile's `html` target runs
`python -m kn.rerun` on the staged chapters, so every page of the book shows one.
"""
from __future__ import annotations

import ast
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from . import checks

MARK = "kn-rerun"  # the note cell's tag: annotating twice replaces it
OTHER_MODEL = {"gemma-3-270m": "smollm2-135m", "smollm2-135m": "gemma-3-270m"}


@dataclass(frozen=True)
class Parameter:
    name: str
    value: str  # as written in the cell (Python source)
    help: str   # its comment, "" if none


def parameters(source: str) -> list[Parameter]:
    """The assignments of a parameters cell, in order, with the comment after each (and the comment
    lines that follow it, up to the next assignment)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise checks.ArgumentError(f"the parameters cell is not Python ({err}); fix the chapter's cell") from None
    lines, out = source.splitlines(), []
    assigns = [n for n in tree.body if isinstance(n, ast.Assign) and len(n.targets) == 1
               and isinstance(n.targets[0], ast.Name)]
    for k, node in enumerate(assigns):
        stop = assigns[k + 1].lineno - 1 if k + 1 < len(assigns) else len(lines)
        tail = lines[node.end_lineno - 1][node.value.end_col_offset:]
        comments = [tail.split("#", 1)[1].strip()] if "#" in tail else []
        comments += [l.strip()[1:].strip() for l in lines[node.end_lineno:stop] if l.strip().startswith("#")]
        out.append(Parameter(node.targets[0].id, ast.get_source_segment(source, node.value), " ".join(comments)))
    return out


def _yaml(value) -> str:
    """A value as YAML (JSON is YAML): what papermill's -f and -y read back as the same Python value."""
    return json.dumps(value, ensure_ascii=False)


def _value(p: Parameter):
    """The parameter's value; an expression that is not a literal stays its text (papermill passes text)."""
    try:
        return ast.literal_eval(p.value)
    except (ValueError, SyntaxError):
        return p.value


def note(chapter: str, params: list[Parameter], injected: dict | None = None) -> str:
    """The Markdown of the rerun note: the parameters as executed (`injected`: papermill's values, which
    replace the cell's) and the command that reruns the chapter with others."""
    injected = injected or {}
    current = {p.name: injected[p.name] if p.name in injected else _value(p) for p in params}
    rows = [f"{p.name}: {_yaml(current[p.name])}" + (f"  # {p.help}" if p.help else "") for p in params]
    if isinstance(current.get("model"), str) and current["model"] in OTHER_MODEL:
        one = f"-p model {OTHER_MODEL[current['model']]}"
    else:  # the first parameter whose value needs no quoting, as it is
        simple = [p.name for p in params if isinstance(current[p.name], (int, float, str))
                  and not isinstance(current[p.name], bool) and str(current[p.name]).replace(".", "").replace("-", "")
                  .replace("_", "").replace("/", "").isalnum()]
        one = f"-p {simple[0]} {current[simple[0]]}" if simple else ""
    how = (f"with these parameters ({', '.join(injected)} given to papermill, the others the chapter's defaults)"
           if injected else "with the chapter's default parameters")
    return "\n".join([
        ":::{admonition} Parameters of this page, and how to rerun it with others",
        ":class: tip",
        f"This page was executed {how}, shown as a YAML file. To rerun the chapter with others, save",
        "it (as `params.yaml`; paths are relative to `book/`), edit it, and run from the repository:",
        "",
        "```bash",
        f"make chapter NAME={chapter} PARAMS='-f params.yaml'",
        *([f"make chapter NAME={chapter} PARAMS='{one}'   # or change one value"] if one else []),
        "```",
        "",
        "```yaml",
        *rows,
        "```",
        "",
        "`make chapter` executes the chapter with papermill and rebuilds its page; `make clean` goes back "
        "to the defaults.",
        ":::",
    ])


def annotate(path: str | Path) -> str:
    """Inserts (or replaces) the rerun note after the parameters cell of the executed notebook at `path`;
    returns the note."""
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if MARK not in c.metadata.get("tags", [])]
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    where = [i for i, t in enumerate(tags) if "parameters" in t]
    if len(where) != 1:
        raise checks.ArgumentError(f"{path}: {len(where)} cells tagged `parameters`; a chapter has exactly one")
    at = where[0] + 1
    if at < len(nb.cells) and "injected-parameters" in tags[at]:
        at += 1
    injected = nb.metadata.get("papermill", {}).get("parameters") or {}
    text = note(path.stem, parameters(nb.cells[where[0]].source), injected)
    nb.cells.insert(at, nbformat.v4.new_markdown_cell(text, metadata={"tags": [MARK]}))
    nbformat.write(nb, path)
    return text


def main(argv: list[str] | None = None) -> int:
    """python -m kn.rerun NOTEBOOK.ipynb ...: annotate each executed chapter."""
    for name in argv if argv is not None else sys.argv[1:]:
        annotate(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
