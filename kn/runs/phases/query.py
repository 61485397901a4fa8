"""Phase "query" (query localization, `kn.query`; a stand-in for Chen et al. 2024's measure, labelled
as such): per located fact, its consistency (mean pairwise Jaccard of its paraphrases' coarse sets)
and, leaving each paraphrase out, the fact-level set refined from the others against the held
paraphrase's own top neurons, both suppressed on it.

Record ``query`` = {fact_id, relation, consistency, rows (per held paraphrase: prompt_index, k,
p_before, p_fact_set, p_query_set)}, or {fact_id, relation, error}. Own table ``query_localization``,
a row per (fact, held paraphrase).
"""
from __future__ import annotations

import math

from ...degenerate import suppressed_probs
from ...query import consistency, held_out
from ..state import State
from .base import Phase, mean, record
from .locate import Locate, answers_of, located
from .setting import fraction, phase_settings, setting

COLUMNS = ["fact_id", "relation", "prompt_index", "k", "p_before", "fact_set_change", "query_set_change"]


@phase_settings
class QuerySettings:
    """How facts are split into consistent and inconsistent (a stand-in threshold)."""

    ql_threshold: float = setting(0.3, "query localization: a fact is consistent when its paraphrases' neuron sets "
                                       "overlap at least this much (mean pairwise Jaccard)", check=fraction,
                                  scope="table")


class Query(Phase):
    name = "query"
    Settings = QuerySettings
    fact_record = "query"
    needs = ("locate",)
    fact_columns = ("consistency",)
    relation_columns = ("consistent_share", "fact_set_change", "query_set_change")
    table_names = ("query_localization",)
    summary = (("consistent_share", "consistent", ".0%"), ("fact_set_change", "fact set", "+.1%"),
               ("query_set_change", "query set", "+.1%"))

    def wants(self, fact_id: str, state: State) -> bool:
        rec = located(state, fact_id)
        return rec is not None and "top" in rec and len(rec["prompts"]) >= 2

    def run_fact(self, lm, fact, state: State) -> dict:
        loc = located(state, fact.fact_id)
        rel = state.get(Locate.relation_record, loc["relation"])
        locate = self.run.of("locate")

        def measure() -> dict:
            sets = [{tuple(n) for n in s} for s in loc["sets"]]
            tops = [[(l, i) for l, i, _ in t] for t in loc["top"]]
            share = rel["share"] if rel and rel.get("share") is not None else locate.share
            rows = []
            for j, fact_set, query_set in held_out(sets, tops, share, locate.min_prompts):
                p0, pf, pq = suppressed_probs(lm, loc["prompts"][j], answers_of(loc)[j], [[], fact_set, query_set])
                rows.append({"prompt_index": j, "k": len(fact_set), "p_before": float(p0),
                             "p_fact_set": float(pf), "p_query_set": float(pq)})
            return {"consistency": consistency(sets), "rows": rows}
        return self.attempt(record(self.fact_record, fact_id=fact.fact_id, relation=loc["relation"]), measure)

    def fact_row(self, fact_id: str, state: State) -> dict:
        r = state.get(self.fact_record, fact_id)
        return {"consistency": r["consistency"] if r and "consistency" in r else math.nan}

    def relation_row(self, relation: str, facts, state: State) -> dict:
        rows = [x for r in state.all(self.fact_record).values() if r["relation"] == relation and "rows" in r
                for x in r["rows"]]
        c = facts.consistency.dropna() if "consistency" in facts else []
        return {"consistent_share": float((c >= self.settings.ql_threshold).mean()) if len(c) else math.nan,
                "fact_set_change": mean([x["p_fact_set"] / x["p_before"] - 1 for x in rows if x["p_before"] > 0]),
                "query_set_change": mean([x["p_query_set"] / x["p_before"] - 1 for x in rows if x["p_before"] > 0])}

    def tables(self, state: State) -> dict:
        import pandas as pd

        rows = [{"fact_id": fid, "relation": r["relation"], "prompt_index": x["prompt_index"], "k": x["k"],
                 "p_before": x["p_before"],
                 "fact_set_change": x["p_fact_set"] / x["p_before"] - 1 if x["p_before"] > 0 else math.nan,
                 "query_set_change": x["p_query_set"] / x["p_before"] - 1 if x["p_before"] > 0 else math.nan}
                for fid, r in state.all(self.fact_record).items() if "rows" in r for x in r["rows"]]
        return {"query_localization": pd.DataFrame(rows, columns=COLUMNS)}
