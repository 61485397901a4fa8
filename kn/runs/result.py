"""A run's results: `RunResult` (its tidy tables, config and settings) and `load_run`."""
from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .. import likn
from ..data.templates import Continuation, continued
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

    facts: a row per (fact, language); relations: a row per (relation, language), with ratios of
    means over its verified facts; prompts: a row per (fact, language, prompt); neurons: a row per
    (fact, language, knowledge neuron); a phase's own tables by their names too (`res.tables` holds
    them all). A run in several languages: `runs` holds each language's view (`res.runs["zh"]`), and
    `sets`, `likn`, `overlap` read the language-independent neurons (`kn.likn`). The fact methods
    read one language's run the way the editing experiments need it, without naming columns.
    """

    out_dir: Path
    config: dict
    tables: dict = field(repr=False)
    language: str | None = None  # a view of one language of the run (`runs`)

    def __getattr__(self, name: str):
        tables = self.__dict__.get("tables") or {}
        if name in tables:
            return tables[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or table {name!r} (tables: {list(tables)})")

    @cached_property
    def settings(self) -> RunSettings:
        return settings_of(self.config)

    @property
    def languages(self) -> list[str]:
        """The run's languages (a view: its one)."""
        return [self.language] if self.language else list(self.settings.languages)

    @property
    def complete(self) -> bool:
        """Every (fact, language) of the config has a result and every relation has been done."""
        n = len(self.languages)
        return (len(self.facts) == self.config["data"]["n_facts"] * n
                and len(self.relations) == len(self.config["data"]["relations"]) * n)

    @cached_property
    def runs(self) -> dict:
        """{language: the run's view of that language} (tables filtered to it)."""
        return {l: RunResult(self.out_dir, self.config, {k: _one_language(df, l) for k, df in self.tables.items()}, l)
                for l in self.languages}

    def sets(self) -> dict[str, dict[str, list[Neuron]]]:
        """{language: {fact_id: knowledge neurons}} for the facts located in each language."""
        return {l: {fid: r.fact_neurons(fid) for fid in r.located_facts()} for l, r in self.runs.items()}

    def likn(self, q: int = 2):
        """(facts, neurons) tables of the language-independent neurons (`kn.likn.likn_tables`)."""
        return likn.likn_tables(self.sets(), self.relation_of(), q=q)

    def likn_by_layer(self, q: int = 2):
        return likn.by_layer(self.sets(), self.config["model"].get("n_layers"), q=q)

    def overlap(self):
        """(jaccard, facts) language x language tables (`kn.likn.overlap`)."""
        return likn.overlap(self.sets(), self.languages)

    def headline(self) -> dict:
        """Unweighted means over relations (the paper's headline numbers)."""
        rel = self.relations
        cols = [c for p in make_phases(self.settings) for c in p.headline]
        return {c: float(rel[c].mean()) if len(rel) else math.nan for c in cols}

    # -- facts and neurons, for the editing experiments ----------------------------------------
    def located_facts(self, relation: str | None = None) -> list[str]:
        """Facts whose knowledge neurons were located (no error locating them), in run order."""
        f = self._one().facts
        f = f[f.n_neurons.notna()]
        return list(f.fact_id if relation is None else f[f.relation == relation].fact_id)

    def error_free_facts(self, relation: str | None = None) -> list[str]:
        """Facts with an answer and no error in any phase, in run order."""
        f = self._one().facts
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
        n = self._one().neurons
        n = n[n.relation == relation]
        return Counter(dict(zip(zip(n.layer.astype(int), n["index"].astype(int)), n.n_facts_sharing.astype(int))))

    def _one(self) -> RunResult:
        """This run if it has one language; else a clear error (the fact methods read one language)."""
        if len(self.languages) > 1:
            raise ValueError(f"this run has several languages {self.languages}: read one, res.runs[language]")
        return self

    @cached_property
    def _fact_index(self) -> dict[str, tuple[str, str]]:
        f = self._one().facts
        return {i: (r, a) for i, r, a in zip(f.fact_id, f.relation, f.answer)}

    @cached_property
    def _prompt_index(self) -> dict[str, list[tuple[str, Continuation]]]:
        out: dict[str, list[tuple[str, Continuation]]] = {}  # the prompts table's answers: Locate.prompt_row's
        p, objects = self._one().prompts, self._fact_index
        for fid, prompt, a in zip(p.fact_id, p.prompt, p.answer):  # a sentence target's tail: what follows the object
            obj = objects.get(fid, (None, None))[1]
            out.setdefault(fid, []).append((prompt, continued(a, obj) if isinstance(obj, str) else Continuation(a)))
        return out

    @cached_property
    def _neuron_index(self) -> dict[str, list[Neuron]]:
        out: dict[str, list[Neuron]] = {}
        n = self._one().neurons
        for fid, l, i in zip(n.fact_id, n.layer, n["index"]):
            out.setdefault(fid, []).append((int(l), int(i)))
        return out


def _one_language(df, language: str):
    return df[df.language == language].reset_index(drop=True) if "language" in df.columns else df


def load_one(out_dir: str | os.PathLike) -> RunResult:
    """The tables of the run in `out_dir`, rebuilt from its journal (any format of kn.runs)."""
    out = Path(out_dir)
    config = read_config(out)
    settings = settings_of(config)
    phases = make_phases(settings)
    state = new_state(phases, with_legacy_keys(Journal(out / JOURNAL).read(repair=False), legacy_keys(config)),
                      settings.languages)
    return RunResult(out, config, T.build(state, phases))
