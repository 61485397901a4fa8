"""An edit measured the way the field measures it (EasyEdit `evaluate/evaluate_utils.py`, read for the
definitions; `../shared/design/successors.md` section 1):

- reliability: teacher-forced token accuracy of the new object on the editing prompts (mean over the
  object's tokens of [argmax at the preceding position == the token], the gold prefix fed);
- generalization: the same on held paraphrases (prompts no method saw);
- locality: on neighbours' prompts, the share of answer positions whose argmax is the same after the
  edit as before (teacher forced with the neighbour's own object; correctness is not checked); and
  its KL: KL(before || after) of the next-token distribution at the end of each neighbour's prompt;
- fluency: ROME's generation entropy, H2 / 3 + 2 H3 / 3 of a text sampled from the editing prompt
  (top-k 5, at most 100 tokens with the prompt, seeded), H_n the entropy in bits of its word n-gram
  counts (words: runs of letters or digits and single other characters, where ROME uses nltk).
Each is a mean over prompts; a table averages them over edits.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Sequence

import torch

from ..models import LM
from ..probing import target_logits


def readings(lm: LM, prompt: str, answer: str) -> tuple[list[int], torch.Tensor]:
    """(the argmax at each of the answer's positions, the gold tokens before it fed (teacher forced); the
    log-probabilities [vocab] (float32, CPU) at the position that predicts the answer's first token):
    what locality compares before and after an edit."""
    return readings_of(lm, [(prompt, answer)])[0]


def readings_of(lm: LM, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], torch.Tensor]]:
    """`readings` of each (prompt, answer) pair, from a few batched passes (`kn.probing.target_logits`)."""
    tops: list[dict[int, int]] = [{} for _ in pairs]
    first: list = [None] * len(pairs)
    for i, j, _, logits in target_logits(lm, pairs):
        tops[i][j] = int(logits.argmax())
        if j == 0:
            first[i] = torch.log_softmax(logits, -1).cpu()
    return [([t[j] for j in sorted(t)], f) for t, f in zip(tops, first)]


def kl(before: Sequence[torch.Tensor], after: Sequence[torch.Tensor]) -> float:
    """Locality's KL: mean over prompts of KL(before || after) in nats, each a pair of log-probability
    vectors [vocab]; NaN for none."""
    if not before:
        return math.nan
    return sum(float((b.exp() * (b - a)).sum()) for b, a in zip(before, after)) / len(before)


def token_accuracies(lm: LM, items: Sequence[tuple[str, str]]) -> list[float]:
    """Per (prompt, answer) pair, the mean over the answer's tokens of [the model's argmax is that token],
    teacher forced, from a few batched passes."""
    hits: list[list[bool]] = [[] for _ in items]
    for i, _, gold, logits in target_logits(lm, items):
        hits[i].append(int(logits.argmax()) == gold)
    return [sum(h) / len(h) for h in hits]


def token_accuracy(lm: LM, prompt: str, answer: str) -> float:
    """`token_accuracies` of one pair."""
    return token_accuracies(lm, [(prompt, answer)])[0]


def accuracy(lm: LM, items: Sequence[tuple[str, str]]) -> float:
    """Mean token accuracy over (prompt, answer) pairs; NaN for none."""
    return sum(token_accuracies(lm, items)) / len(items) if items else math.nan


def agreement(before: Sequence[Sequence[int]], after: Sequence[Sequence[int]]) -> float:
    """Locality: mean over prompts of the share of positions whose argmax did not change; NaN for none."""
    if not before:
        return math.nan
    return sum(sum(x == y for x, y in zip(b, a)) / len(b) for b, a in zip(before, after)) / len(before)


def words(text: str) -> list[str]:
    """Runs of letters or digits, and every other non-space character on its own."""
    return re.findall(r"\w+|[^\w\s]", text)


def ngram_entropy(tokens: Sequence[str], n: int) -> float:
    """Entropy in bits of the counts of `tokens`' n-grams (0 for none)."""
    counts = Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0


def fluency(text: str) -> float:
    """ROME's generation entropy of one text: (2/3 H2 + 4/3 H3) / 2 over its words."""
    w = words(text)
    return (2 / 3 * ngram_entropy(w, 2) + 4 / 3 * ngram_entropy(w, 3)) / 2


def sample(lm: LM, prompt: str, max_length: int = 100, *, top_k: int = 5, seed: int = 0) -> str:
    """The prompt and its continuation sampled top-k (`max_length` tokens in all, as ROME counts them,
    at most the model's positions), from a generator seeded by `seed` (the global RNG untouched)."""
    from ..ig.kvcache import empty, keyword
    from ..tokens import max_positions

    ids = lm.tokenizer(prompt, return_tensors="pt").input_ids.to(lm.device)
    limit = min(max_length, max_positions(lm) or max_length)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    cache, step_ids, out = empty(lm), ids, ids[0].tolist()
    with torch.no_grad():
        while len(out) < limit:
            logits = lm.model(input_ids=step_ids, use_cache=True, **keyword(lm.model, cache)).logits[0, -1]
            top = logits.float().cpu().topk(min(top_k, logits.numel()))
            nxt = int(top.indices[torch.multinomial(torch.softmax(top.values, -1), 1, generator=gen)])
            out.append(nxt)
            if nxt == lm.tokenizer.eos_token_id:
                break
            step_ids = torch.tensor([[nxt]], device=lm.device)
    return lm.tokenizer.decode(out, skip_special_tokens=True)
