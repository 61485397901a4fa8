"""What the model predicts: top-k answers and the probability of a given answer."""
from __future__ import annotations

from typing import NamedTuple

import torch

from . import checks
from .hooks import head_at, head_from, hooked
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
    quantity in log space; a sentence target's answer: the sentence from the object on)."""
    return answer_logprobs(lm, prompt, [answer])[0]


def answer_logprobs(lm: LM, prompt: str, answers) -> list[float]:
    """`answer_logprob` of each of `answers` after the same `prompt` (candidates ranked as BMLAMA ranks
    them). A causal LM takes one forward pass for all: each answer a row, right-padded (a causal position
    never sees what follows it), every answer token's position read at once; a masked LM one pass per token."""
    answers = checks.texts(answers, "answers")
    rows = [targets(lm, prompt, a) for a in answers]
    if lm.masked:
        return [sum(float(torch.log(_probs_at(lm, t.ids, t.pos)[t.gold])) for t in ts) for ts in rows]
    seqs = [ts[-1].ids[0].tolist() for ts in rows]  # prompt + answer but its last token
    width, start = max(map(len, seqs)), min(ts[0].pos for ts in rows)
    ids = torch.tensor([s + [s[-1]] * (width - len(s)) for s in seqs], device=lm.device)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=lm.device)
    with torch.no_grad(), hooked([head_from(lm, start)]):
        logits = lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
    out = []
    for b, ts in enumerate(rows):
        at = logits[b, [t.pos - start for t in ts]]  # [answer tokens, vocab]
        gold = torch.tensor([t.gold for t in ts], device=at.device)
        out.append(float((at.gather(1, gold[:, None])[:, 0] - torch.logsumexp(at, dim=-1)).sum()))
    return out


def answer_prob(lm: LM, prompt: str, answer: str) -> float:
    """P(answer | prompt): the product of the teacher-forced probabilities of its tokens."""
    return answer_stats(lm, prompt, answer)[0]


def answer_rank(lm: LM, prompt: str, answer: str) -> int:
    """Rank (0 = top-1) of the answer's first token among the predictions."""
    t = targets(lm, prompt, answer)[0]
    p = _probs_at(lm, t.ids, t.pos)
    return int((p > p[t.gold]).sum())
