"""Do the located neurons carry the fact? Suppress and amplify them (Dai et al. 2022, section 4.2)."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from . import checks
from .interventions import AMPLIFY_FACTOR, SUPPRESS_FACTOR, scaled, stackable
from .models import LM
from .probing import batch_stats_under


@dataclass
class Effect:
    """Per-prompt P(gold) before and after each intervention, [n_prompts] each."""

    before: np.ndarray
    suppressed: np.ndarray
    amplified: np.ndarray

    @property
    def suppression(self) -> float:
        """Relative change of mean P(gold) under suppression (ratio of means)."""
        return ratio_of_means(self.before, self.suppressed)

    @property
    def amplification(self) -> float:
        return ratio_of_means(self.before, self.amplified)


@dataclass
class Verification:
    fact: Effect
    control: Effect | None = None
    neurons: list = field(default_factory=list)

    def summary(self) -> dict:
        out = {"n_neurons": len(self.neurons), "suppression": self.fact.suppression,
               "amplification": self.fact.amplification}
        if self.control is not None:
            out |= {"control_suppression": self.control.suppression,
                    "control_amplification": self.control.amplification}
        return out


def ratio_of_means(before, after) -> float:
    """mean(after - before) / mean(before): the paper's relative change."""
    before, after = np.asarray(before, float), np.asarray(after, float)
    return float(np.mean(after - before) / np.mean(before)) if len(before) and np.mean(before) > 0 else float("nan")


def effect(lm: LM, prompts: Sequence[str], answer, neurons, factor: float = AMPLIFY_FACTOR,
           suppress_factor: float = SUPPRESS_FACTOR) -> Effect:
    """P(gold) of each prompt before, with `neurons` multiplied by `suppress_factor` (0) and by `factor`.
    answer: one for every prompt, or one per prompt (checked inputs). The conditions are one batched
    measurement over all the prompts (`kn.probing.batch_stats_under`), equal to `answer_prob` per prompt."""
    return effects(lm, [(prompts, answer)], neurons, factor, suppress_factor)[0]


def effects(lm: LM, groups: Sequence[tuple[Sequence[str], object]], neurons, factor: float = AMPLIFY_FACTOR,
            suppress_factor: float = SUPPRESS_FACTOR) -> list[Effect]:
    """`effect` of each (prompts, answer) group (a fact and its controls) under the same neurons, every
    group's prompts in the same batched measurement (`kn.probing.batch_stats_under`: a causal LM runs
    the prompts' tokens but each row's last once, then that last token under the three conditions
    stacked in one pass); an `Effect` per group."""
    prompts, answers, sizes = [], [], []
    for ps, answer in groups:
        ps = list(ps)
        prompts += ps
        answers += [answer] * len(ps) if isinstance(answer, str) else list(answer)
        sizes.append(len(ps))
    if len(answers) != len(prompts):
        raise checks.ArgumentError(f"{len(prompts)} prompts but {len(answers)} answers; pass one answer or one per prompt")

    neurons = checks.neurons(lm, neurons)  # read once: every condition of every pass sees them
    factor, suppress_factor = checks.number(factor, "factor"), checks.number(suppress_factor, "suppress_factor")
    conditions = [nullcontext, stackable(lambda: scaled(lm, neurons, suppress_factor)),
                  stackable(lambda: scaled(lm, neurons, factor))]
    before, sup, amp = (np.array([p for p, _ in st], dtype=float)
                        for st in batch_stats_under(lm, list(zip(prompts, answers)), conditions))
    cut = np.cumsum([0] + sizes)
    return [Effect(before[i:j], sup[i:j], amp[i:j]) for i, j in zip(cut[:-1], cut[1:])]


def verify(lm: LM, prompts: Sequence[str], answer: str, neurons, *, control_prompts: Sequence[str] | None = None,
           control_answer: str | None = None, factor: float = AMPLIFY_FACTOR) -> Verification:
    """The effect of suppressing (x0) and amplifying (x factor) `neurons` on the fact, and on a control
    fact. `prompts` and `control_prompts`: one prompt or a list; `neurons`: any iterable of pairs."""
    prompts = checks.texts(prompts, "prompts")
    checks.text(answer, "answer")
    neurons = checks.neurons(lm, neurons)  # read once: suppress and amplify both see them
    factor = checks.number(factor, "factor")
    control = None
    if control_prompts is not None:
        if control_answer is None:
            raise checks.ArgumentError("control_prompts need their control_answer; pass control_answer=")
        control_prompts = checks.texts(control_prompts, "control_prompts")
        control = effect(lm, control_prompts, checks.text(control_answer, "control_answer"), neurons, factor)
    elif control_answer is not None:
        raise checks.ArgumentError("control_answer was given without control_prompts; pass control_prompts=")
    return Verification(effect(lm, prompts, answer, neurons, factor), control, neurons)


def first_control(relations: Sequence[str], i: int) -> int:
    """The control of fact i among facts of these relations (in order): the first fact of another
    relation, else the next fact (the first after the last)."""
    others = [j for j, r in enumerate(relations) if r != relations[i]]
    return others[0] if others else (i + 1) % len(relations)


def effects_table(verified):
    """A row per (fact, measured on, condition) of `verified`: (answer, `Verification` with a control,
    the control's answer) triples. Columns: answer, target ("fact" or "control"), measured on ("fact"
    or "control: " + its answer), condition (suppress, amplify), mean P before and after, and the
    relative change (ratio of means)."""
    import pandas as pd

    rows = []
    for answer, result, control_answer in verified:
        for target, measured, e in (("fact", "fact", result.fact), ("control", f"control: {control_answer}",
                                                                     result.control)):
            rows += [{"answer": answer, "target": target, "measured on": measured, "condition": condition,
                      "mean P before": e.before.mean(), "mean P after": after.mean(), "relative change": change}
                     for condition, after, change in (("suppress", e.suppressed, e.suppression),
                                                      ("amplify", e.amplified, e.amplification))]
    return pd.DataFrame(rows)
