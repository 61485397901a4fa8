"""Editing facts through the FFN value slots (Dai et al. 2022, section 5).

Fact updating moves each knowledge neuron's value slot v_i away from the old object's word embedding
and towards the new one's:
    v_i <- v_i - lambda1 * |v_i| / |e_old| * e_old + lambda2 * |v_i| / |e_new| * e_new
Relation erasing zeroes the value slots of a relation's most frequent knowledge neurons.
Both are context managers: the slots are restored bit-identically on exit, also after an exception.
Objects of several tokens are represented by their first token (the one that must become top-1).
`update_facts` and `erase_relations` run the paper's two experiments over a dataset run (a `kn.RunResult`,
read through its methods): each plans its edits first (seeded), then measures them.
"""
from __future__ import annotations

import math
import random
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch

from . import checks
from .interventions import check_neurons
from .data.templates import MASK, Continuation, with_object
from .models import LM
from .neuron import Neuron
from .probing import answer_stats
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


# -- the paper's experiments over a dataset run (a kn.RunResult) ------------------------------------
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
    merged); intra / inter: (prompt, answer) pairs of other facts of the relation / of other relations.
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


@dataclass(frozen=True)
class Erasure:
    """One planned relation erasure: zero `neurons`; measured on the relation's (prompt, answer)
    pairs (`items`) and on all other relations' (`other_items`)."""

    relation: str
    neurons: tuple[Neuron, ...]
    items: tuple[Item, ...]
    other_items: tuple[Item, ...]


def _items(run) -> dict[str, list[Item]]:
    """{fact_id: [(prompt, answer), ...]} of the run's facts with no error, in run order."""
    return {f: run.fact_queries(f) for f in run.error_free_facts()}


def run_object(items: Sequence[Item]) -> str:
    """The object of a fact's (prompt, answer) pairs (the answer without its separator)."""
    return items[0][1].strip()


def _first_token(lm: LM, prompt: str, answer: str) -> int:
    return answer_ids(lm, prompt.split(MASK)[0] if lm.masked else prompt, answer)[0]


def plan_updates(lm: LM, run, *, per_relation: int = 10, max_share: float = 0.1, side_facts: int = 5,
                 seed: int = 0) -> list[Update]:
    """Which facts `update_facts` edits, towards which objects, through which neurons (seeded).

    Per relation, up to `per_relation` facts (seeded order) with knowledge neurons left after those
    shared by more than `max_share` of the relation's located facts are dropped (a neuron of the fact
    alone is always kept), whose answer `lm` ranks top-1 on at least one prompt, and whose relation
    has another object; that object is drawn (seeded), as are `side_facts` facts of the relation and of
    other relations for the side effects and the random control neurons.
    """
    per_relation = checks.integer(per_relation, "per_relation", low=1)
    max_share = checks.number(max_share, "max_share", low=0.0, high=1.0)
    side_facts = checks.integer(side_facts, "side_facts", low=0)
    seed = checks.integer(seed, "seed")
    items = _items(run)
    by_rel: dict[str, list[str]] = {}
    for fid in items:
        by_rel.setdefault(run.fact_relation(fid), []).append(fid)
    planner = _Planner(lm, items, by_rel, side_facts, seed, torch.Generator().manual_seed(seed))
    plan = []
    for rel, fids in by_rel.items():
        order = sorted(fids)
        random.Random(f"{seed}|update|{rel}").shuffle(order)
        counts, n_loc = run.relation_neuron_counts(rel), max(len(run.located_facts(rel)), 1)
        planned = 0
        for fid in order:
            if planned >= per_relation:
                break
            kns = [n for n in run.fact_neurons(fid) if counts[n] <= max_share * n_loc or counts[n] == 1]
            u = planner.update(rel, fid, kns) if kns else None
            if u is not None:
                plan.append(u)
                planned += 1
    return plan


@dataclass
class _Planner:
    """The draws of `plan_updates`; `gen` (random neurons) runs on across the run's edits."""

    lm: LM
    items: dict[str, list[Item]]
    by_rel: dict[str, list[str]]
    side_facts: int
    seed: int
    gen: torch.Generator

    def update(self, rel: str, fid: str, kns: list[Neuron]) -> Update | None:
        """The fact's edit, None if `lm` answers none of its prompts right or the relation has no other object."""
        items, lm = self.items, self.lm
        right = [(p, a) for p, a in items[fid] if answer_stats(lm, p, a)[1] == 0]
        if not right:
            return None
        rng = random.Random(f"{self.seed}|update|{fid}")
        others = [f for f in self.by_rel[rel] if f != fid]
        first = _first_token(lm, *right[0])
        news = [items[f][0][1].strip() for f in others
                if _first_token(lm, right[0][0], with_object(right[0][1], items[f][0][1])) != first]
        if not news:
            return None
        new = rng.choice(sorted(set(news)))
        old = run_object(items[fid])
        intra = [x for f in rng.sample(others, min(self.side_facts, len(others))) for x in items[f]]
        other_rel = sorted(f for r, fs in self.by_rel.items() if r != rel for f in fs)
        inter = [x for f in rng.sample(other_rel, min(self.side_facts, len(other_rel))) for x in items[f]]
        rand = sorted({(l, int(torch.randint(lm.width, (1,), generator=self.gen))) for l, _ in kns})
        return Update(rel, fid, old, new, tuple(kns), tuple(rand), tuple(right), tuple(intra), tuple(inter))


