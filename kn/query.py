"""Is localization the fact's or the query's? (Chen et al. 2024, "Knowledge Localization: Mission Not
Accomplished? Enter Query Localization"; successors.md section 5.)

Their consistency formula could not be read here; this is a stand-in, labelled as such: a fact's
consistency is the mean pairwise Jaccard overlap of its paraphrases' coarse neuron sets; facts at or
above a threshold count as consistent (K_C), the others as inconsistent (K_I). The comparison,
leave-one-paraphrase-out: the fact-level set refined from the other paraphrases (as `kn.locate`
would) against the held paraphrase's own k highest-scoring neurons (query-level: chosen per query),
k the fact-level set's size, each suppressed on the held paraphrase. `consistency_kinds`, `by_kind`,
`reading` and `recorded_summary` read the tables the run phase "query" writes.
"""
from __future__ import annotations

import math
from itertools import combinations
from typing import Sequence

from .localization import refine
from .neuron import Neuron


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b|, 1 for two empty sets."""
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def consistency(per_prompt: Sequence[set[Neuron]]) -> float:
    """Mean pairwise Jaccard overlap of the paraphrases' neuron sets (NaN for fewer than two)."""
    pairs = list(combinations(per_prompt, 2))
    return sum(jaccard(set(a), set(b)) for a, b in pairs) / len(pairs) if pairs else math.nan


def held_out(per_prompt: Sequence[set[Neuron]], tops: Sequence[Sequence[Neuron]], share: float,
             min_prompts: int) -> list[tuple[int, list[Neuron], list[Neuron]]]:
    """For each paraphrase j: (j, the set refined from the other paraphrases' sets, j's own first k of
    `tops[j]` with k that set's size); paraphrases whose fact-level set is empty are left out."""
    out = []
    for j in range(len(per_prompt)):
        rest = [s for i, s in enumerate(per_prompt) if i != j]
        fact = refine(rest, share, min_prompts=max(1, min(min_prompts, len(rest))))
        if fact:
            out.append((j, fact, list(tops[j])[: len(fact)]))
    return out


KINDS = {True: "consistent (K_C)", False: "inconsistent (K_I)"}


def consistency_kinds(facts, threshold: float):
    """A run's facts table's facts with a consistency (fact_id, relation, n_prompts, n_neurons,
    consistency), each of kind consistent (K_C: consistency >= threshold) or inconsistent (K_I)."""
    c = facts[["fact_id", "relation", "n_prompts", "n_neurons", "consistency"]].dropna(subset=["consistency"])
    return c.assign(kind=(c.consistency >= threshold).map(KINDS))


def by_kind(held):
    """Per kind of a query_localization table with a kind column (`consistency_kinds` merged on
    fact_id): the mean change of P(answer) with the fact-level and the query-level set suppressed and
    how many held paraphrases, rounded to 3 decimals."""
    means = held.groupby("kind")[["fact_set_change", "query_set_change"]].mean()
    return means.assign(held_paraphrases=held.groupby("kind").size()).round(3)


def reading(held) -> str:
    """One sentence on a query_localization table: on what share of its held paraphrases the query's
    own neurons lowered P(answer) more than the fact-level set, and both mean changes."""
    if not len(held):
        return "No fact of this slice had two paraphrases with a fact-level set: nothing to compare."
    q_better = (held.query_set_change < held.fact_set_change).mean()
    return (f"On {q_better:.0%} of {len(held)} held paraphrases the query's own neurons lowered P(answer) more than "
            f"the fact-level set did (mean change {held.query_set_change.mean():+.1%} against "
            f"{held.fact_set_change.mean():+.1%}). A live slice of a few facts; the recorded runs below are the "
            "numbers to weigh.")


def recorded_summary(recordings):
    """A row per {name: recording with a query_localization table}: its held paraphrases, the mean
    change with the fact-level and the query-level set suppressed, and the share where the query's
    is lower, rounded to 3 decimals."""
    import pandas as pd

    return pd.DataFrame({m: {"held paraphrases": len(t), "fact-level set": t.fact_set_change.mean(),
                             "query-level set": t.query_set_change.mean(),
                             "query lower": (t.query_set_change < t.fact_set_change).mean()}
                         for m, t in ((m, r["query_localization"]) for m, r in recordings.items())}).T.round(3)
