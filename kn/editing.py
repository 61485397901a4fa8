"""Editing facts through the FFN value slots (Dai et al. 2022, section 5).

Fact updating moves each knowledge neuron's value slot v_i away from the old object's word embedding
and towards the new one's:
    v_i <- v_i - lambda1 * |v_i| / |e_old| * e_old + lambda2 * |v_i| / |e_new| * e_new
Relation erasing zeroes the value slots of a relation's most frequent knowledge neurons.
Both are context managers: the slots are restored bit-identically on exit, also after an exception.
Objects of several tokens are represented by their first token (the one that must become top-1).
`update_facts` and `erase_relations` run the paper's two experiments over a dataset run (kn.run).
"""
from __future__ import annotations

import math
import random
from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence

import torch

from . import arch
from .interventions import check_neurons
from .models import LM, MASK
from .probing import answer_stats
from .tokens import answer_ids


@contextmanager
def _slots_restored(lm: LM, layers: Iterable[int]) -> Iterator[None]:
    saved = {l: arch.value_slots(lm.model, lm.family, l).detach().clone() for l in set(layers)}
    try:
        yield
    finally:
        with torch.no_grad():
            for l, w in saved.items():
                arch.value_slots(lm.model, lm.family, l).copy_(w)


def word_embedding(lm: LM, prompt: str, answer: str) -> torch.Tensor:
    """Input embedding [hidden] of the answer's first token as it follows the prompt."""
    left = prompt.split(MASK)[0] if lm.masked else prompt
    return lm.model.get_input_embeddings().weight[answer_ids(lm, left, answer)[0]].detach()


@contextmanager
def update_fact(lm: LM, neurons, prompt: str, old: str, new: str, *, lambda1: float = 1.0,
                lambda2: float = 8.0) -> Iterator[None]:
    """Inside the block the fact reads `new` instead of `old` (value slots of `neurons` edited)."""
    by_layer = check_neurons(lm, neurons)
    e_old, e_new = word_embedding(lm, prompt, old), word_embedding(lm, prompt, new)
    with _slots_restored(lm, by_layer):
        with torch.no_grad():
            for l, idx in by_layer.items():
                slots = arch.value_slots(lm.model, lm.family, l)
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
                arch.value_slots(lm.model, lm.family, l)[idx] = 0
        yield


def scores(lm: LM, items: Sequence[tuple[str, str]]) -> tuple[float, float]:
    """(accuracy, perplexity) over (prompt, answer) pairs: share whose answer's first token is top-1,
    and exp(mean -log P(answer | prompt)). NaN for no items."""
    if not items:
        return float("nan"), float("nan")
    stats = [answer_stats(lm, p, a) for p, a in items]
    acc = sum(r == 0 for _, r in stats) / len(stats)
    return acc, math.exp(sum(-math.log(max(q, 1e-30)) for q, _ in stats) / len(stats))


def perplexity(lm: LM, items: Sequence[tuple[str, str]]) -> float:
    """exp(mean -log P(answer | prompt)) over (prompt, answer) pairs."""
    return scores(lm, items)[1]


def accuracy(lm: LM, items: Sequence[tuple[str, str]]) -> float:
    """Share of (prompt, answer) pairs whose answer's first token is the top-1 prediction."""
    return scores(lm, items)[0]


def most_frequent(kns: Sequence[Sequence[tuple[int, int]]], k: int = 20) -> list[tuple[int, int]]:
    """The k neurons that are knowledge neurons of the most facts (relation erasing's choice)."""
    from .locate import shared_counts

    return [n for n, _ in shared_counts(kns).most_common(k)]


# -- the paper's experiments over a dataset run (kn.run) -------------------------------------------
def _run_items(run) -> tuple[dict, dict]:
    """{fact_id: [(prompt, answer)]} and {fact_id: relation} of the run's facts located without error."""
    ok = run.facts[run.facts.error.isna() & run.facts.answer.notna()]
    answer = dict(zip(ok.fact_id, ok.answer))
    items: dict[str, list] = {}
    for fid, prompt in zip(run.prompts.fact_id, run.prompts.prompt):
        if fid in answer:
            items.setdefault(fid, []).append((prompt, answer[fid]))
    return items, dict(zip(ok.fact_id, ok.relation))


def _first_token(lm: LM, prompt: str, answer: str) -> int:
    return answer_ids(lm, prompt.split(MASK)[0] if lm.masked else prompt, answer)[0]


