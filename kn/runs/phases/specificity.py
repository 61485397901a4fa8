"""Phase "specificity" (`kn.specificity`): each verified fact's knowledge neurons with the common ones
dropped (Dai et al.'s filter, at each share of `common_shares`, in each scope of `common_scopes`),
zeroed on the fact's prompts and on the same control facts `verify` used. It reads every relation's
located sets, so it runs once every relation is done with the phases before it.

Record ``specificity`` = {fact_id, relation, rows: [{scope, share (None: the raw set), neurons,
fact / other / same = {before, suppressed} (P(gold) per prompt; other / same may be null)}]}, or
{fact_id, relation, error}. Own table ``specificity``, a row per (fact, condition).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from ... import checks
from ...degenerate import suppressed_probs
from ...specificity import SCOPES, Commonness, change, commonness, filtered
from ..state import State
from .base import Phase, record
from .controls import Controls
from .locate import Locate, answers_of, knowledge_neurons, located
from .setting import phase_settings, setting

COLUMNS = ["fact_id", "relation", "scope", "share", "k", "fact_change", "other_change", "same_change"]
GROUPS = ("fact", "other", "same")


def shares(name: str, v: Any) -> tuple[float, ...]:
    """A non-empty sequence of numbers in (0, 1]."""
    if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__") or not len(v := tuple(v)):
        raise checks.ArgumentError(f"{name} must be one or more shares in (0, 1], e.g. (0.3, 0.1); got {v!r}")
    out = tuple(checks.number(x, name) for x in v)
    bad = [x for x in out if not 0 < x <= 1]
    if bad:
        raise checks.ArgumentError(f"{name} must be shares in (0, 1]; got {bad}")
    return out


def scopes(name: str, v: Any) -> tuple[str, ...]:
    out = (v,) if isinstance(v, str) else tuple(v)
    bad = [x for x in out if x not in SCOPES]
    if not out or bad:
        raise checks.ArgumentError(f"{name} must be one or more of {SCOPES}; got {v!r}")
    return out


@phase_settings
class SpecificitySettings:
    """Which common neurons are dropped before the sets are zeroed again (Dai et al.'s filter)."""

    common_shares: tuple = setting((0.5, 0.3, 0.2, 0.1, 0.05), "specificity: drop the neurons that are knowledge "
                                   "neurons of more than this share of the scope's facts (one condition per share)",
                                   check=shares, cli_type=float, nargs="+")
    common_scopes: tuple = setting(SCOPES, "specificity: where a neuron's share is counted: its relation's facts "
                                           "(Dai et al.'s filter) and/or all the run's facts",
                                   check=scopes, cli_type=str, nargs="+")


class Specificity(Phase):
    name = "specificity"
    Settings = SpecificitySettings
    fact_record = "specificity"
    needs = ("locate", "verify")
    after_all = True
    table_names = ("specificity",)

    def start(self, lm, facts: Sequence) -> None:
        self._lm, self._facts, self._controls = lm, facts, {}

    def wants(self, fact_id: str, state: State) -> bool:
        v = state.get("verify", fact_id)
        return v is not None and "fact" in v

    def run_fact(self, lm, fact, state: State) -> dict:
        loc = located(state, fact.fact_id)
        rel = loc["relation"]
        verified = state.get("verify", fact.fact_id)

        def measure() -> dict:
            raw = knowledge_neurons(state, fact.fact_id, rel)
            common = self._commonness(state)
            conds = [(None, None, raw)] + [(sc, sh, filtered(raw, rel, common, sc, sh))
                                           for sc in self.settings.common_scopes for sh in self.settings.common_shares]
            unique = list(dict.fromkeys(frozenset(c[2]) for c in conds))
            row_of = {s: i for i, s in enumerate(unique)}
            probs = {g: self._probs(lm, queries, unique) for g, queries in self._queries(loc, verified, state).items()}
            rows = []
            for scope, share, kns in conds:
                r = row_of[frozenset(kns)]
                rows.append({"scope": scope, "share": share, "neurons": [list(n) for n in kns],
                             **{g: p and {"before": p[0], "suppressed": p[1][r]} for g, p in probs.items()}})
            return {"rows": rows}
        return self.attempt(record(self.fact_record, fact_id=fact.fact_id, relation=rel), measure)

    def _queries(self, loc: dict, verified: dict, state: State) -> dict:
        """{group: (prompts, answers) or None}: the fact's own and the control facts `verify` used."""
        out = {"fact": (loc["prompts"], answers_of(loc)), "other": None, "same": None}
        if verified.get("other"):
            if state.language not in self._controls:
                self._controls[state.language] = Controls(self._lm, self._facts, state.language, self.run.seed,
                                                                  sentence=self.run.of("locate").sentence)
            out["other"] = self._controls[state.language].prompts(verified["other"]["fact_id"])
        if verified.get("same"):
            s = located(state, verified["same"]["fact_id"])
            out["same"] = (s["prompts"], answers_of(s)) if s else None
        return out

    @staticmethod
    def _probs(lm, queries, sets: list[frozenset]):
        """(P(gold) per prompt before, [per set: P(gold) per prompt with the set zeroed]), or None."""
        if queries is None:
            return None
        per_prompt = [suppressed_probs(lm, p, a, [[], *sets]) for p, a in zip(*queries)]
        return [float(x[0]) for x in per_prompt], [[float(x[1 + i]) for x in per_prompt] for i in range(len(sets))]

    def _commonness(self, state: State) -> Commonness:
        """How common each neuron is among the run's located facts (every relation is done)."""
        kns, relation_of = {}, {}
        for relation, rec in state.all(Locate.relation_record).items():
            for fid, ns in (rec.get("neurons") or {}).items():
                kns[fid], relation_of[fid] = [tuple(n) for n in ns], relation
        return commonness(kns, relation_of)

    def tables(self, state: State) -> dict:
        import pandas as pd

        rows = []
        for fid, r in state.all(self.fact_record).items():
            for x in r.get("rows", ()):
                rows.append({"fact_id": fid, "relation": r["relation"], "scope": x["scope"] or "none",
                             "share": math.nan if x["share"] is None else x["share"], "k": len(x["neurons"]),
                             **{f"{g}_change": change(x[g]["before"], x[g]["suppressed"]) if x[g] else math.nan
                                for g in GROUPS}})
        return {"specificity": pd.DataFrame(rows, columns=COLUMNS)}