def measure_update(lm: LM, u: Update, *, lambda1: float = LAMBDA1, lambda2: float = LAMBDA2) -> dict:
    """One row of `update_facts`: the edit through the fact's neurons and through the random ones."""
    row = {"relation": u.relation, "fact_id": u.fact_id, "old": u.old, "new": u.new, "n_neurons": len(u.neurons),
           "n_prompts": len(u.prompts)}
    before = {side: _stats(lm, getattr(u, side)) for side in ("intra", "inter")}
    for side, st in before.items():
        row[f"{side}_acc_before"], row[f"{side}_ppl_before"] = _acc_ppl(st)
    (p0, a0), n = u.prompts[0], len(u.prompts)
    for tag, chosen in (("", u.neurons), ("random_", u.random_neurons)):
        with update_fact(lm, chosen, p0, a0, with_object(a0, u.new), lambda1=lambda1, lambda2=lambda2):
            row[f"{tag}success"] = sum(answer_stats(lm, p, with_object(a, u.new))[1] == 0 for p, a in u.prompts) / n
            row[f"{tag}changed"] = sum(answer_stats(lm, p, a)[1] != 0 for p, a in u.prompts) / n
            if not tag:
                for side, st in before.items():
                    after = _stats(lm, getattr(u, side))
                    row[f"{side}_acc_after"], row[f"{side}_ppl_after"] = _acc_ppl(after)
                    row[f"{side}_max_shift"], row[f"{side}_flipped"] = _collateral(st, after)
    return row


def _stats(lm: LM, items: Sequence[Item]) -> list[tuple[float, int]]:
    return [answer_stats(lm, p, a) for p, a in items]


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


def update_facts(lm: LM, run, *, per_relation: int = 10, max_share: float = 0.1, side_facts: int = 5,
                 lambda1: float = LAMBDA1, lambda2: float = LAMBDA2, seed: int = 0, progress: bool = True):
    """Fact updating over a run (Dai et al. 2022, 5.1): one row per edit (pandas DataFrame).

    The edits are `plan_updates`' (see there: which facts, new objects, side facts, random neurons).
    Measured on the prompts where the old answer was top-1: `success`, the share where the new object
    is top-1 after the edit, and `changed`, where the old one no longer is; then accuracy and
    perplexity of the side facts of the same relation (intra) and of other relations (inter), before
    and after, and the edit's collateral on them: `*_max_shift`, the largest change of log10 P(answer)
    over their prompts (orders of magnitude), and `*_flipped`, the share whose top-1 answer flipped.
    The same edit through the random neurons is the control (`random_success`, `random_changed`).
    The model is restored after each edit.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    lambda1, lambda2 = checks.number(lambda1, "lambda1", low=0.0), checks.number(lambda2, "lambda2", low=0.0)
    plan = plan_updates(lm, run, per_relation=per_relation, max_share=max_share, side_facts=side_facts, seed=seed)
    rows = [measure_update(lm, u, lambda1=lambda1, lambda2=lambda2)
            for u in tqdm(plan, desc="edits", disable=not progress)]
    return pd.DataFrame(rows, columns=UPDATE_COLUMNS)


def plan_erasures(run, relations: Sequence[str], *, k: int = 20) -> list[Erasure]:
    """The `k` most frequent knowledge neurons of each relation and the prompts to measure on."""
    relations = checks.texts(relations, "relations")
    k = checks.integer(k, "k", low=1)
    items = _items(run)
    have = list(dict.fromkeys(run.fact_relation(f) for f in items))
    plan = []
    for rel in relations:
        if rel not in have:
            raise ValueError(f"relation {rel!r} has no located fact in this run; it has {', '.join(sorted(have))}")
        kns = most_frequent([run.fact_neurons(f) for f in sorted(run.located_facts(rel))], k)
        mine = [x for f, xs in items.items() if run.fact_relation(f) == rel for x in xs]
        rest = [x for f, xs in items.items() if run.fact_relation(f) != rel for x in xs]
        plan.append(Erasure(rel, tuple(kns), tuple(mine), tuple(rest)))
    return plan


def measure_erasure(lm: LM, e: Erasure) -> dict:
    """One row of `erase_relations`: accuracy and perplexity before and after zeroing the neurons."""
    row = {"relation": e.relation, "n_neurons": len(e.neurons), "n_prompts": len(e.items),
           "n_other_prompts": len(e.other_items)}
    row["acc_before"], row["ppl_before"] = scores(lm, e.items)
    row["other_acc_before"], row["other_ppl_before"] = scores(lm, e.other_items)
    with erase(lm, e.neurons):
        row["acc_after"], row["ppl_after"] = scores(lm, e.items)
        row["other_acc_after"], row["other_ppl_after"] = scores(lm, e.other_items)
    return row


def erase_relations(lm: LM, run, relations: Sequence[str], *, k: int = 20, progress: bool = True):
    """Relation erasing over a run (Dai et al. 2022, 5.2): one row per erased relation (DataFrame).

    The relation's `k` most frequent knowledge neurons are zeroed; accuracy (answer's first token
    top-1) and perplexity on every prompt of the relation's facts and of all other relations' facts,
    before and after.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    plan = plan_erasures(run, relations, k=k)
    rows = [measure_erasure(lm, e) for e in tqdm(plan, desc="erasing", disable=not progress)]
    return pd.DataFrame(rows, columns=ERASE_COLUMNS)
