"""Degenerate knowledge neurons (Chen et al. 2024): neurons that can stand in for each other, so that
switching one off leaves the fact in place and switching all off removes it.

The paper's pair rule (`degenerate_pairs`): among a prompt's candidates (default: its top-20 neurons
by attribution), a pair (a, b) is degenerate when each alone, suppressed, keeps P(answer) >= (1 -
single) * P0, and both together drop it below (1 - pair) * P0. Suppression is `kn.suppress`'s: the
neurons set to 0 at the answer position. `degenerate_sets` generalises to minimal sets of up to
`max_size` neurons. Every measurement goes through `suppressed_probs`: many neuron sets, one row of a
batch each (each row carries its own mask), never one forward pass per set.
"""
from __future__ import annotations

import itertools
import math
from typing import Iterable, Sequence

import numpy as np
import torch

from . import checks
from .hooks import head_at, hooked, site_hooks
from .models import LM
from .neuron import Neuron
from .tokens import targets

ROW_TOKENS = 16384  # tokens per forward pass (memory, not results)
MAX_SETS = 100_000  # neuron sets a search may try (a batch row each): C(20, 2) + ... + C(20, 6) is 60,439


def search_cost(n: int, max_size: int, *, beyond: int | None = None) -> int:
    """The most neuron sets `degenerate_sets` tries over n candidates: sum of C(n, s), s = 2..max_size;
    with `beyond`, summing stops once past it when many terms are left (the sum is then a lower bound)."""
    top, total = min(max_size, n), 0
    for s in range(2, top + 1):
        total += math.comb(n, s)
        if beyond is not None and total > beyond and top - s > 64:
            break
    return total


def check_search(n: int, max_size: int, what: str) -> None:
    """Refuse a search whose worst case (`search_cost`) passes MAX_SETS, saying its cost and the fix."""
    cost = search_cost(n, max_size, beyond=MAX_SETS)
    if cost > MAX_SETS:
        exact = min(max_size, n) <= 66  # else summing stopped early: a lower bound
        raise checks.ArgumentError(
            f"{what} over {n} candidates may try {'' if exact else 'more than '}{cost:,} neuron sets (sum of C({n}, s) "
            f"for s = 2..{min(max_size, n)}), "
            f"a forward pass row each; kn's bound is {MAX_SETS:,} (kn.degenerate.MAX_SETS): lower max_size, k or "
            "the candidates")


def _answer_mask(lm: LM, ids: torch.Tensor, pos: int) -> torch.Tensor:
    """[seq] bool: where suppression acts (masked LM: the [MASK] slots left; causal: the last position)."""
    if lm.masked:
        return ids[0] == lm.tokenizer.mask_token_id
    m = torch.zeros(ids.shape[1], dtype=torch.bool, device=ids.device)
    m[pos] = True
    return m


