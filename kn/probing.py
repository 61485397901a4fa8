"""What the model predicts: top-k answers and the probability of a given answer."""
from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack
from typing import Callable, NamedTuple, Sequence

import torch

from . import checks
from .hooks import at_rows, head_at, head_from, hooked, stop_at_head
from .ig import kvcache
from .ig.clean import run_to_head
from .interventions import answer_rows, is_stackable, rows_at
from .models import LM
from .tokens import pad_id, query, right_padded, targets

ROW_TOKENS = 4096  # padded tokens per batched forward pass (memory and speed, not results)
LOGIT_FLOATS = 2 ** 26  # and at most this many output logits (rows x vocabulary) per pass


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


def _rows_probs(lm: LM, rows: list, pad: int) -> torch.Tensor:
    """Output distributions [len(rows), vocab] of right-padded rows (ids list, answer position) in one pass,
    each read at its own position, with interventions acting there (`answer_rows`)."""
    return torch.softmax(_rows_logits(lm, rows, pad), dim=-1)


def _rows_logits(lm: LM, rows: list, pad: int) -> torch.Tensor:
    """`_rows_probs`' output logits [len(rows), vocab] (float32)."""
    dev = lm.device
    ids, mask = right_padded([row for row, _ in rows], pad, dev)
    at = torch.tensor([pos for _, pos in rows], device=dev)
    where = rows_at(ids.shape[1], at)

    def head(module, args, kwargs):  # only each row's answer position reaches the output layer
        return (at_rows(args[0], at)[:, None].contiguous(), *args[1:]), kwargs

    with torch.no_grad(), hooked([(lm.head, "pre", head)]), answer_rows(where):
        logits = lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    return logits[:, -1].float()


