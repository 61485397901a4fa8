"""Is localization the fact's or the query's? (Chen et al. 2024, "Knowledge Localization: Mission Not
Accomplished? Enter Query Localization"; successors.md section 5.)

Their consistency formula could not be read here; this is a stand-in, labelled as such: a fact's
consistency is the mean pairwise Jaccard overlap of its paraphrases' coarse neuron sets; facts at or
above a threshold count as consistent (K_C), the others as inconsistent (K_I). The comparison,
leave-one-paraphrase-out: the fact-level set refined from the other paraphrases (as `kn.locate`
would) against the held paraphrase's own k highest-scoring neurons (query-level: chosen per query),
k the fact-level set's size, each suppressed on the held paraphrase.
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
