"""From attribution scores to knowledge neurons (Dai et al. 2022, section 3.2)."""
from __future__ import annotations

import logging
import math
from collections import Counter
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .attribution import activations, attribute
from .models import LM

log = logging.getLogger(__name__)

Neuron = tuple[int, int]
THRESHOLDS = {"ig": 0.2, "activation": 0.5}


def coarse(scores: torch.Tensor, threshold: float = 0.2) -> set[Neuron]:
    """Neurons of one prompt with score >= threshold * max(scores) [n_layers, width]; never a non-positive score."""
    top = float(scores.max())
    if top <= 0:
        return set()
    keep = (scores >= threshold * top) & (scores > 0)
    return {(int(l), int(i)) for l, i in keep.nonzero().tolist()}


def min_count(n_prompts: int, share: float, min_prompts: int = 3) -> int:
    """A neuron must survive the coarse filter in at least max(share * n, min_prompts) prompts."""
    return max(math.ceil(share * n_prompts - 1e-9), min_prompts)


def refine(per_prompt: Sequence[set[Neuron]], share: float = 0.7, min_prompts: int = 3) -> list[Neuron]:
    """Neurons found in at least max(share * n, min_prompts) of the prompts' coarse sets, sorted."""
    need = min_count(len(per_prompt), share, min_prompts)
    counts = Counter(n for s in per_prompt for n in s)
    return sorted(n for n, c in counts.items() if c >= need)


def prompt_sets(lm: LM, prompts: Sequence[str], answer: str, *, threshold: float | None = None,
                method: str = "ig", steps: int = 20, progress: bool = False, **attribute_kw) -> list[set[Neuron]]:
    """The coarse set of each prompt."""
    if method not in THRESHOLDS:
        raise ValueError(f"method must be one of {list(THRESHOLDS)}, got {method!r}")
    t = THRESHOLDS[method] if threshold is None else threshold
    out = []
    for p in tqdm(prompts, desc="prompts", disable=not progress, leave=False):
        scores = (attribute(lm, p, answer, steps=steps, **attribute_kw) if method == "ig"
                  else activations(lm, p, answer))
        out.append(coarse(scores, t))
    return out


def locate(lm: LM, prompts: Sequence[str], answer: str, *, threshold: float | None = None, share: float = 0.7,
           min_prompts: int = 3, method: str = "ig", steps: int = 20, progress: bool = False,
           **attribute_kw) -> list[Neuron]:
    """The knowledge neurons [(layer, index), ...] of a fact from its paraphrase prompts.

    threshold: coarse filter t (default 0.2 for "ig", 0.5 for "activation"); share: refinement p;
    min_prompts: the floor of the refinement count (3 in the paper).
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if len(prompts) < min_prompts:
        raise ValueError(
            f"{len(prompts)} prompt(s) given, but a knowledge neuron must be found in at least min_prompts="
            f"{min_prompts} of them; pass more paraphrases or lower min_prompts"
        )
    sets = prompt_sets(lm, prompts, answer, threshold=threshold, method=method, steps=steps,
                       progress=progress, **attribute_kw)
    return refine(sets, share, min_prompts)


def tune_share(facts_sets: Sequence[Sequence[set[Neuron]]], share: float = 0.7, *, low: float = 2, high: float = 5,
               step: float = 0.05, tries: int = 6, min_prompts: int = 3) -> tuple[float, list[list[Neuron]]]:
    """Relation-level share: move it by `step` until the mean KN count per fact is in [low, high].

    facts_sets: per fact, the coarse sets of its prompts. Returns the final share and each fact's neurons
    (at most `tries` evaluations, as in the paper).
    """
    kns: list[list[Neuron]] = []
    for attempt in range(tries):
        kns = [refine(s, share, min_prompts) for s in facts_sets]
        mean = sum(map(len, kns)) / max(len(kns), 1)
        log.info("share %.2f: %.2f neurons per fact", share, mean)
        if low <= mean <= high or attempt == tries - 1:
            break
        share = share - step if mean < low else share + step
    return round(share, 4), kns


def shared_counts(kns: Sequence[Sequence[Neuron]]) -> Counter:
    """How many facts each neuron serves."""
    return Counter(n for fact in kns for n in set(fact))