def _pass_rows(lm: LM, width: int, tokens: int | None = None, most_rows: int | None = None) -> int:
    """How many rows of `width` padded tokens one pass holds (at least 1): at most `tokens` tokens (default
    ROW_TOKENS) and `most_rows` rows (default: LOGIT_FLOATS output logits, rows x vocabulary)."""
    tokens = ROW_TOKENS if tokens is None else tokens
    if most_rows is None:
        vocab = lm.head.weight.shape[0] if hasattr(lm.head, "weight") else 1
        most_rows = LOGIT_FLOATS // max(1, vocab)
    return max(1, min(most_rows, tokens // max(1, width)))


def length_passes(lm: LM, lengths: list[int], tokens: int | None = None, most_rows: int | None = None) -> list[list[int]]:
    """Row indices sorted by length, cut into passes of at most `tokens` padded tokens (default ROW_TOKENS;
    each pass's last row is its longest) and `most_rows` rows (default: LOGIT_FLOATS output logits;
    `_pass_rows`)."""
    order = sorted(range(len(lengths)), key=lambda r: lengths[r])
    out, start = [], 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and stop + 1 - start <= _pass_rows(lm, lengths[order[stop]], tokens, most_rows):
            stop += 1
        out.append(order[start:stop])
        start = stop
    return out


def _batched(lm: LM, rows: list[tuple[list[int], int]]):
    """Yield (row indices, distributions [n, vocab]) over `rows` (ids, answer position), a pass per `length_passes`."""
    pad = pad_id(lm)
    for chunk in length_passes(lm, [len(ids) for ids, _ in rows]):
        yield chunk, _rows_probs(lm, [rows[r] for r in chunk], pad)


def target_logits(lm: LM, pairs: Sequence[tuple[str, str]]):
    """Yield (pair index, token index, gold id, output logits [vocab] float32) for every answer token of every
    (prompt, answer) pair, read at the position that predicts it with the gold tokens before it fed
    (`kn.tokens.targets`), in few batched passes (rows sorted by length, so in no fixed order);
    interventions act at each row's own answer position, as in `batch_stats`."""
    rows, owner = _target_rows(lm, pairs)
    pad = pad_id(lm)
    for chunk in length_passes(lm, [len(ids) for ids, _ in rows]):
        for r, logits in zip(chunk, _rows_logits(lm, [rows[r] for r in chunk], pad)):
            yield (*owner[r], logits)


def _target_rows(lm: LM, pairs) -> tuple[list, list]:
    """One row (ids list, answer position) per answer token of each (prompt, answer) pair (its
    teacher-forced context, `kn.tokens.targets`), and its owner (pair index, token index, gold id)."""
    rows, owner = [], []
    for i, (p, a) in enumerate(pairs):
        for j, t in enumerate(targets(lm, p, a)):
            rows.append((t.ids[0].tolist(), t.pos))
            owner.append((i, j, t.gold))
    return rows, owner


def _gather(stats: list, owner: list, chunk: list[int], p: torch.Tensor) -> None:
    """Fold the distributions p [len(chunk), vocab] of rows `chunk` into stats [(prob, rank)] per pair:
    probabilities multiply over a pair's answer tokens, the rank is its first token's."""
    gold = torch.tensor([owner[r][2] for r in chunk], device=p.device)
    pg = p.gather(1, gold[:, None])
    ranks = (p > pg).sum(-1).tolist()
    for r, q, rk in zip(chunk, pg[:, 0].tolist(), ranks):
        i, j, _ = owner[r]
        prob, rank = stats[i]
        stats[i] = (prob * q, int(rk) if j == 0 else rank)


def batch_stats(lm: LM, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
    """`answer_stats` of many (prompt, answer) pairs in a few batched forward passes: one right-padded row
    per answer token (its teacher-forced context from `kn.tokens.targets`, read at its own position),
    rows sorted by length and cut into passes of at most ROW_TOKENS padded tokens. Interventions
    (`kn.scaled`, positions="answer") act at each row's own answer position, as in the pass per token."""
    rows, owner = _target_rows(lm, pairs)
    stats = [(1.0, -1)] * len(pairs)
    for chunk, p in _batched(lm, rows):
        _gather(stats, owner, chunk, p)
    return stats


Condition = Callable[[], AbstractContextManager]  # a context-manager factory (`batch_stats_under`)


def batch_stats_under(lm: LM, pairs: Sequence[tuple[str, str]],
                      conditions: Sequence[Condition]) -> list[list[tuple[float, int]]]:
    """`batch_stats` of `pairs` under each condition: out[c][i] = (P(answer), rank) of pair i inside
    `with conditions[c]():`, [len(conditions)][len(pairs)]. A condition is a context-manager factory,
    entered once per pass of rows. The row-stackable ones (`kn.interventions.is_stackable`:
    `contextlib.nullcontext`, `kn.interventions.stackable(lambda: kn.scaled(lm, neurons, f))`: acting at
    the answer-predicting position only) share passes in a causal LM: its rows (one per answer token,
    `kn.tokens.targets`) end at that position, so all but their last token run once per pass of rows
    ([rows, width - 1], right-padded, its key/value cache kept), then the last tokens of every condition
    at once over it ([conditions x rows, 1], each condition acting on its own block of rows; more passes
    if that exceeds ROW_TOKENS or LOGIT_FLOATS). Any other condition (a weight edit, positions="all"),
    and every condition of a masked LM, runs `batch_stats` inside it."""
    conditions = list(conditions)
    if not all(callable(c) and not isinstance(c, AbstractContextManager) for c in conditions):
        raise checks.ArgumentError("conditions must be context-manager factories (e.g. contextlib.nullcontext, "
                                   "lambda: kn.scaled(lm, neurons, 0)); pass callables, not entered contexts")
    pairs = list(pairs)
    shared = [c for c, f in enumerate(conditions) if is_stackable(f) and not lm.masked]
    out = dict(zip(shared, _stats_stacked(lm, pairs, [conditions[c] for c in shared]))) if shared else {}
    for c, f in enumerate(conditions):
        if c not in out:
            with f():
                out[c] = batch_stats(lm, pairs)
    return [out[c] for c in range(len(conditions))]


def _stats_stacked(lm: LM, pairs: list, conditions: list[Condition]) -> list[list[tuple[float, int]]]:
    """`batch_stats_under` of a causal LM's `pairs` under row-stackable `conditions` (`_batched_under`)."""
    rows, owner = _target_rows(lm, pairs)
    stats = [[(1.0, -1)] * len(pairs) for _ in conditions]
    for chunk, probs in _batched_under(lm, rows, conditions):
        for st, p in zip(stats, probs):
            _gather(st, owner, chunk, p)
    return stats


def _batched_under(lm: LM, rows: list[tuple[list[int], int]], conditions: list[Condition]):
    """Yield (row indices, [distributions [n, vocab] per condition]) over a causal LM's `rows` (ids,
    answer position = the last), per `length_passes` a prefix pass, then the conditions' last-token passes
    (`_last_token_probs`), as many conditions a pass as `_pass_rows` allows."""
    if any(pos != len(ids) - 1 for ids, pos in rows):
        raise ValueError("a causal LM's row must end at its answer-predicting position")
    pad = pad_id(lm)
    for chunk in length_passes(lm, [len(ids) for ids, _ in rows]):
        seqs = [rows[r][0] for r in chunk]
        stored, keep = prefix_cache(lm, seqs, pad)
        size = max(1, _pass_rows(lm, max(map(len, seqs))) // len(seqs))
        probs = []
        for c in range(0, len(conditions), size):
            probs += _last_token_probs(lm, seqs, stored, keep, conditions[c:c + size])
        yield chunk, probs


def prefix_cache(lm: LM, seqs: list[list[int]], pad: int) -> tuple[list | None, torch.Tensor]:
    """Run each row but its last token, right-padded, in one pass stopped before the output layer
    (answer-position interventions do not act: none of these is an answer position). Returns its per-layer (keys,
    values) [n, heads, width, head_dim] with each row's tokens in the last slots (`kvcache.right_aligned`)
    and keep [n, width] (bool); (None, [n, 0]) when every row is one token."""
    n, width = len(seqs), max(len(s) for s in seqs) - 1
    dev = lm.device
    if width == 0:
        return None, torch.zeros((n, 0), dtype=torch.bool, device=dev)
    ids, mask = right_padded([s[:-1] for s in seqs], pad, dev)
    cache = kvcache.empty(lm)
    with torch.no_grad(), answer_rows(torch.zeros((n, width), dtype=torch.bool, device=dev)):
        run_to_head(lm.model, [stop_at_head(lm, -1, {})], input_ids=ids, attention_mask=mask, use_cache=True,
                    **kvcache.keyword(lm.model, cache))
    return kvcache.right_aligned(kvcache.contents(cache), [len(s) - 1 for s in seqs])


def _last_token_probs(lm: LM, seqs: list[list[int]], stored: list | None, keep: torch.Tensor,
                      conditions: list[Condition]) -> list[torch.Tensor]:
    """Output distributions [n, vocab] of each row's last token run alone over the prefix cache `stored`
    (at its own position, attending to its own row's tokens only) under each condition, in one pass
    [len(conditions) x n, 1]: rows [c x n, (c + 1) x n) under condition c, entered inside `answer_rows`
    of that block so that its interventions act there only."""
    n, dev = len(seqs), lm.device
    size = n * len(conditions)
    ids = torch.tensor([[s[-1]] for s in seqs], device=dev).repeat(len(conditions), 1)
    mask = torch.cat([keep.to(dev).long(), torch.ones((n, 1), dtype=torch.long, device=dev)], dim=1)
    at = torch.tensor([[len(s) - 1] for s in seqs], device=dev).repeat(len(conditions), 1)
    cache = kvcache.fresh(lm, stored, [size] * len(stored or ()))
    block = torch.arange(size, device=dev)[:, None] // n  # [size, 1]: each row's condition
    with torch.no_grad(), ExitStack() as entered:
        for c, condition in enumerate(conditions):
            with answer_rows(block == c):
                entered.enter_context(condition())
        with answer_rows(torch.ones((size, 1), dtype=torch.bool, device=dev)):
            logits = lm.model(input_ids=ids, attention_mask=mask.repeat(len(conditions), 1),
                              use_cache=cache is not None, **kvcache.keyword(lm.model, cache),
                              **kvcache.positions(lm.model, at)).logits
    return list(torch.softmax(logits[:, -1].float(), dim=-1).split(n))


def batch_probe(lm: LM, prompts: Sequence[str], k: int = 10) -> list[list[Prediction]]:
    """`probe` of each prompt (top-k at its answer position), in a few batched forward passes."""
    k = checks.integer(k, "k", low=1, high=lm.tokenizer.vocab_size if hasattr(lm.tokenizer, "vocab_size") else None)
    rows = []
    for prompt in prompts:
        ids, pos = query(lm, prompt)
        rows.append((ids[0].tolist(), pos))
    out: list = [None] * len(rows)
    for chunk, p in _batched(lm, rows):
        top_p, top_i = p.topk(k, dim=-1)
        for r, ps, ix in zip(chunk, top_p.tolist(), top_i.tolist()):
            out[r] = [Prediction(lm.tokenizer.decode([j]).strip(), q, j) for q, j in zip(ps, ix)]
    return out


def batch_probs(lm: LM, prompts: Sequence[str], answers) -> list[float]:
    """`answer_prob` of each prompt with its answer (one for all, or one per prompt), batched (`batch_stats`)."""
    answers = [answers] * len(prompts) if isinstance(answers, str) else list(answers)
    if len(answers) != len(prompts):
        raise checks.ArgumentError(f"{len(prompts)} prompts but {len(answers)} answers; pass one answer or one per prompt")
    return [p for p, _ in batch_stats(lm, list(zip(prompts, answers)))]
