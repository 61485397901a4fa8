"""What the model predicts: top-k answers and the probability of a given answer."""
from __future__ import annotations

from typing import NamedTuple

import torch

from . import checks
from .hooks import head_at, hooked
from .models import LM
from .tokens import query, targets


class Prediction(NamedTuple):
    token: str
    prob: float
    id: int


def _probs_at(lm: LM, ids: torch.Tensor, pos: int) -> torch.Tensor:
    """Next-token / [MASK] distribution [vocab] at `pos` (only that position reaches the output layer)."""
    with torch.no_grad(), hooked([head_at(lm, pos)]):
        logits = lm.model(input_ids=ids, use_cache=False).logits
    return torch.softmax(logits[0, -1].float(), dim=-1)


def probe(lm: LM, prompt: str, k: int = 10) -> list[Prediction]:
    """Top-k predictions at the answer position (masked: the [MASK]; causal: the next token)."""
    k = checks.integer(k, "k", low=1, high=lm.tokenizer.vocab_size if hasattr(lm.tokenizer, "vocab_size") else None)
    ids, pos = query(lm, prompt)
    p, i = _probs_at(lm, ids, pos).topk(k)
    return [Prediction(lm.tokenizer.decode([j]).strip(), float(q), int(j)) for q, j in zip(p, i)]


def answer_stats(lm: LM, prompt: str, answer: str) -> tuple[float, int]:
    """(P(answer | prompt), rank of its first token (0 = top-1)) from one pass per answer token."""
    prob, rank = 1.0, -1
    for t in targets(lm, prompt, answer):
        p = _probs_at(lm, t.ids, t.pos)
        prob *= float(p[t.gold])
        if rank < 0:
            rank = int((p > p[t.gold]).sum())
    return prob, rank


def answer_logprob(lm: LM, prompt: str, answer: str) -> float:
    """log P(answer | prompt), the sum of its teacher-forced tokens' log-probabilities (`kn.answer_prob`'s
    quantity in log space; a sentence target's answer: the sentence from the object on). A causal LM
    takes one forward pass (every answer token's position at once), a masked LM one per token."""
    ts = targets(lm, prompt, answer)
    if lm.masked:
        return sum(float(torch.log(_probs_at(lm, t.ids, t.pos)[t.gold])) for t in ts)
    with torch.no_grad():
        logits = lm.model(input_ids=ts[-1].ids, use_cache=False).logits[0].float()
    logp = torch.log_softmax(logits[[t.pos for t in ts]], dim=-1)
    return float(logp[torch.arange(len(ts)), torch.tensor([t.gold for t in ts])].sum())


def answer_prob(lm: LM, prompt: str, answer: str) -> float:
    """P(answer | prompt): the product of the teacher-forced probabilities of its tokens."""
    return answer_stats(lm, prompt, answer)[0]


def answer_rank(lm: LM, prompt: str, answer: str) -> int:
    """Rank (0 = top-1) of the answer's first token among the predictions."""
    t = targets(lm, prompt, answer)[0]
    p = _probs_at(lm, t.ids, t.pos)
    return int((p > p[t.gold]).sum())