def update_facts(lm: LM, run, *, per_relation: int = 10, max_share: float = 0.1, side_facts: int = 5,
                 lambda1: float = 1.0, lambda2: float = 8.0, seed: int = 0, progress: bool = True):
    """Fact updating over a run (Dai et al. 2022, 5.1): one row per edit (pandas DataFrame).

    Per relation, up to `per_relation` facts (seeded order) whose answer is top-1 on at least one of
    their prompts; knowledge neurons shared by more than `max_share` of the relation's located facts
    are left out (a neuron of the fact alone is always kept); the new object is that of another fact
    of the relation (seeded). Measured on the prompts where the old answer was top-1: `success`, the
    share where the new object is top-1 after the edit, and `changed`, where the old one no longer is;
    then accuracy and perplexity of `side_facts` other facts of the same relation (intra) and of
    other relations (inter), before and after. The same edit through as many random neurons of the
    same layers is the control (`random_success`, `random_changed`). The model is restored after each.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    items, relation_of = _run_items(run)
    neurons = run.neurons
    located = run.relations.set_index("relation").facts_located
    gen = torch.Generator().manual_seed(seed)
    rows = []
    by_rel: dict[str, list] = {}
    for fid, rel in relation_of.items():
        by_rel.setdefault(rel, []).append(fid)
    work = []
    for rel, fids in by_rel.items():
        order = sorted(fids)
        random.Random(f"{seed}|update|{rel}").shuffle(order)
        work.append((rel, order))
    bar = tqdm(total=sum(min(per_relation, len(o)) for _, o in work), desc="edits", disable=not progress)
    for rel, order in work:
        nb = neurons[neurons.relation == rel]
        n_loc = max(int(located.get(rel, 0)), 1)
        done = 0
        for fid in order:
            if done >= per_relation:
                break
            mine = nb[nb.fact_id == fid]
            keep = mine[(mine.n_facts_sharing <= max_share * n_loc) | (mine.n_facts_sharing == 1)]
            kns = [(int(l), int(i)) for l, i in zip(keep.layer, keep["index"])]
            if not kns:
                continue
            old = items[fid][0][1]
            right = [(p, a) for p, a in items[fid] if answer_stats(lm, p, a)[1] == 0]
            if not right:
                continue
            rng = random.Random(f"{seed}|update|{fid}")
            others = [f for f in by_rel[rel] if f != fid]
            news = [items[f][0][1] for f in others
                    if _first_token(lm, right[0][0], items[f][0][1]) != _first_token(lm, right[0][0], old)]
            if not news:
                continue
            new = rng.choice(sorted(set(news)))
            intra = [x for f in rng.sample(others, min(side_facts, len(others))) for x in items[f]]
            other_rel = sorted(f for f, r in relation_of.items() if r != rel)
            inter = [x for f in rng.sample(other_rel, min(side_facts, len(other_rel))) for x in items[f]]
            layers = [l for l, _ in kns]
            rand = sorted({(l, int(torch.randint(lm.width, (1,), generator=gen))) for l in layers})
            row = {"relation": rel, "fact_id": fid, "old": old, "new": new, "n_neurons": len(kns),
                   "n_prompts": len(right)}
            row["intra_acc_before"], row["intra_ppl_before"] = scores(lm, intra)
            row["inter_acc_before"], row["inter_ppl_before"] = scores(lm, inter)
            for tag, chosen in (("", kns), ("random_", rand)):
                with update_fact(lm, chosen, right[0][0], old, new, lambda1=lambda1, lambda2=lambda2):
                    row[f"{tag}success"] = sum(answer_stats(lm, p, new)[1] == 0 for p, _ in right) / len(right)
                    row[f"{tag}changed"] = sum(answer_stats(lm, p, old)[1] != 0 for p, _ in right) / len(right)
                    if not tag:
                        row["intra_acc_after"], row["intra_ppl_after"] = scores(lm, intra)
                        row["inter_acc_after"], row["inter_ppl_after"] = scores(lm, inter)
            rows.append(row)
            done += 1
            bar.update()
    bar.close()
    return pd.DataFrame(rows, columns=UPDATE_COLUMNS)


UPDATE_COLUMNS = ["relation", "fact_id", "old", "new", "n_neurons", "n_prompts", "success", "changed",
                  "random_success", "random_changed", "intra_acc_before", "intra_acc_after", "intra_ppl_before",
                  "intra_ppl_after", "inter_acc_before", "inter_acc_after", "inter_ppl_before", "inter_ppl_after"]


def erase_relations(lm: LM, run, relations: Sequence[str], *, k: int = 20, progress: bool = True):
    """Relation erasing over a run (Dai et al. 2022, 5.2): one row per erased relation (DataFrame).

    The relation's `k` most frequent knowledge neurons are zeroed; accuracy (answer's first token
    top-1) and perplexity on every prompt of the relation's facts and of all other relations' facts,
    before and after.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    items, relation_of = _run_items(run)
    rows = []
    for rel in tqdm(relations, desc="erasing", disable=not progress):
        if rel not in set(relation_of.values()):
            raise ValueError(f"relation {rel!r} has no located fact in this run; it has "
                             f"{', '.join(sorted(set(relation_of.values())))}")
        nb = run.neurons[run.neurons.relation == rel]
        kns = most_frequent([list(zip(g.layer.astype(int), g["index"].astype(int))) for _, g in nb.groupby("fact_id")], k)
        mine = [x for f, r in relation_of.items() if r == rel for x in items.get(f, [])]
        rest = [x for f, r in relation_of.items() if r != rel for x in items.get(f, [])]
        row = {"relation": rel, "n_neurons": len(kns), "n_prompts": len(mine), "n_other_prompts": len(rest)}
        row["acc_before"], row["ppl_before"] = scores(lm, mine)
        row["other_acc_before"], row["other_ppl_before"] = scores(lm, rest)
        with erase(lm, kns):
            row["acc_after"], row["ppl_after"] = scores(lm, mine)
            row["other_acc_after"], row["other_ppl_after"] = scores(lm, rest)
        rows.append(row)
    return pd.DataFrame(rows)
