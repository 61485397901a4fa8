"""From attribution scores to knowledge neurons (Dai et al. 2022, section 3.2)."""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from . import checks
from .attribution import scores as neuron_scores
from .models import LM
from .neuron import Neuron
from .settings import IG, Activation, Settings, resolve

log = logging.getLogger(__name__)

THRESHOLDS = {"ig": IG.coarse_threshold, "activation": Activation.coarse_threshold}  # by the older method names


def coarse(scores: torch.Tensor, threshold: float = 0.2) -> set[Neuron]:
    """Neurons of one prompt with score >= threshold * max(scores) [n_layers, width]; never a non-positive score."""
    threshold = checks.number(threshold, "threshold", low=0.0, high=1.0)
    if not torch.isfinite(scores).all():
        raise checks.ArgumentError("scores hold NaN or infinite values; attribute again (a smaller batch_size "
                                   "or float32 weights avoid overflow)")
    top = float(scores.max())
    if top <= 0:
        return set()
    keep = (scores >= threshold * top) & (scores > 0)
    return {(int(l), int(i)) for l, i in keep.nonzero().tolist()}


def top(scores: torch.Tensor, k: int) -> list[tuple[int, int, float]]:
    """The `k` highest of scores [n_layers, width] as (layer, index, score), best first."""
    v, i = torch.topk(scores.flatten(), min(k, scores.numel()))
    width = scores.shape[1]
    return [(int(j) // width, int(j) % width, float(x)) for x, j in zip(v, i)]


def min_count(n_prompts: int, share: float, min_prompts: int = 3) -> int:
    """A neuron must survive the coarse filter in at least max(share * n, min_prompts) prompts."""
    return max(math.ceil(share * n_prompts - 1e-9), min_prompts)


def refine(per_prompt: Sequence[set[Neuron]], share: float = 0.7, min_prompts: int = 3) -> list[Neuron]:
    """Neurons found in at least max(share * n, min_prompts) of the prompts' coarse sets, sorted."""
    share = checks.number(share, "share", low=0.0, high=1.0)
    min_prompts = checks.integer(min_prompts, "min_prompts", low=1)
    need = min_count(len(per_prompt), share, min_prompts)
    counts = Counter(n for s in per_prompt for n in s)
    return sorted(n for n, c in counts.items() if c >= need)


def settings_of(settings: Settings | None = None, *, method: str | None = None, steps=None, rule=None,
                baseline=None, freeze_norm=None, batch_size=None) -> Settings:
    """The settings value of the keyword forms of `locate` / `prompt_sets` (see `kn.settings.resolve`).
    With the older `method="activation"`, the IG keywords are ignored, as they always were."""
    ig_kw = dict(steps=steps, rule=rule, baseline=baseline, freeze_norm=freeze_norm, batch_size=batch_size)
    if method == "activation" and settings is None:
        return resolve(method=method)
    return resolve(settings, method=method, **ig_kw)


def per_prompt(answer: str | Sequence[str], n: int) -> list[str]:
    """`answer` for each of `n` prompts: one string for all, or a sequence of `n` (one per prompt)."""
    if isinstance(answer, str):
        return [checks.text(answer, "answer")] * n
    answers = checks.texts(answer, "answer")
    if len(answers) != n:
        raise checks.ArgumentError(f"{len(answers)} answers for {n} prompts: pass one answer, or one per prompt")
    return answers


def _scored(lm: LM, prompts: list[str], answer, s: Settings, threshold: float | None, layers, progress: bool):
    """(prompt, scores, coarse set) of each prompt, one at a time."""
    t = s.coarse_threshold if threshold is None else checks.number(threshold, "threshold", low=0.0, high=1.0)
    pairs = list(zip(prompts, per_prompt(answer, len(prompts))))
    for p, a in tqdm(pairs, desc="prompts", disable=not progress, leave=False):
        sc = neuron_scores(lm, p, a, s, layers=layers)
        yield p, sc, coarse(sc, t)


def prompt_sets(lm: LM, prompts: Sequence[str], answer: str | Sequence[str], settings: Settings | None = None, *,
                threshold: float | None = None, steps: int | None = None, rule: str | None = None,
                baseline=None, freeze_norm: bool | None = None, batch_size: int | None = None, layers=None,
                method: str | None = None, progress: bool = False) -> list[set[Neuron]]:
    """The coarse set of each prompt: neurons scored by `settings` (default `kn.IG()`; the keywords
    override its fields; `method` "ig" | "activation" is the older form) kept at `threshold` (default:
    the settings' `coarse_threshold`, 0.2 for IG, 0.5 for activation). `answer`: one for every
    prompt, or one per prompt (as `kn.data.prepare` gives them)."""
    s = settings_of(settings, method=method, steps=steps, rule=rule, baseline=baseline,
                    freeze_norm=freeze_norm, batch_size=batch_size)
    prompts = checks.texts(prompts, "prompts")
    return [found for _, _, found in _scored(lm, prompts, answer, s, threshold, layers, progress)]


@dataclass(frozen=True)
class Located:
    """The knowledge neurons of a fact and, per prompt, the scores [n_layers, width] and the coarse
    set they were found from (`locate_with_scores`)."""

    neurons: list[Neuron]
    scores: list[torch.Tensor]
    sets: list[set[Neuron]]

    def mean_scores(self) -> torch.Tensor:
        """The scores [n_layers, width] averaged over the prompts."""
        return torch.stack(self.scores).mean(0)

    def prompt_counts(self) -> dict[Neuron, int]:
        """For each knowledge neuron, the number of prompts whose coarse set holds it."""
        return {n: sum(n in found for found in self.sets) for n in self.neurons}


def locate_with_scores(lm: LM, prompts: Sequence[str], answer: str | Sequence[str], settings: Settings | None = None,
                       *, threshold: float | None = None, share: float = 0.7, min_prompts: int = 3,
                       steps: int | None = None, rule: str | None = None, baseline=None,
                       freeze_norm: bool | None = None, batch_size: int | None = None, layers=None,
                       method: str | None = None, progress: bool = False,
                       on_prompt: Callable[[str, set[Neuron]], None] | None = None) -> Located:
    """`locate`, keeping what it found the neurons from (a `Located`). The arguments are `locate`'s;
    on_prompt(prompt, coarse_set) is called as each prompt is attributed."""
    prompts = checks.texts(prompts, "prompts")
    s = settings_of(settings, method=method, steps=steps, rule=rule, baseline=baseline,
                    freeze_norm=freeze_norm, batch_size=batch_size)  # validate before any model work
    share = checks.number(share, "share", low=0.0, high=1.0)
    min_prompts = checks.integer(min_prompts, "min_prompts", low=1)
    if len(prompts) < min_prompts:
        raise ValueError(
            f"{len(prompts)} prompt(s) given, but a knowledge neuron must be found in at least min_prompts="
            f"{min_prompts} of them; pass more paraphrases or lower min_prompts"
        )
    scores, sets = [], []
    for p, sc, found in _scored(lm, prompts, answer, s, threshold, layers, progress):
        scores.append(sc)
        sets.append(found)
        if on_prompt is not None:
            on_prompt(p, found)
    return Located(refine(sets, share, min_prompts), scores, sets)


def locate(lm: LM, prompts: Sequence[str], answer: str | Sequence[str], settings: Settings | None = None, *,
           threshold: float | None = None, share: float = 0.7, min_prompts: int = 3, steps: int | None = None,
           rule: str | None = None, baseline=None, freeze_norm: bool | None = None, batch_size: int | None = None,
           layers=None, method: str | None = None, progress: bool = False) -> list[Neuron]:
    """The knowledge neurons [(layer, index), ...] of a fact from its paraphrase prompts.

    answer: the object, for every prompt, or one answer per prompt (`PreparedFact.answers`);
    settings: `kn.IG(...)` (default) or `kn.Activation()`; steps, rule, baseline, freeze_norm,
    batch_size: override the IG fields; threshold: coarse filter t (default: the settings'
    `coarse_threshold`, 0.2 for IG, 0.5 for activation); share: refinement p; min_prompts: the floor of
    the refinement count (3 in the paper); method: the older "ig" | "activation" form of settings.
    With the per-prompt scores and coarse sets: `locate_with_scores`.
    """
    return locate_with_scores(lm, prompts, answer, settings, threshold=threshold, share=share,
                              min_prompts=min_prompts, steps=steps, rule=rule, baseline=baseline,
                              freeze_norm=freeze_norm, batch_size=batch_size, layers=layers, method=method,
                              progress=progress).neurons


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
