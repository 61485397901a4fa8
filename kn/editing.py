"""Editing facts through the FFN value slots (Dai et al. 2022, section 5).

Fact updating moves each knowledge neuron's value slot v_i away from the old object's word embedding
and towards the new one's:
    v_i <- v_i - lambda1 * |v_i| / |e_old| * e_old + lambda2 * |v_i| / |e_new| * e_new
Relation erasing zeroes the value slots of a relation's most frequent knowledge neurons.
Both are context managers: the slots are restored bit-identically on exit, also after an exception.
Objects of several tokens are represented by their first token (the one that must become top-1).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterable, Iterator, Sequence

import torch

from . import arch
from .interventions import check_neurons
from .models import LM, MASK
from .probing import answer_prob, answer_rank
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


def perplexity(lm: LM, items: Sequence[tuple[str, str]]) -> float:
    """exp(mean -log P(answer | prompt)) over (prompt, answer) pairs."""
    if not items:
        return float("nan")
    nll = [-math.log(max(answer_prob(lm, p, a), 1e-30)) for p, a in items]
    return math.exp(sum(nll) / len(nll))


def accuracy(lm: LM, items: Sequence[tuple[str, str]]) -> float:
    """Share of (prompt, answer) pairs whose answer's first token is the top-1 prediction."""
    return sum(answer_rank(lm, p, a) == 0 for p, a in items) / len(items) if items else float("nan")


def most_frequent(kns: Sequence[Sequence[tuple[int, int]]], k: int = 20) -> list[tuple[int, int]]:
    """The k neurons that are knowledge neurons of the most facts (relation erasing's choice)."""
    from .locate import shared_counts

    return [n for n, _ in shared_counts(kns).most_common(k)]
