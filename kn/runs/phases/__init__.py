"""The phases a run can do, by name. A new phase is a `Phase` subclass in a module of its own with its
settings dataclass, registered once (`register`); `RunSettings.phases` chooses a run's phases, and its
settings, CLI flags, config.json entries and summary columns follow from the class."""
from __future__ import annotations

import dataclasses
from typing import Sequence

from .base import Phase
from .crosslingual import CrossEdit, CrossLingual
from .degeneracy import Degeneracy
from .degenerate import Degenerate
from .editing import Edit, Erase, Update
from .locate import Locate
from .query import Query
from .specificity import Specificity
from .statements import Statements
from .verify import Verify

PHASES: dict[str, type[Phase]] = {}
COMMON = ("phases", "languages", "attribution", "seed")  # RunSettings' own fields: no phase may reuse them


def register(cls: type[Phase]) -> type[Phase]:
    """Add a phase (usable as a class decorator). Its name must be new, its `Settings` a frozen
    dataclass whose field names no other phase (nor the run's common settings) uses."""
    if cls.name in PHASES:
        raise ValueError(f"a phase named {cls.name!r} is registered already ({PHASES[cls.name].__qualname__})")
    check_phase(cls)
    PHASES[cls.name] = cls
    return cls


def check_phase(cls: type[Phase]) -> None:
    """A phase class fit to run: frozen settings, field names its own."""
    params = getattr(cls.Settings, "__dataclass_params__", None)
    if params is None or not params.frozen:
        raise TypeError(f"phase {cls.name!r}: Settings must be a frozen dataclass, got {cls.Settings!r}")
    for f in dataclasses.fields(cls.Settings):
        if f.name in COMMON:
            raise ValueError(f"phase {cls.name!r}: setting {f.name!r} is one of the run's common settings {COMMON}")
        owner = owner_of(f.name)
        if owner is not None and owner is not cls and owner.name != cls.name:
            raise ValueError(f"phase {cls.name!r}: setting {f.name!r} is phase {owner.name!r}'s already; name it apart")


def owner_of(field: str) -> type[Phase] | None:
    """The registered phase whose settings have `field`."""
    return next((p for p in PHASES.values() if field in {f.name for f in dataclasses.fields(p.Settings)}), None)


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
    """The run's phases, in order, bound to its settings, with their record keys fixed."""
    out, keys = [], {}
    for n in settings.phases:
        p = PHASES[n](settings)
        p.bind({m: keys[m] for m in p.needs})
        keys[n] = p.relation_key
        out.append(p)
    return out


def record_keys(phases: Sequence[Phase]) -> dict[str, str]:
    """Journal record type -> the field that identifies it, for the phases' records."""
    keys = {}
    for p in phases:
        if p.fact_record:
            keys[p.fact_record] = "fact_id"
        if p.relation_record:
            keys[p.relation_record] = "relation"
        if p.group_record:
            keys[p.group_record] = "group"
    return keys


def record_versions(phases: Sequence[Phase]) -> dict[str, str]:
    """Journal record type -> the key its records must carry under the phases' settings."""
    return {t: k for p in phases for t, k in p.keys().items()}


def new_state(phases: Sequence[Phase], records=(), languages: Sequence[str] = ("en",)):
    """The `State` of the phases' valid records among `records`, in a run of `languages`."""
    from ..state import State

    return State(record_keys(phases), records, record_versions(phases), languages)


for _phase in (Locate, Verify, Degenerate, Degeneracy, Statements, CrossLingual, CrossEdit, Update, Erase, Edit,
               Query, Specificity):
    register(_phase)

__all__ = ["COMMON", "PHASES", "Phase", "check_phase", "check_phases", "make_phases", "new_state", "owner_of",
           "record_keys", "record_versions", "register"]
