"""The API reference page: a module's public names (its `__all__`, else the functions and classes it
defines) and each one's signature and docstring as markdown. The book's API chapter calls it on the
installed package, so the page cannot drift from the code."""
from __future__ import annotations

import importlib
import inspect


def public(mod) -> list[tuple[str, object]]:
    """[(name, object)] of `mod`'s public names: `__all__`, else the functions and classes defined in it
    (or its submodules) whose names do not start with "_"; modules left out."""
    names = getattr(mod, "__all__", None) or [n for n, v in vars(mod).items() if not n.startswith("_")
                                              and getattr(v, "__module__", "").startswith(mod.__name__)
                                              and (inspect.isfunction(v) or inspect.isclass(v))]
    return [(n, getattr(mod, n)) for n in names if not inspect.ismodule(getattr(mod, n))]


def entry(qual: str, obj) -> str:
    """Markdown of one name: a heading, its signature, its docstring; for a class also its public methods
    and properties, one line each (signature and the docstring's first line)."""
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        sig = ""
    kind = "class" if inspect.isclass(obj) else "def"
    doc = inspect.getdoc(obj) or "(no docstring)"
    md = f"### `{qual}`\n\n```python\n{kind} {qual.rsplit('.', 1)[-1]}{sig}\n```\n\n```text\n{doc}\n```\n"
    if inspect.isclass(obj):
        for n, m in vars(obj).items():
            if n.startswith("_") or not (inspect.isfunction(m) or isinstance(m, property)):
                continue
            mdoc = inspect.getdoc(m) or ""
            msig = str(inspect.signature(m)) if inspect.isfunction(m) else " (property)"
            md += f"\n- `{n}{msig}`" + (f": {mdoc.splitlines()[0]}" if mdoc else "")
        md += "\n"
    return md


def sections(names) -> list[tuple[str, list[str]]]:
    """[(module name, [markdown: the module's heading and first docstring paragraph, then an `entry` per
    public name])]; a module that cannot be imported (an optional extra) says so instead."""
    out = []
    for name in names:
        try:
            mod = importlib.import_module(name)
        except ImportError as err:
            out.append((name, [f"## `{name}`\n\nnot importable here: {err}"]))
            continue
        first = (inspect.getdoc(mod) or "").split("\n\n")[0]
        out.append((name, [f"## `{name}`\n\n{first}"] + [entry(f"{name}.{n}", obj) for n, obj in public(mod)]))
    return out