def suppressed_probs(lm: LM, prompt: str, answer: str, sets: Sequence[Iterable[Neuron]]) -> np.ndarray:
    """P(answer | prompt) [len(sets)] with each set's neurons zeroed at the answer position, a set per
    batch row (rows as large as memory allows); a multi-token answer multiplies its teacher-forced
    tokens' probabilities, as `kn.answer_prob`."""
    groups = [checks.by_layer(lm, s) for s in sets]
    ts = targets(lm, prompt, answer)
    if not groups:
        return np.zeros(0)
    layers = sorted({l for g in groups for l in g})
    masks = {l: torch.ones(len(groups), lm.width, device=lm.device) for l in layers}
    for r, g in enumerate(groups):
        for l, idx in g.items():
            masks[l][r, idx] = 0
    out = np.ones(len(groups))
    for t in ts:
        where = _answer_mask(lm, t.ids, t.pos)
        chunk = max(1, ROW_TOKENS // t.ids.shape[1])
        for i in range(0, len(groups), chunk):
            rows = slice(i, min(i + chunk, len(groups)))
            n = rows.stop - rows.start

            def edit(layer, act, rows=rows):
                m = masks[layer][rows].to(act.dtype)  # [n, width]
                keep = torch.where(where[None, :, None], m[:, None, :], torch.ones_like(m[:, None, :]))
                return act * keep

            with torch.no_grad(), hooked(site_hooks(lm, edit, layers) + [head_at(lm, t.pos)]):
                logits = lm.model(input_ids=t.ids.expand(n, -1), use_cache=False).logits
            out[rows] *= torch.softmax(logits[:, -1].float(), -1)[:, t.gold].cpu().numpy()
    return out


def top_neurons(lm: LM, prompt: str, answer: str, k: int = 20, settings=None) -> list[Neuron]:
    """The prompt's `k` highest-scoring neurons (`kn.scores`; default IG), best first."""
    from .attribution import scores

    from .localization import top

    return [(l, i) for l, i, _ in top(scores(lm, prompt, answer, settings), k)]


def _candidates(lm, prompt, answer, candidates, k) -> list[Neuron]:
    if candidates is None:
        return top_neurons(lm, prompt, answer, k)
    return checks.neurons(lm, candidates, "candidates")


def degenerate_pairs(lm: LM, prompt: str, answer: str, candidates: Iterable[Neuron] | None = None, *,
                     single: float = 0.2, pair: float = 0.25, k: int = 20) -> list[tuple[Neuron, Neuron]]:
    """The degenerate pairs among `candidates` (default: the prompt's top-`k` neurons by IG), in
    candidate order. Two batched passes: every single suppression, then every pair of the neurons
    that passed alone."""
    single = checks.number(single, "single", low=0.0, high=1.0)
    pair = checks.number(pair, "pair", low=0.0, high=1.0)
    cands = _candidates(lm, prompt, answer, candidates, k)
    check_search(len(cands), 2, "degenerate_pairs")
    p0 = float(suppressed_probs(lm, prompt, answer, [[]])[0])
    alone = suppressed_probs(lm, prompt, answer, [[n] for n in cands])
    ok = [n for n, p in zip(cands, alone) if p >= (1 - single) * p0]
    pairs = list(itertools.combinations(ok, 2))
    both = suppressed_probs(lm, prompt, answer, [list(pr) for pr in pairs])
    return [pr for pr, p in zip(pairs, both) if p < (1 - pair) * p0]


def degenerate_sets(lm: LM, prompt: str, answer: str, candidates: Iterable[Neuron] | None = None, *,
                    single: float = 0.2, drop: float = 0.25, max_size: int = 3,
                    k: int = 20) -> list[tuple[Neuron, ...]]:
    """Minimal degenerate sets of 2..`max_size` neurons among `candidates`: suppressing the set drops
    P below (1 - drop) * P0, while every proper subset keeps it at or above (1 - single) * P0 (for the
    singles; a subset of two or more must not drop it below (1 - drop) * P0, or the set is not minimal).

    Pruned search, level by level: a set of size s is tried only if all its (s-1)-subsets kept the
    fact (a set containing a dropping subset is not minimal). Cost: one batched pass per level over
    the surviving sets; at most C(n, s) sets of size s for n candidates passing alone (n = 20, s = 3:
    1140 rows), usually far fewer after pruning. That worst case is bounded by `MAX_SETS` (100,000):
    a larger search is refused before it starts, with its cost.
    """
    single = checks.number(single, "single", low=0.0, high=1.0)
    drop = checks.number(drop, "drop", low=0.0, high=1.0)
    max_size = checks.integer(max_size, "max_size", low=2)
    if candidates is None:  # before the attribution that finds them
        check_search(checks.integer(k, "k", low=1), max_size, f"degenerate_sets(max_size={max_size})")
    cands = _candidates(lm, prompt, answer, candidates, k)
    check_search(len(cands), max_size, f"degenerate_sets(max_size={max_size})")
    p0 = float(suppressed_probs(lm, prompt, answer, [[]])[0])
    alone = suppressed_probs(lm, prompt, answer, [[n] for n in cands])
    kept = {(n,) for n, p in zip(cands, alone) if p >= (1 - single) * p0}  # subsets that keep the fact
    order = {n: i for i, n in enumerate(cands)}
    found: list[tuple[Neuron, ...]] = []
    level = sorted(kept, key=lambda s: order[s[0]])
    for size in range(2, max_size + 1):
        grown = {tuple(sorted(a + (n,), key=order.get)) for a in level for n in cands if n not in a}
        trial = [s for s in sorted(grown, key=lambda s: [order[n] for n in s])
                 if all(tuple(x for x in s if x != y) in kept for y in s)]
        probs = suppressed_probs(lm, prompt, answer, [list(s) for s in trial])
        level = []
        for s, p in zip(trial, probs):
            if p < (1 - drop) * p0:
                found.append(s)
            else:
                kept.add(s)
                level.append(s)
        if not level:
            break
    return found


def fact_pairs(per_prompt: Sequence[Iterable[tuple[Neuron, Neuron]]], share: float = 0.5,
               min_prompts: int = 1) -> list[tuple[Neuron, Neuron]]:
    """A fact's degenerate pairs: those found on at least max(share * n, min_prompts) of its n prompts
    (pairs unordered; sorted). share 0.5 by default: a pair must hold on most paraphrases to be the
    fact's rather than one wording's, and with one prompt per fact (BMLAMA) it is that prompt's."""
    from collections import Counter

    from .localization import min_count

    share = checks.number(share, "share", low=0.0, high=1.0)
    counts = Counter(p for pairs in per_prompt for p in {tuple(sorted(q)) for q in pairs})
    need = min_count(len(per_prompt), share, min_prompts)
    return sorted(p for p, c in counts.items() if c >= need)


def cumulative(lm: LM, prompt: str, answer: str, neurons: Sequence[Neuron]) -> np.ndarray:
    """P(answer) [len(neurons) + 1] with the first k of `neurons` suppressed together, k = 0..n (one
    batched pass): how the fact falls as neurons go off in the given order."""
    ns = list(neurons)
    return suppressed_probs(lm, prompt, answer, [ns[:k] for k in range(len(ns) + 1)])


PAIR_EFFECT_COLUMNS = ["prompt", "a", "b", "p0", "a_off", "b_off", "both_off"]


def pair_effects(lm: LM, queries: Sequence[tuple[str, str]], pairs: Sequence[tuple[Neuron, Neuron]]):
    """A row per (prompt, pair) (`PAIR_EFFECT_COLUMNS`): P(answer) intact, with a off, b off and both
    off; one batched pass per prompt."""
    import pandas as pd

    rows = []
    for prompt, answer in queries:
        sets = [[]] + [s for a, b in pairs for s in ([a], [b], [a, b])]
        p = suppressed_probs(lm, prompt, answer, sets)
        for j, (a, b) in enumerate(pairs):
            rows.append({"prompt": prompt, "a": a, "b": b, "p0": p[0], "a_off": p[1 + 3 * j],
                         "b_off": p[2 + 3 * j], "both_off": p[3 + 3 * j]})
    return pd.DataFrame(rows, columns=PAIR_EFFECT_COLUMNS)
