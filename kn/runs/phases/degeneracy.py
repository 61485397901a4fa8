"""Phase "degeneracy" (Chen et al. 2024, looked at closer; `kn.degenerate`): per fact with degenerate
records, what its neurons do when they go off:

- each of the fact's pairs on each of its prompts: P(answer) intact, with one neuron off, the other
  off and both off (`kn.degenerate.pair_effects`);
- on its first prompt, P(answer) / P0 as its top `dkn_candidates` neurons (attribution order, from
  its locate record) go off together, one more at a time (`kn.degenerate.cumulative`);
- for the first `dkn_sets_per_relation` located facts of each relation (run order), the minimal
  degenerate sets of 2..`dkn_max_size` neurons among those on its first prompt
  (`kn.degenerate.degenerate_sets`, with the pair rule's `dkn_single` and `dkn_pair`).

Record ``degeneracy`` = {fact_id, relation, effects (rows of `pair_effects`, neurons as [layer,
index]), curve (P / P0 for k = 0..n neurons off), sets ([[[layer, index], ...], ...]) or None}, or
{fact_id, relation, error}. Own tables: ``pair_effects`` (a row per fact, prompt and pair),
``curves`` (a row per fact and k), ``degenerate_sets`` (a row per fact and set).
"""
from __future__ import annotations

from ...attribution import scores as neuron_scores
from ...degenerate import check_search, cumulative, degenerate_sets, pair_effects
from ...localization import top
from ..state import State
from .base import Phase, record
from .degenerate import Degenerate, _pairs
from .locate import answers_of, located, located_facts
from .setting import at_least, phase_settings, setting

EFFECT_COLUMNS = ["fact_id", "relation", "prompt", "a", "b", "p0", "a_off", "b_off", "both_off"]
CURVE_COLUMNS = ["fact_id", "relation", "k", "p_ratio"]
SET_COLUMNS = ["fact_id", "relation", "size", "neurons"]


@phase_settings
class DegeneracySettings:
    """How far degeneracy is looked into beyond pairs."""

    dkn_max_size: int = setting(3, "degenerate sets are searched up to this many neurons (the search grows as "
                                   "candidates^size; bounded by kn.degenerate.MAX_SETS sets)", check=at_least(2))
    dkn_sets_per_relation: int = setting(2, "degenerate sets are searched for the first this many located facts "
                                            "of each relation", check=at_least(0))


class Degeneracy(Phase):
    name = "degeneracy"
    Settings = DegeneracySettings
    fact_record = "degeneracy"
    needs = ("locate", "degenerate")
    table_names = ("pair_effects", "curves", "degenerate_sets")

    @staticmethod
    def check_run(settings) -> None:
        """The sets search's worst case over dkn_candidates candidates is bounded (`kn.degenerate.MAX_SETS`)."""
        check_search(settings.of("degenerate").dkn_candidates, settings.of("degeneracy").dkn_max_size,
                     f"the degeneracy phase's dkn_max_size={settings.of('degeneracy').dkn_max_size}")

    def wants(self, fact_id: str, state: State) -> bool:
        deg = state.get(Degenerate.fact_record, fact_id)
        return located(state, fact_id) is not None and deg is not None and "fact_pairs" in deg

    def run_fact(self, lm, fact, state: State) -> dict:
        loc = located(state, fact.fact_id)
        deg = self.run.of("degenerate")
        s = self.settings

        def measure() -> dict:
            queries = list(zip(loc["prompts"], answers_of(loc)))
            effects = pair_effects(lm, queries, _pairs(state.get(Degenerate.fact_record, fact.fact_id)["fact_pairs"]))
            kept = (loc.get("top") or [[]])[0]
            best = kept if len(kept) >= deg.dkn_candidates else top(
                neuron_scores(lm, *queries[0], self.run.attribution), deg.dkn_candidates)
            order = [(l, i) for l, i, _ in best[: deg.dkn_candidates]]
            curve = cumulative(lm, *queries[0], order)
            searched = located_facts(state, loc["relation"])[: s.dkn_sets_per_relation]
            sets = (degenerate_sets(lm, *queries[0], order, single=deg.dkn_single, drop=deg.dkn_pair,
                                    max_size=s.dkn_max_size) if fact.fact_id in searched else None)
            return {"effects": [{**e, "a": list(e["a"]), "b": list(e["b"])} for e in effects.to_dict("records")],
                    "curve": [float(p / max(curve[0], 1e-30)) for p in curve],
                    "sets": None if sets is None else [[list(n) for n in x] for x in sets]}
        return self.attempt(record(self.fact_record, fact_id=fact.fact_id, relation=loc["relation"]), measure)

    def tables(self, state: State) -> dict:
        import pandas as pd

        effects, curves, sets = [], [], []
        for fid, r in state.all(self.fact_record).items():
            if "error" in r:
                continue
            base = {"fact_id": fid, "relation": r["relation"]}
            effects += [{**base, **e} for e in r["effects"]]
            curves += [{**base, "k": k, "p_ratio": p} for k, p in enumerate(r["curve"])]
            sets += [{**base, "size": len(x), "neurons": x} for x in r["sets"] or []]
        return {"pair_effects": pd.DataFrame(effects, columns=EFFECT_COLUMNS),
                "curves": pd.DataFrame(curves, columns=CURVE_COLUMNS),
                "degenerate_sets": pd.DataFrame(sets, columns=SET_COLUMNS)}
