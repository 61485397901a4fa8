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
    return samples(lm, [prompt], max_length, top_k=top_k, seeds=[seed])[0]


def samples(lm: LM, prompts: Sequence[str], max_length: int = 100, *, top_k: int = 5,
            seeds: Sequence[int]) -> list[str]:
    """`sample` of each prompt with its own seed, decoded together: a causal LM's passes read its
    weights once for every row, which is most of a token's cost on a CPU. Rows of at most SAMPLE_ROWS
    prompts; each prompt's tokens right-aligned over one key/value cache (`kn.probing.prefix_cache`),
    each new token placed at its own row's next position."""
    from ..checks import ArgumentError
    from ..tokens import max_positions

    if lm.masked:
        raise ArgumentError(f"{lm.name} is a masked LM: sampling a continuation needs a causal LM")
    if len(seeds) != len(prompts):
        raise ArgumentError(f"seeds: one per prompt ({len(prompts)}), got {len(seeds)}")
    limit = min(max_length, max_positions(lm) or max_length)
    ids = [lm.tokenizer(p).input_ids for p in prompts]
    out: list[str] = []
    for s in range(0, len(prompts), SAMPLE_ROWS):
        out += _decoded(lm, ids[s:s + SAMPLE_ROWS], limit, top_k, seeds[s:s + SAMPLE_ROWS])
    return out


SAMPLE_ROWS = 128  # prompts decoded in one batch (memory, not results)


def _decoded(lm: LM, seqs: list[list[int]], limit: int, top_k: int, seeds: Sequence[int]) -> list[str]:
    """The rows `seqs` (token ids) each continued to `limit` tokens (or its end-of-text), in one batch."""
    from ..ig.kvcache import fresh, keyword, positions
    from ..probing import prefix_cache
    from ..tokens import pad_id

    dev, n = lm.device, len(seqs)
    stored, keep = prefix_cache(lm, seqs, pad_id(lm))
    cache = fresh(lm, stored, [n] * len(stored or ()))
    gens = [torch.Generator(device="cpu").manual_seed(int(x)) for x in seeds]
    out = [list(s) for s in seqs]
    live = [len(s) < limit for s in seqs]
    mask = keep.to(dev).long()
    step = torch.tensor([[s[-1]] for s in seqs], device=dev)
    at = torch.tensor([[len(s) - 1] for s in seqs], device=dev)
    eos = lm.tokenizer.eos_token_id
    with torch.no_grad():
        while any(live):
            mask = torch.cat([mask, torch.ones((n, 1), dtype=torch.long, device=dev)], dim=1)
            logits = lm.model(input_ids=step, attention_mask=mask, use_cache=True, **keyword(lm.model, cache),
                              **positions(lm.model, at)).logits[:, -1].float().cpu()
            if not torch.isfinite(logits).all():
                raise FloatingPointError(f"{lm.name}'s next-token logits are not finite (NaN or inf) on "
                                         f"{int((~torch.isfinite(logits).all(-1)).sum())} of {n} prompts: its "
                                         "weights (an edit's?) leave nothing to sample from")
            top = logits.topk(min(top_k, logits.shape[-1]))
            nxt = [int(top.indices[r, torch.multinomial(torch.softmax(top.values[r], -1), 1, generator=gens[r])])
                   for r in range(n)]
            for r in range(n):
                if live[r]:
                    out[r].append(nxt[r])
                    live[r] = nxt[r] != eos and len(out[r]) < limit
            step, at = torch.tensor([[x] for x in nxt], device=dev), at + 1
    return [lm.tokenizer.decode(o, skip_special_tokens=True) for o in out]
