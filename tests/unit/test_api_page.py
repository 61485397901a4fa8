"""kn.api_page on a module built in the test."""
from __future__ import annotations

import types

from kn.api_page import entry, public, sections


def _module():
    mod = types.ModuleType("fake_mod", "The first paragraph.\n\nThe second one.")

    def f(x: int, y: str = "a") -> int:
        """Adds.

        More."""
        return x

    class C:
        """A class."""

        def go(self, n):
            """Goes somewhere.

            Far."""

        @property
        def size(self):
            return 1

        def _hidden(self):
            pass

    f.__module__ = C.__module__ = "fake_mod"
    mod.f, mod.C, mod._g, mod.os = f, C, f, types
    return mod


def test_public_names_and_entries():
    mod = _module()
    assert [n for n, _ in public(mod)] == ["f", "C"]  # _g private, a module left out
    mod.__all__ = ["C"]
    assert [n for n, _ in public(mod)] == ["C"]
    e = entry("fake_mod.f", mod.f)
    assert e.startswith("### `fake_mod.f`") and "def f(x: 'int', y: 'str' = 'a') -> 'int'" in e and "Adds.\n\nMore." in e
    c = entry("fake_mod.C", mod.C)
    assert "class C()" in c and "- `go(self, n)`: Goes somewhere." in c and "- `size (property)`" in c
    assert "_hidden" not in c


def test_sections_name_each_module_and_a_missing_one():
    (name, parts), (missing, why) = sections(["kn.screening", "kn_no_such_module"])
    assert name == "kn.screening" and parts[0].startswith("## `kn.screening`") and len(parts) >= 2
    assert any(p.startswith("### `kn.screening.top_layers`") for p in parts[1:])
    assert missing == "kn_no_such_module" and "not importable here" in why[0]
