"""A run's results: `RunResult` (its tidy tables, config and settings) and `load_run`."""
from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from ..data.templates import Continuation
from ..neuron import Neuron
from . import tables as T
from .config import legacy_keys, settings_of
from .directory import JOURNAL, read_config
from .journal import Journal
from .phases import make_phases, new_state
from .settings import RunSettings
from .state import with_legacy_keys



@dataclass
class RunResult:
    """A run's tidy tables (pandas DataFrames) and its config.

    facts: a row per fact; relations: a row per relation, with ratios of means over its verified
    facts; prompts: a row per (fact, prompt); neurons: a row per (fact, knowledge neuron); a phase's
    own tables by their names too (`res.tables` holds them all). The methods read a run the way the
    editing experiments need it, without naming columns.
    """

    out_dir: Path
    config: dict
    tables: dict = field(repr=False)

    def __getattr__(self, name: str):
        tables = self.__dict__.get("tables") or {}
        if name in tables:
            return tables[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or table {name!r} (tables: {list(tables)})")

    @cached_property
    def settings(self) -> RunSettings:
        return settings_of(self.config)

    @property
    def complete(self) -> bool:
        """Every fact of the config has a result and every relation has been verified."""
        return (len(self.facts) == self.config["data"]["n_facts"]
                and len(self.relations) == len(self.config["data"]["relations"]))

    def headline(self) -> dict:
        """Unweighted means over relations (the paper's headline numbers)."""
        rel = self.relations
        cols = [c for p in make_phases(self.settings) for c in p.headline]
        return {c: float(rel[c].mean()) if len(rel) else math.nan for c in cols}

    # -- facts and neurons, for the editing experiments ----------------------------------------
    def located_facts(self, relation: str | None = None) -> list[str]:
        """Facts whose knowledge neurons were located (no error locating them), in run order."""
        f = self.facts
        f = f[f.n_neurons.notna()]
        return list(f.fact_id if relation is None else f[f.relation == relation].fact_id)

    def error_free_facts(self, relation: str | None = None) -> list[str]:
        """Facts with an answer and no error in any phase, in run order."""
        f = self.facts
        f = f[f.error.isna() & f.answer.notna()]
        return list(f.fact_id if relation is None else f[f.relation == relation].fact_id)

    def fact_relation(self, fact_id: str) -> str:
        return self._fact_index[fact_id][0]

    def fact_answer(self, fact_id: str) -> str:
        return self._fact_index[fact_id][1]

    def fact_prompts(self, fact_id: str) -> list[str]:
        """The fact's prompts, in order ([] for a fact without any)."""
        return [p for p, _ in self._prompt_index.get(fact_id, [])]

    def relation_of(self) -> dict[str, str]:
        """{fact_id: relation} over the run's facts."""
        return dict(zip(self.facts.fact_id, self.facts.relation))

    def fact_queries(self, fact_id: str) -> list[tuple[str, Continuation]]:
        """The fact's (prompt, answer as it follows the prompt) pairs, in order: what the run asked."""
        return list(self._prompt_index.get(fact_id, []))

    def fact_neurons(self, fact_id: str) -> list[Neuron]:
        """The fact's knowledge neurons [(layer, index), ...] ([] if none were found)."""
        return list(self._neuron_index.get(fact_id, []))

    def relation_neuron_counts(self, relation: str) -> Counter:
        """{neuron: how many of the relation's located facts it is a knowledge neuron of}."""
        n = self.neurons
        n = n[n.relation == relation]
        return Counter(dict(zip(zip(n.layer.astype(int), n["index"].astype(int)), n.n_facts_sharing.astype(int))))

    @cached_property
    def _fact_index(self) -> dict[str, tuple[str, str]]:
        f = self.facts
        return {i: (r, a) for i, r, a in zip(f.fact_id, f.relation, f.answer)}

    @cached_property
    def _prompt_index(self) -> dict[str, list[tuple[str, Continuation]]]:
        out: dict[str, list[tuple[str, Continuation]]] = {}  # the prompts table's answers: Locate.prompt_row's
        for fid, prompt, a in zip(self.prompts.fact_id, self.prompts.prompt, self.prompts.answer):
            out.setdefault(fid, []).append((prompt, Continuation(a)))
        return out

    @cached_property
    def _neuron_index(self) -> dict[str, list[Neuron]]:
        out: dict[str, list[Neuron]] = {}
        n = self.neurons
        for fid, l, i in zip(n.fact_id, n.layer, n["index"]):
            out.setdefault(fid, []).append((int(l), int(i)))
        return out


def load_one(out_dir: str | os.PathLike) -> RunResult:
    """The tables of the single-language run in `out_dir`, rebuilt from its journal (any format)."""
    out = Path(out_dir)
    config = read_config(out)
    phases = make_phases(settings_of(config))
    state = new_state(phases, with_legacy_keys(Journal(out / JOURNAL).read(repair=False), legacy_keys(config)))
    return RunResult(out, config, T.build(state, phases))
