"""The phases a run can do, by name. A new phase is a `Phase` subclass in a module of its own,
registered here; `RunSettings.phases` chooses a run's phases."""
from __future__ import annotations

from typing import Sequence

from .base import Phase
from .degenerate import Degenerate
from .locate import Locate
from .verify import Verify

PHASES: dict[str, type[Phase]] = {p.name: p for p in (Locate, Verify, Degenerate)}


def check_phases(names: Sequence[str]) -> None:
    """Known names, no repeats, the first needing nothing, each after the phases it needs."""
    if not names:
        raise ValueError(f"phases must name at least one phase of {list(PHASES)}")
    for i, n in enumerate(names):
        if n not in PHASES:
            raise ValueError(f"unknown phase {n!r}; the phases are {list(PHASES)}")
        if n in names[:i]:
            raise ValueError(f"phase {n!r} is named twice in phases={list(names)}")
        missing = [m for m in PHASES[n].needs if m not in names[:i]]
        if missing:
            raise ValueError(f"phase {n!r} needs {missing} before it; got phases={list(names)}")


def make_phases(settings) -> list[Phase]:
    """The run's phases, in order, bound to its settings."""
    return [PHASES[n](settings) for n in settings.phases]


def record_keys(phases: Sequence[Phase]) -> dict[str, str]:
    """Journal record type -> the field that keys it, for the phases' records."""
    keys = {}
    for p in phases:
        if p.fact_record:
            keys[p.fact_record] = "fact_id"
        if p.relation_record:
            keys[p.relation_record] = "relation"
    return keys


def table_names() -> list[str]:
    """Every table a run of any phases may write (a fresh start removes them all)."""
    from ..tables import SHARED

    return [*SHARED, *(t for p in PHASES.values() for t in p.table_names)]


__all__ = ["PHASES", "Phase", "check_phases", "make_phases", "record_keys", "table_names"]
