"""Phase "degenerate" (Chen et al. 2024): per located fact, each prompt's degenerate pairs among its
top neurons (`kn.degenerate.degenerate_pairs`), and the fact's pairs: those holding on a share of
its prompts (`kn.degenerate.fact_pairs`).

Record: ``degenerate`` = {fact_id, relation, candidates (per prompt, how many), pairs (per prompt,
[[layer, index, layer, index], ...]), fact_pairs (the same form), seconds}, or {fact_id, relation,
error}. Candidates: the prompt's `dkn_candidates` highest-scoring neurons, from the locate record
when it kept that many (`locate.TOP`), else recomputed with the run's attribution. Own table: ``degenerate_pairs``, a row per
(fact, pair of the fact).
"""
from __future__ import annotations


from ...attribution import scores as neuron_scores
from ...degenerate import degenerate_pairs, fact_pairs
from ...localization import top
from ..state import State
from .base import Phase, mean, record
from .locate import answers_of, located
from .setting import phase_settings, at_least, fraction, setting


PAIR_COLUMNS = ["fact_id", "relation", "layer_a", "index_a", "layer_b", "index_b", "n_prompts_found", "n_prompts"]


def _flat(pairs) -> list[list[int]]:
    return [[a[0], a[1], b[0], b[1]] for a, b in pairs]


def _pairs(rows) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    return [((r[0], r[1]), (r[2], r[3])) for r in rows]


@phase_settings
class DegenerateSettings:
    """How degenerate knowledge neurons are found (Chen et al. 2024)."""

    dkn_candidates: int = setting(20, "the degenerate phase's candidates: each prompt's top neurons by attribution",
                                  check=at_least(2))
    dkn_single: float = setting(0.2, "a pair's neurons each alone keep P(answer) >= (1 - single) x P0",
                                check=fraction)
    dkn_pair: float = setting(0.25, "a pair's neurons both suppressed drop P(answer) below (1 - pair) x P0",
                              check=fraction)
    dkn_share: float = setting(0.5, "a pair is the fact's when it holds on at least this share of its prompts",
                               check=fraction)



class Degenerate(Phase):
    name = "degenerate"
    Settings = DegenerateSettings
    fact_record = "degenerate"
    needs = ("locate",)
    fact_columns = ("dkn_pairs", "dkn_neurons")
    relation_columns = ("dkn_pairs_per_fact",)
    dtypes = {"dkn_pairs": "Int64", "dkn_neurons": "Int64"}
    table_names = ("degenerate_pairs",)
    summary = (("dkn_pairs_per_fact", "DKN pairs/fact", ".2f"),)

    def wants(self, fact_id: str, state: State) -> bool:
        return located(state, fact_id) is not None

    def run_fact(self, lm, fact, state: State) -> dict:
        s = self.settings
        loc = located(state, fact.fact_id)

        def pairs() -> dict:
            per_prompt, counts = [], []
            for j, (p, a) in enumerate(zip(loc["prompts"], answers_of(loc))):
                kept = loc.get("top", [[]] * len(loc["prompts"]))[j]
                best = kept if len(kept) >= s.dkn_candidates else top(
                    neuron_scores(lm, p, a, self.run.attribution), s.dkn_candidates)
                cands = [(l, i) for l, i, _ in best[: s.dkn_candidates]]
                counts.append(len(cands))
                per_prompt.append(degenerate_pairs(lm, p, a, cands, single=s.dkn_single, pair=s.dkn_pair))
            return {"candidates": counts, "pairs": [_flat(x) for x in per_prompt],
                    "fact_pairs": _flat(fact_pairs(per_prompt, s.dkn_share))}
        return self.attempt(record(self.fact_record, fact_id=loc["fact_id"], relation=loc["relation"]), pairs)

    def fact_row(self, fact_id: str, state: State) -> dict:
        r = state.get(self.fact_record, fact_id)
        if not r or "fact_pairs" not in r:
            return {"dkn_pairs": None, "dkn_neurons": None}
        pairs = _pairs(r["fact_pairs"])
        return {"dkn_pairs": len(pairs), "dkn_neurons": len({n for p in pairs for n in p})}

    def relation_row(self, relation: str, facts, state: State) -> dict:
        return {"dkn_pairs_per_fact": mean(facts.dkn_pairs.dropna().astype(float))}

    def tables(self, state: State) -> dict:
        import pandas as pd

        rows = []
        for fid, r in state.all(self.fact_record).items():
            if "fact_pairs" not in r:
                continue
            per = [set(map(tuple, map(sorted, _pairs(x)))) for x in r["pairs"]]
            for a, b in _pairs(r["fact_pairs"]):
                key = tuple(sorted((a, b)))
                rows.append({"fact_id": fid, "relation": r["relation"], "layer_a": a[0], "index_a": a[1],
                             "layer_b": b[0], "index_b": b[1], "n_prompts_found": sum(key in p for p in per),
                             "n_prompts": len(per)})
        return {"degenerate_pairs": pd.DataFrame(rows, columns=PAIR_COLUMNS)}
