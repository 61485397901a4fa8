"""Phases "crosslingual" and "crossedit" (Chen et al. 2024; `kn.crosslingual`): per fact of a run in
several languages, once every relation is located in every language.

- "crosslingual": each fact with knowledge neurons in at least two languages; its conditions (LIKN,
  A's neurons measured in B, A's and B's together) suppressed and amplified on the fact and on an
  unrelated fact (another relation, located in every language, seeded per fact). Record
  ``crosslingual`` = {fact_id, relation, rows}; own table ``crosslingual`` (`kn.crosslingual.COLUMNS`).
- "crossedit": each fact with language-independent neurons; the value-slot update to another fact's
  object of the same relation, through the LIKN and through each language's own neurons, measured in
  every language. Record ``crossedit`` = {fact_id, relation, new_fact, rows}; own table
  ``crosslingual_edits`` (`kn.crosslingual.EDIT_COLUMNS`).
"""
from __future__ import annotations

import logging

from ... import crosslingual as X
from ...data.templates import object_of
from ...editing import LAMBDA1, LAMBDA2
from ...interventions import AMPLIFY_FACTOR, SUPPRESS_FACTOR
from ...likn import fact_likn
from .base import Phase, record
from .locate import Locate, answers_of, located, neurons_by_language
from .setting import number, phase_settings, setting

log = logging.getLogger(__name__)


def left_out(view) -> tuple[int, int]:
    """(failed, not yet done): the (fact, language) units of the run's facts that were not located, and
    so are in none of the cross-lingual tables' rows for that language."""
    recs = {l: view.lang(l).all(Locate.fact_record) for l in view.languages}
    ids = set().union(*(r.keys() for r in recs.values())) if recs else set()
    failed = sum("error" in r[f] for r in recs.values() for f in ids if f in r)
    return failed, sum(f not in r for r in recs.values() for f in ids)


def _said(table, name: str, view, told: dict):
    """`table` with attrs["left_out"], the units it leaves out said once per count (a warning for failures)."""
    failed, missing = left_out(view)
    table.attrs["left_out"] = {"failed": failed, "not_done": missing}
    if (failed, missing) != told.get(name, (0, 0)):
        told[name] = (failed, missing)
        log.log(logging.WARNING if failed else logging.INFO,
                "%s: built without %d (fact, language) unit(s): %d failed to locate (the facts table's error column "
                "says why), %d not located yet", name, failed + missing, failed, missing)
    return table



class _EveryLanguage(Phase):
    """What both phases read: each language's knowledge neurons and queries of a fact."""

    every_language = True
    needs = ("locate",)

    def start(self, lm, facts) -> None:
        self.relation = {f.fact_id: f.relation for f in facts}
        self.ids = [f.fact_id for f in facts]
        self._everywhere: list[str] | None = None

    def per_language(self, fact_id: str, view) -> dict[str, set]:
        """{language: the fact's knowledge neurons} (empty where it has none)."""
        return neurons_by_language(view, fact_id, self.relation[fact_id])

    def located_everywhere(self, view) -> list[str]:
        """The facts located in every language (every relation is done when these phases run)."""
        if self._everywhere is None:
            self._everywhere = [f for f in self.ids if all(located(view.lang(l), f) for l in view.languages)]
        return self._everywhere

    @staticmethod
    def queries(view):
        def of(language: str, fact_id: str) -> list:
            rec = located(view.lang(language), fact_id)
            return list(zip(rec["prompts"], answers_of(rec)))
        return of


@phase_settings
class CrossLingualSettings:
    """How cross-lingual effects are measured (Chen et al. 2024)."""

    cross_suppress_factor: float = setting(SUPPRESS_FACTOR, "cross-lingual suppression multiplies the neurons by this",
                                           check=number)
    cross_amplify_factor: float = setting(AMPLIFY_FACTOR, "cross-lingual amplification multiplies the neurons by this",
                                          check=number)


class CrossLingual(_EveryLanguage):
    name = "crosslingual"
    Settings = CrossLingualSettings
    fact_record = "crosslingual"
    table_names = ("crosslingual",)

    @staticmethod
    def check_run(settings) -> None:
        """Its cost grows with the square of the languages (`kn.crosslingual.MAX_CONDITIONS`)."""
        X.check_languages(len(settings.languages))

    def wants(self, fact_id: str, view) -> bool:
        return sum(bool(v) for v in self.per_language(fact_id, view).values()) >= 2

    def run_fact(self, lm, fact, view) -> dict:
        s = X.CrossLingual(self.settings.cross_suppress_factor, self.settings.cross_amplify_factor, self.run.seed)

        def rows():
            u = X.unrelated_fact(fact.fact_id, self.located_everywhere(view), self.relation.get, self.run.seed)
            return {"rows": X.fact_effects(lm, fact.fact_id, self.per_language(fact.fact_id, view), view.languages,
                                           self.queries(view), u, s)}
        return self.attempt(record(self.fact_record, fact_id=fact.fact_id, relation=fact.relation), rows)

    def tables(self, view) -> dict:
        t = X.table([r for r in view.all(self.fact_record).values() if "rows" in r])
        return {"crosslingual": _said(t, "crosslingual", view, self.__dict__.setdefault("_told", {}))}


@phase_settings
class CrossEditSettings:
    """How facts are edited through language-independent neurons (value-slot update, Dai et al. 2022)."""

    edit_lambda1: float = setting(LAMBDA1, "the update removes lambda1 x the old object's embedding", check=number)
    edit_lambda2: float = setting(LAMBDA2, "the update adds lambda2 x the new object's embedding", check=number)


class CrossEdit(_EveryLanguage):
    name = "crossedit"
    Settings = CrossEditSettings
    fact_record = "crossedit"
    table_names = ("crosslingual_edits",)

    def wants(self, fact_id: str, view) -> bool:
        return bool(fact_likn(self.per_language(fact_id, view))) and fact_id in self.located_everywhere(view)

    def run_fact(self, lm, fact, view) -> dict:
        s = X.CrossLingualEdit(self.settings.edit_lambda1, self.settings.edit_lambda2, self.run.seed)
        queries = self.queries(view)

        def rows():
            objects = {f: [object_of(queries(l, f)[0][1]) for l in view.languages]
                       for f in self.located_everywhere(view)}
            new = X.new_fact(fact.fact_id, objects, self.relation.get, self.run.seed)
            if new is None:
                return {"new_fact": None, "rows": []}
            return {"new_fact": new, "rows": X.fact_edits(lm, fact.fact_id, self.per_language(fact.fact_id, view),
                                                          view.languages, queries, new, s)}
        return self.attempt(record(self.fact_record, fact_id=fact.fact_id, relation=fact.relation), rows)

    def tables(self, view) -> dict:
        t = X.edit_table([r for r in view.all(self.fact_record).values() if "rows" in r])
        return {"crosslingual_edits": _said(t, "crosslingual_edits", view, self.__dict__.setdefault("_told", {}))}
