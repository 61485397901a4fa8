"""Editing facts through the FFN value slots (Dai et al. 2022, section 5).

Fact updating moves each knowledge neuron's value slot v_i away from the old object's word embedding
and towards the new one's:
    v_i <- v_i - lambda1 * |v_i| / |e_old| * e_old + lambda2 * |v_i| / |e_new| * e_new
Relation erasing zeroes the value slots of a relation's most frequent knowledge neurons.
Both are context managers: the slots are restored bit-identically on exit, also after an exception.
Objects of several tokens are represented by their first token (the one that must become top-1).
The paper's two experiments are the run phases "update" and "erase" (`kn.runs.phases.editing`), which
plan each edit here (`plan_update`, `plan_erasure`; seeded per fact) and measure it (`measure_update`,
`measure_erasure`).
"""
from __future__ import annotations

import math
import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

import torch

from . import checks
from .interventions import check_neurons
from .data.templates import MASK, Continuation, object_of, with_object
from .models import LM
from .neuron import Neuron
from .probing import answer_stats, batch_stats
from .tokens import answer_ids

LAMBDA1 = 1.0  # the update's weight on moving a value slot away from the old object (Dai et al. 2022, 5.1)
LAMBDA2 = 8.0  # its weight on moving the slot towards the new object


@contextmanager
def _slots_restored(lm: LM, layers: Iterable[int]) -> Iterator[None]:
    saved = {l: lm.value_slots(l).detach().clone() for l in set(layers)}
    try:
        yield
    finally:
        with torch.no_grad():
            for l, w in saved.items():
                lm.value_slots(l).copy_(w)


def fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter's and buffer's bytes: equal before and after an edit means bit-identical."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def word_embedding(lm: LM, prompt: str, answer: str) -> torch.Tensor:
    """Input embedding [hidden] of the answer's first token as it follows the prompt."""
    left = prompt.split(MASK)[0] if lm.masked else prompt
    return lm.model.get_input_embeddings().weight[answer_ids(lm, left, answer)[0]].detach()


@contextmanager
def update_fact(lm: LM, neurons, prompt: str, old: str, new: str, *, lambda1: float = LAMBDA1,
                lambda2: float = LAMBDA2) -> Iterator[None]:
    """Inside the block the fact reads `new` instead of `old` (value slots of `neurons` edited; each
    neuron once, however often it is listed)."""
    by_layer = check_neurons(lm, neurons)
    lambda1, lambda2 = checks.number(lambda1, "lambda1", low=0.0), checks.number(lambda2, "lambda2", low=0.0)
    checks.text(prompt, "prompt"), checks.text(old, "old"), checks.text(new, "new")
    e_old, e_new = word_embedding(lm, prompt, old), word_embedding(lm, prompt, new)
    with _slots_restored(lm, by_layer):
        with torch.no_grad():
            for l, idx in by_layer.items():
                slots = lm.value_slots(l)
                for i in idx:
                    v = slots[i]
                    size = v.norm()
                    slots[i] = v - lambda1 * size / e_old.norm() * e_old + lambda2 * size / e_new.norm() * e_new
        yield


@contextmanager
def erase(lm: LM, neurons) -> Iterator[None]:
    """Inside the block the value slots of `neurons` are zero."""
    by_layer = check_neurons(lm, neurons)
    with _slots_restored(lm, by_layer):
        with torch.no_grad():
            for l, idx in by_layer.items():
                lm.value_slots(l)[idx] = 0
        yield


def scores(lm: LM, items: Sequence[tuple[str, str]]) -> tuple[float, float]:
    """(accuracy, perplexity) over (prompt, answer) pairs: share whose answer's first token is top-1,
    and exp(mean -log P(answer | prompt)). NaN for no items."""
    return _acc_ppl(_stats(lm, items))


def perplexity(lm: LM, items: Sequence[tuple[str, str]]) -> float:
    """exp(mean -log P(answer | prompt)) over (prompt, answer) pairs."""
    return scores(lm, items)[1]


def accuracy(lm: LM, items: Sequence[tuple[str, str]]) -> float:
    """Share of (prompt, answer) pairs whose answer's first token is the top-1 prediction."""
    return scores(lm, items)[0]


def most_frequent(kns: Sequence[Sequence[tuple[int, int]]], k: int = 20) -> list[tuple[int, int]]:
    """The k neurons that are knowledge neurons of the most facts (relation erasing's choice)."""
    from .localization import shared_counts

    return [n for n, _ in shared_counts(kns).most_common(k)]


# -- the paper's two experiments: plans and their measures (the run phases "update" and "erase") --------
Item = tuple[str, Continuation]  # (prompt, answer as it follows the prompt)

