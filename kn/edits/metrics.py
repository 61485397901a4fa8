"""An edit measured the way the field measures it (EasyEdit `evaluate/evaluate_utils.py`, read for the
definitions; `../shared/design/successors.md` section 1):

- reliability: teacher-forced token accuracy of the new object on the editing prompts (mean over the
  object's tokens of [argmax at the preceding position == the token], the gold prefix fed);
- generalization: the same on held paraphrases (prompts no method saw);
- locality: on neighbours' prompts, the share of answer positions whose argmax is the same after the
  edit as before (teacher forced with the neighbour's own object; correctness is not checked).
Each is a mean over prompts; a table averages them over edits.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..models import LM
from ..tokens import targets


def top_tokens(lm: LM, prompt: str, answer: str) -> list[int]:
    """The argmax at each of the answer's positions, the gold tokens before it fed (teacher forced)."""
    out = []
    with torch.no_grad():
        for t in targets(lm, prompt, answer):
            out.append(int(lm.model(input_ids=t.ids, use_cache=False).logits[0, t.pos].argmax()))
    return out


def token_accuracy(lm: LM, prompt: str, answer: str) -> float:
    """Mean over the answer's tokens of [the model's argmax is that token], teacher forced."""
    gold = [t.gold for t in targets(lm, prompt, answer)]
    return sum(a == g for a, g in zip(top_tokens(lm, prompt, answer), gold)) / len(gold)


def accuracy(lm: LM, items: Sequence[tuple[str, str]]) -> float:
    """Mean token accuracy over (prompt, answer) pairs; NaN for none."""
    return sum(token_accuracy(lm, p, a) for p, a in items) / len(items) if items else math.nan


def agreement(before: Sequence[Sequence[int]], after: Sequence[Sequence[int]]) -> float:
    """Locality: mean over prompts of the share of positions whose argmax did not change; NaN for none."""
    if not before:
        return math.nan
    return sum(sum(x == y for x, y in zip(b, a)) / len(b) for b, a in zip(before, after)) / len(before)
