"""Phase "statements" (Chen et al. 2024, fact-checking): per fact of a relation's plan, its true and
wrong-object statements scored on the relation's DKN, all-KN and random neuron sets
(`kn.statements`); `kn.factcheck.decisions` / `evaluate` turn the table into detectors and metrics.

The plan of a relation (its seeded train/test split and neuron sets) comes from the "degenerate"
records of its facts, all made before this phase reaches the relation; it is rebuilt from the journal
wherever it is needed, so a resumed run or a Ray worker scores on the same plan.

Record: ``statement`` = {fact_id, relation, split, rows (per statement: kind, object, split, p, rank,
dkn, kn_mean, random)}, or {fact_id, relation, error}. Own table: ``statements``, a row per
(fact, statement) (`kn.statements.COLUMNS`).
"""
from __future__ import annotations


from ...data.templates import object_of
from ...statements import FactCheck, plan_relation, score_fact, table, wrong_object
from ..state import State
from .base import Phase, record
from .degenerate import Degenerate, _pairs
from .locate import answers_of, knowledge_neurons, located
from .setting import phase_settings, at_least, fraction, setting



@phase_settings
class StatementsSettings:
    """How fact-checking statements are made and scored (Chen et al. 2024)."""

    fc_test: float = setting(0.2, "the share of each relation's facts held out for test", check=fraction)
    fc_ratio: float = setting(0.7, "the DKN rule: neurons in more pairs than ratio x the most frequent one",
                              check=fraction)
    fc_prompts: int = setting(1, "how many of a fact's prompts a statement averages over (the paper: one)",
                              check=at_least(1))
    fc_random: int = setting(10, "random neuron sets of the DKN set's size drawn per relation", check=at_least(0))



class Statements(Phase):
    name = "statements"
    Settings = StatementsSettings
    fact_record = "statement"
    needs = ("locate", "degenerate")
    fact_columns = ("statement_split",)
    table_names = ("statements",)

    def start(self, lm, facts) -> None:
        self.distractors = {(f.fact_id, lang): tuple(f.distractors.get(lang, ())) for f in facts
                            for lang in self.run.languages}
        self.n_layers, self.width = lm.n_layers, lm.width
        self._plans: dict = {}

    def check(self) -> FactCheck:
        s = self.settings
        return FactCheck(test=s.fc_test, seed=self.run.seed, ratio=s.fc_ratio, prompts=s.fc_prompts,
                         n_random=s.fc_random)

    def plan(self, relation: str, state: State):
        """The relation's plan (None for fewer than two measured facts), from its degenerate records."""
        key = (relation, state.language)
        if key not in self._plans:
            recs = [r for r in state.all(Degenerate.fact_record).values()
                    if r["relation"] == relation and "fact_pairs" in r]
            pairs = {r["fact_id"]: _pairs(r["fact_pairs"]) for r in recs}
            neurons = {f: knowledge_neurons(state, f, relation) or [] for f in pairs}
            self._plans[key] = (plan_relation(relation, pairs, neurons, self.check(), n_layers=self.n_layers,
                                                   width=self.width) if len(pairs) >= 2 else None)
        return self._plans[key]

    def wants(self, fact_id: str, state: State) -> bool:
        loc = located(state, fact_id)
        deg = state.get(Degenerate.fact_record, fact_id)
        if loc is None or deg is None or "fact_pairs" not in deg:
            return False
        p = self.plan(loc["relation"], state)
        return p is not None and fact_id in p.train + p.test

    def run_fact(self, lm, fact, state: State) -> dict:
        loc = located(state, fact.fact_id)
        p = self.plan(loc["relation"], state)
        part = "train" if fact.fact_id in p.train else "test"

        def rows() -> dict:
            objects = {f: object_of(answers_of(located(state, f))[0]) for f in p.train + p.test}
            given = self.distractors.get((fact.fact_id, state.language), ())
            wrong = wrong_object(fact.fact_id, p, objects, given, self.run.seed)
            queries = list(zip(loc["prompts"], answers_of(loc)))[: self.settings.fc_prompts]
            return {"rows": score_fact(lm, queries, p, part, wrong, self.run.attribution)}
        return self.attempt(record(self.fact_record, fact_id=fact.fact_id, relation=loc["relation"], split=part), rows)

    def fact_row(self, fact_id: str, state: State) -> dict:
        r = state.get(self.fact_record, fact_id)
        return {"statement_split": r["split"] if r else None}

    def tables(self, state: State) -> dict:
        return {"statements": table([r for r in state.all(self.fact_record).values() if "rows" in r])}
