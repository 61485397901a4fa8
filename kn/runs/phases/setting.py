"""A phase's settings: one frozen dataclass per phase whose fields are made with `setting`, which
carries what every other place derives from the field: its help text (the CLI flag's help and the run
summary), its check (one clear error naming the setting), and its scope, which says what a change of
the value invalidates:

- "fact": the phase's per-fact records (and everything after them) are recomputed;
- "relation": only its per-relation records (e.g. the share tuning) are recomputed;
- "table": no record depends on it; the tables are rebuilt from the journal.

The CLI flag of field ``foo_bar`` is ``--foo-bar`` (``--no-foo-bar`` for a setting that is on by
default); `kn.run` takes it as the keyword ``foo_bar``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from dataclasses import dataclass, fields
from typing import Any, Callable

from ... import checks

SCOPES = ("fact", "relation", "table")


def setting(default: Any, help: str, *, check: Callable[[str, Any], Any] | None = None, scope: str = "fact",
            cli_type: Callable[[str], Any] | None = None, nargs: int | None = None, added: bool = False):
    """A settings field: its default, its help text, its check (name, value) -> value, its scope, and
    the CLI's parser of one word (default: from the default's type). added: a setting that came after
    runs were recorded, whose default does what those runs did: at its default it is left out of the
    record keys (`scoped`), so their records stay valid."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    meta = {"help": help, "check": check, "scope": scope, "cli_type": cli_type, "nargs": nargs, "added": added}
    return dataclasses.field(default=default, metadata=meta)


def phase_settings(cls):
    """Decorator of a phase's settings class: a frozen dataclass whose fields' checks run on construction."""
    cls.__post_init__ = check_fields
    return dataclass(frozen=True)(cls)


def check_fields(value) -> None:
    """Run each field's check on a frozen settings value, storing what it returns (e.g. a list as a tuple)."""
    for f in fields(value):
        check = f.metadata.get("check")
        if check is not None:
            object.__setattr__(value, f.name, check(f.name, getattr(value, f.name)))


def to_json(value) -> dict:
    """A settings value as JSON-safe {field: value} (tuples as lists)."""
    return {f.name: _json(getattr(value, f.name)) for f in fields(value)}


def _json(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def digest(obj: Any) -> str:
    """12 hex digits naming a JSON-safe object (canonical JSON, sorted keys)."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def scoped(value, scope: str) -> dict:
    """The fields of `value` whose scope is `scope`, JSON-safe (an `added` setting only when it is not at
    its default)."""
    return {f.name: _json(getattr(value, f.name)) for f in fields(value) if f.metadata.get("scope", "fact") == scope
            and not (f.metadata.get("added") and getattr(value, f.name) == f.default)}


@dataclass(frozen=True)
class NoSettings:
    """The settings of a phase that has none."""


# -- checks: (name, value) -> value, raising checks.ArgumentError that names the setting ----------
def fraction(name: str, v: Any) -> float:
    """A number in [0, 1]."""
    return checks.number(v, name, low=0.0, high=1.0)


def fraction_or_none(name: str, v: Any) -> float | None:
    return None if v is None else fraction(name, v)


def open_fraction(name: str, v: Any) -> float:
    """A number in (0, 1)."""
    x = checks.number(v, name)
    if not 0 < x < 1:
        raise checks.ArgumentError(f"{name} must be in (0, 1), got {v!r}")
    return x


def positive_fraction(name: str, v: Any) -> float:
    """A number in (0, 1]."""
    x = checks.number(v, name)
    if not 0 < x <= 1:
        raise checks.ArgumentError(f"{name} must be in (0, 1], got {v!r}")
    return x


def number(name: str, v: Any) -> float:
    return checks.number(v, name)


def non_negative(name: str, v: Any) -> float:
    """A number >= 0."""
    return checks.number(v, name, low=0.0)


def at_least(low: int) -> Callable[[str, Any], int]:
    """An int >= `low`."""
    def check(name: str, v: Any) -> int:
        return checks.integer(v, name, low=low)
    check.low = low
    return check


def boolean(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise checks.ArgumentError(f"{name} must be True or False, got {v!r}")
    return v


def low_high(name: str, v: Any) -> tuple[float, float]:
    """(low, high) with 0 <= low <= high."""
    try:
        low, high = (float(x) for x in v)
        ok = not isinstance(v, (str, bytes)) and math.isfinite(low) and math.isfinite(high) and 0 <= low <= high
        ok = ok and not any(isinstance(x, bool) or not isinstance(x, numbers.Real) for x in v)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise checks.ArgumentError(f"{name} must be (low, high) with 0 <= low <= high, got {v!r}")
    return (low, high)
