"""The house's import picture, read from the source (ast, no import): every `import` of a kn module,
at module level or inside a function, is an edge; the graph has no cycle, and no module imports the
package root (`__version__` and the rest come from the leaf modules that define them)."""
from __future__ import annotations

import ast
from pathlib import Path

KN = Path(__file__).resolve().parents[2] / "kn"


def modules() -> dict[str, Path]:
    out = {}
    for p in KN.rglob("*.py"):
        parts = list(p.relative_to(KN.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def imported(mod: str, path: Path, node: ast.Import | ast.ImportFrom, known: dict) -> set[str]:
    """The kn modules an import statement of `mod` names (a name imported from a package counts as its
    submodule when there is one, else as the package)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        package = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        base = package[:len(package) - node.level + 1] if node.level else []
        where = ".".join(base + ([node.module] if node.module else []))
        names = [f"{where}.{a.name}" if f"{where}.{a.name}" in known else where for a in node.names]
    out = set()
    for n in names:
        while n not in known and "." in n:
            n = n.rsplit(".", 1)[0]
        if n in known and n != mod:
            out.add(n)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: set().union(*(imported(m, p, n, known) for n in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
                             if isinstance(n, (ast.Import, ast.ImportFrom))))
            for m, p in known.items()}


def cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `g` as a path of modules, or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(g[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (found := visit(t)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_finder_sees_a_planted_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_imports_inside_functions():
    g = graph()
    assert "kn.edits.tracing" in g["kn.edits.rome"]  # module level
    assert "kn.runs.sessions" in g["kn.recording"]  # inside record_run
    assert len(g) > 100


def test_no_import_cycle():
    found = cycle(graph())
    assert found is None, "import cycle: " + " -> ".join(found)


def test_no_module_imports_the_package_root():
    known = modules()
    planted = ast.parse("from .. import checks, load\nimport kn")
    got = set().union(*(imported("kn.edits.rome", known["kn.edits.rome"], n, known) for n in planted.body))
    assert got == {"kn.checks", "kn"}  # the finder sees a root import (`load` is no module: the root's)
    g = graph()
    assert sorted(m for m, targets in g.items() if "kn" in targets) == []