UPDATE_COLUMNS = ["relation", "fact_id", "old", "new", "n_neurons", "n_prompts", "success", "changed",
                  "random_success", "random_changed", "intra_acc_before", "intra_acc_after", "intra_ppl_before",
                  "intra_ppl_after", "inter_acc_before", "inter_acc_after", "inter_ppl_before", "inter_ppl_after",
                  "intra_max_shift", "intra_flipped", "inter_max_shift", "inter_flipped"]
ERASE_COLUMNS = ["relation", "n_neurons", "n_prompts", "n_other_prompts", "acc_before", "ppl_before",
                 "other_acc_before", "other_ppl_before", "acc_after", "ppl_after", "other_acc_after", "other_ppl_after"]


@dataclass(frozen=True)
class Update:
    """One planned fact update: move `fact_id`'s answer from the object `old` to `new` through `neurons`.

    prompts: the fact's (prompt, answer) pairs where the answer is top-1 before the edit (where it is
    measured; `new` takes the answer's place with its separator);
    random_neurons: the control, one random neuron in the layer of each of `neurons` (duplicates
    merged); intra / inter: (prompt, answer) pairs of other facts of the relation / of other relations;
    new_fact: the first fact (sorted ids) of the relation whose object is `new` (how `new` is asked in
    another language; None in plans made without it).
    """

    relation: str
    fact_id: str
    old: str
    new: str
    neurons: tuple[Neuron, ...]
    random_neurons: tuple[Neuron, ...]
    prompts: tuple[Item, ...]
    intra: tuple[Item, ...]
    inter: tuple[Item, ...]
    new_fact: str | None = None


@dataclass(frozen=True)
class Erasure:
    """One planned relation erasure: zero `neurons`; measured on the relation's (prompt, answer)
    pairs (`items`) and on all other relations' (`other_items`)."""

    relation: str
    neurons: tuple[Neuron, ...]
    items: tuple[Item, ...]
    other_items: tuple[Item, ...]


def run_object(items: Sequence[Item]) -> str:
    """The object of a fact's (prompt, answer) pairs (the answer without its separator)."""
    return object_of(items[0][1])


def _first_token(lm: LM, prompt: str, answer: str) -> int:
    return answer_ids(lm, prompt.split(MASK)[0] if lm.masked else prompt, answer)[0]


def edit_neurons(kns: Sequence[Neuron], counts: Mapping[Neuron, int], n_located: int,
                 max_share: float = 0.1) -> list[Neuron]:
    """The fact's knowledge neurons an update writes into: those that are knowledge neurons of at most
    `max_share` of the relation's `n_located` located facts (`counts`: neuron -> how many), and any that
    is this fact's alone."""
    return [n for n in kns if counts.get(n, 0) <= max_share * max(n_located, 1) or counts.get(n, 0) == 1]


def plan_update(lm: LM, fact_id: str, neurons: Sequence[Neuron], items: Mapping[str, Sequence[Item]],
                relation_of: Mapping[str, str], *, side_facts: int = 5, seed: int = 0) -> Update | None:
    """The update of `fact_id` through `neurons`, or None if `lm` answers none of its prompts right (top-1)
    or its relation has no other object (with another first token).

    items: {fact_id: its (prompt, answer) pairs} of the facts an edit draws from, `relation_of` their
    relations: the new object is drawn from the objects of the relation's other facts (`new_fact`: the
    first of them, in sorted order, with that object), the intra side
    facts among those facts and the inter side facts among the other relations' (`side_facts` each),
    and the random control neurons (one per layer of `neurons`, duplicates merged); every draw seeded
    by (`seed`, `fact_id`), so a fact's plan is the same whatever else is planned.
    """
    rel = relation_of[fact_id]
    right = [x for x, (_, rank) in zip(items[fact_id], batch_stats(lm, items[fact_id])) if rank == 0]
    if not right or not neurons:
        return None
    rng = random.Random(f"{seed}|update|{fact_id}")
    others = sorted(f for f in items if f != fact_id and relation_of[f] == rel)
    first = _first_token(lm, *right[0])
    candidates = [f for f in others if _first_token(lm, right[0][0], with_object(right[0][1], items[f][0][1])) != first]
    if not candidates:
        return None
    new = rng.choice(sorted({run_object(items[f]) for f in candidates}))
    new_fact = next(f for f in candidates if run_object(items[f]) == new)  # no draw: the plan's draws are as before
    intra = [x for f in rng.sample(others, min(side_facts, len(others))) for x in items[f]]
    other_rel = sorted(f for f in items if relation_of[f] != rel)
    inter = [x for f in rng.sample(other_rel, min(side_facts, len(other_rel))) for x in items[f]]
    rand = sorted({(l, rng.randrange(lm.width)) for l, _ in neurons})
    return Update(rel, fact_id, run_object(items[fact_id]), new, tuple(neurons), tuple(rand), tuple(right),
                  tuple(intra), tuple(inter), new_fact)


