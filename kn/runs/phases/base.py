"""The unit of a run: a `Phase` does one kind of work per fact and/or per relation, journals one
record type for each, and adds its columns (and tables of its own) to the run's tidy tables. Its
settings are one frozen dataclass of its own (`Settings`, fields made with `setting.setting`): the
run's config.json, the CLI's flags and the run summary are derived from it.

Every record a phase journals carries a key (`fact_key`, `relation_key`): a digest of what the record
depends on, i.e. the run's common settings, the phase's settings of that scope and the keys of the
phases it needs. A record whose key is not the current one is ignored (and recomputed), so a result
is never older than its settings; the journal keeps it.

A run's phases run in order, relation by relation: for each phase, every fact it wants
(`run_fact`), then the relation (`run_relation`); a phase that reads other relations' records
(`after_all`) runs once every relation is done with the others; a phase's work over groups of facts from
several relations (`group_record`: `groups`, `run_group`) comes last. A phase may read the records of the phases it
`needs` (they come earlier). Tables: the facts table has a row per fact of the first phase's fact
records, the prompts table a row per prompt the first phase counts (`n_prompts`), the relations table
a row per relation with a relation record; each phase adds its columns to those rows, in phase order
(`follows` places a column right after another one), and `tables` returns its own tables.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from ...verification import ratio_of_means
from ..state import State
from .setting import NoSettings, digest, scoped

log = logging.getLogger(__name__)


class Phase:
    """Base class of the run phases (subclasses set the class attributes and override what they do)."""

    name: ClassVar[str]
    Settings: ClassVar[type] = NoSettings  # its frozen settings dataclass (fields made with `setting`)
    fact_record: ClassVar[str | None] = None  # journal record type of its per-fact records
    relation_record: ClassVar[str | None] = None  # ... of its per-relation records
    group_record: ClassVar[str | None] = None  # ... of its records over groups of facts (`groups`), keyed like relations'
    needs: ClassVar[tuple[str, ...]] = ()  # phases whose records it reads (they run before it)
    fact_columns: ClassVar[tuple[str, ...]] = ()  # columns it adds to the facts table
    prompt_columns: ClassVar[tuple[str, ...]] = ()  # ... to the prompts table
    relation_columns: ClassVar[tuple[str, ...]] = ()  # ... to the relations table
    follows: ClassVar[Mapping[str, str]] = {}  # column -> the column it comes right after
    dtypes: ClassVar[Mapping[str, str]] = {}  # facts-table column -> pandas dtype
    table_names: ClassVar[tuple[str, ...]] = ()  # its own tables (`tables`)
    headline: ClassVar[tuple[str, ...]] = ()  # relations-table columns `RunResult.headline` averages
    # a phase over each fact in every language (its records' language is `state.ALL`; it runs once every
    # relation is done with the phases before it, and sees every language's records: `state.lang(l)`)
    every_language: ClassVar[bool] = False
    # a phase that reads other relations' records (it runs, relation by relation, once every relation is
    # done with the phases before it; implied by `every_language`)
    after_all: ClassVar[bool] = False
    summary: ClassVar[tuple[tuple[str, str, str | None], ...]] = ()  # (relations column, header, format) the CLI prints

    fact_key: str = ""
    relation_key: str = ""

    def __init__(self, run):
        """`run`: the run's `kn.runs.RunSettings` (its common part and this phase's settings value)."""
        self.run = run
        self.settings = self.resolved(run.of(self.name), run)

    @classmethod
    def resolved(cls, settings, run):
        """`settings` with what its defaults leave open filled in from the run's common settings (the
        values the run uses and config.json records)."""
        return settings

    def measures(self) -> dict:
        """What its fact records hold beyond what they held when runs were first recorded, where that
        depends on the run (JSON-safe; part of the fact key when not empty, so a run whose records lack
        it recomputes them and every other run keeps its keys). Nothing by default."""
        return {}

    def bind(self, needed: Mapping[str, str]) -> None:
        """Fix the record keys, given the relation keys of the phases it needs."""
        parts = {"phase": self.name, "common": self.run.common(), "needs": dict(needed),
                 "settings": scoped(self.settings, "fact")}
        self.fact_key = digest(parts | ({"measures": self.measures()} if self.measures() else {}))
        self.relation_key = digest({"fact": self.fact_key, "settings": scoped(self.settings, "relation")})

    def keys(self) -> dict[str, str]:
        """{record type: the key its records must carry}."""
        out = {}
        if self.fact_record:
            out[self.fact_record] = self.fact_key
        if self.relation_record:
            out[self.relation_record] = self.relation_key
        if self.group_record:
            out[self.group_record] = self.relation_key
        return out

    # -- the work (a model at hand) ------------------------------------------------------------
    def start(self, lm, facts: Sequence) -> None:
        """Called once before the run's loop, with the run's facts."""

    def wants(self, fact_id: str, state: State) -> bool:
        """Whether the fact gets a record of this phase (once the phases it needs are done)."""
        return True

    def run_fact(self, lm, fact, state: State) -> dict:
        """The journal record of one fact (an `error` field rather than an exception)."""
        raise NotImplementedError

    def run_relation(self, lm, relation: str, facts: Sequence, state: State) -> dict:
        """The journal record of one relation, once all its facts have this phase's records."""
        raise NotImplementedError

    def groups(self, facts: Sequence, state: State) -> list[str]:
        """The ids of its groups (`group_record`), once every relation is done with every phase."""
        return []

    def run_group(self, lm, group: str, facts: Sequence, state: State) -> dict:
        """The journal record of one group (its field ``group`` = the id)."""
        raise NotImplementedError

    # -- the tables (journal records only) -----------------------------------------------------
    def fact_row(self, fact_id: str, state: State) -> dict:
        return {}

    def n_prompts(self, fact_id: str, state: State) -> int:
        """How many prompt rows the fact has (asked of the first phase only)."""
        return 0

    def prompt_row(self, fact_id: str, index: int, state: State) -> dict:
        return {}

    def relation_row(self, relation: str, facts, state: State) -> dict:
        """Its relations-table columns; `facts` is the relation's rows of the facts table."""
        return {}

    def tables(self, state: State) -> dict:
        """Its own tables {name: DataFrame} (names in `table_names`)."""
        return {}

    def attempt(self, out: dict, work) -> dict:
        """`out` (a record) with the fields `work()` returns, or with an ``error`` if it raises (logged:
        the run goes on), and the ``seconds`` it took."""
        t0 = time.perf_counter()
        try:
            out = {**out, **work()}
        except Exception as err:  # recorded in the record; the run goes on
            what = out.get("fact_id") or ", ".join(f"{k} {v}" for k, v in out.items() if k != "type")
            log.warning("%s of %s failed: %s: %s", self.name, what, type(err).__name__, err)
            out = {**out, "error": error_of(err)}
        return out | {"seconds": round(time.perf_counter() - t0, 3)}

    def error(self, fact_id: str, state: State) -> dict | None:
        """The {type, message} its record of the fact holds, if any."""
        rec = state.get(self.fact_record, fact_id)
        return rec.get("error") if rec else None


def record(kind: str, **fields: Any) -> dict:
    """A journal record: its type first (the line starts with it)."""
    return {"type": kind, **fields}


def error_of(err: BaseException) -> dict:
    return {"type": type(err).__name__, "message": str(err)}


def mean(x) -> float:
    """The mean, NaN for nothing."""
    return float(np.mean(x)) if x is not None and len(x) else math.nan


def ratio(before: Sequence[float], after: Sequence[float]) -> float:
    """The paper's relative change mean(after - before) / mean(before), NaN for nothing."""
    return ratio_of_means(before, after) if len(before) else math.nan