def update_order(fact_ids: Sequence[str], relation: str, seed: int = 0) -> list[str]:
    """The seeded order in which a relation's facts are considered for an update (the first
    `per_relation` that `plan_update` can plan are edited)."""
    order = sorted(fact_ids)
    random.Random(f"{seed}|update|{relation}").shuffle(order)
    return order


def measure_update(lm: LM, u: Update, *, lambda1: float = LAMBDA1, lambda2: float = LAMBDA2) -> dict:
    """One update's row (`UPDATE_COLUMNS`; the phase "update"): the edit through the fact's neurons and
    through the random ones."""
    row = {"relation": u.relation, "fact_id": u.fact_id, "old": u.old, "new": u.new, "n_neurons": len(u.neurons),
           "n_prompts": len(u.prompts)}
    before = {side: _stats(lm, getattr(u, side)) for side in ("intra", "inter")}
    for side, st in before.items():
        row[f"{side}_acc_before"], row[f"{side}_ppl_before"] = _acc_ppl(st)
    (p0, a0), n = u.prompts[0], len(u.prompts)
    for tag, chosen in (("", u.neurons), ("random_", u.random_neurons)):
        with update_fact(lm, chosen, p0, a0, with_object(a0, u.new), lambda1=lambda1, lambda2=lambda2):
            new = batch_stats(lm, [(p, with_object(a, u.new)) for p, a in u.prompts])
            old = batch_stats(lm, list(u.prompts))
            row[f"{tag}success"] = sum(rank == 0 for _, rank in new) / n
            row[f"{tag}changed"] = sum(rank != 0 for _, rank in old) / n
            if not tag:
                for side, st in before.items():
                    after = _stats(lm, getattr(u, side))
                    row[f"{side}_acc_after"], row[f"{side}_ppl_after"] = _acc_ppl(after)
                    row[f"{side}_max_shift"], row[f"{side}_flipped"] = _collateral(st, after)
    return row


def _stats(lm: LM, items: Sequence[Item]) -> list[tuple[float, int]]:
    return batch_stats(lm, list(items))


def _acc_ppl(stats: Sequence[tuple[float, int]]) -> tuple[float, float]:
    if not stats:
        return float("nan"), float("nan")
    acc = sum(r == 0 for _, r in stats) / len(stats)
    return acc, math.exp(sum(-math.log(max(q, 1e-30)) for q, _ in stats) / len(stats))


def _collateral(before, after) -> tuple[float, float]:
    """The edit's effect on other facts: the largest |log10 P(answer)| change (orders of magnitude) and
    the share of prompts whose top-1 answer flipped (right to wrong or wrong to right). NaN for none."""
    if not before:
        return float("nan"), float("nan")
    shift = max(abs(math.log10(max(a, 1e-30)) - math.log10(max(b, 1e-30))) for (b, _), (a, _) in zip(before, after))
    flipped = sum((rb == 0) != (ra == 0) for (_, rb), (_, ra) in zip(before, after)) / len(before)
    return shift, flipped


def plan_erasure(relation: str, kns: Sequence[Sequence[Neuron]], items: Sequence[Item],
                 other_items: Sequence[Item], *, k: int = 20) -> Erasure:
    """Erasing `relation`: the `k` most frequent of its located facts' knowledge neurons `kns`, measured
    on its (prompt, answer) pairs `items` and on the other relations' `other_items`."""
    return Erasure(relation, tuple(most_frequent(kns, k)), tuple(items), tuple(other_items))


def measure_erasure(lm: LM, e: Erasure, before: Mapping[Item, tuple[float, int]] | None = None) -> dict:
    """One erasure's row (`ERASE_COLUMNS`): accuracy and perplexity before and after zeroing the neurons.
    before: each item's `answer_stats` on the unedited model where known already (saves passes)."""
    known = before or {}
    row = {"relation": e.relation, "n_neurons": len(e.neurons), "n_prompts": len(e.items),
           "n_other_prompts": len(e.other_items)}
    row["acc_before"], row["ppl_before"] = _acc_ppl([known.get(x) or answer_stats(lm, *x) for x in e.items])
    row["other_acc_before"], row["other_ppl_before"] = _acc_ppl(
        [known.get(x) or answer_stats(lm, *x) for x in e.other_items])
    with erase(lm, e.neurons):
        row["acc_after"], row["ppl_after"] = scores(lm, e.items)
        row["other_acc_after"], row["other_ppl_after"] = scores(lm, e.other_items)
    return row
