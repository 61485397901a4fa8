"""Prompts and answers to token ids: where the answer is predicted and which token is gold.

Causal LMs: the answer follows the prompt; a trailing space of the prompt belongs to the answer
token (" France"). Masked LMs: the prompt holds `[MASK]` once; an answer of k tokens becomes k mask
tokens. A multi-token answer is teacher-forced: token j is predicted with gold tokens 0..j-1 in place.

The data layer owns the text: an answer prepared from a template (`kn.data.templates.Continuation`,
separator included) is tokenized as given; a plain string gets its separator from
`kn.data.templates.continuation`, and `kn.data.prepare.continuation_ids` splits both.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import checks
from .data.prepare import continuation_ids, unknown_tokens
from .data.templates import MASK, continuation
from .models import LM


@dataclass(frozen=True)
class Target:
    """One answer token to predict: ids [1, seq], position that predicts it, gold token id, and the
    answer's span [start, end) in ids (masked: its slot, gold tokens before `pos` filled in; causal:
    the gold tokens teacher-forced so far, empty for the first)."""

    ids: torch.Tensor
    pos: int
    gold: int
    slot: tuple[int, int]


def max_positions(lm: LM) -> int | None:
    """The most tokens `lm` reads at once (its position embeddings'; RoBERTa's family offsets them by
    its padding index + 1); None for a model without such a limit in its config (ALiBi: BLOOM)."""
    cfg = lm.model.config
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    for attr in ("n_positions", "max_position_embeddings"):
        v = getattr(cfg, attr, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            if getattr(cfg, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
                v -= (getattr(cfg, "pad_token_id", None) or 0) + 1
            return v
    return None


def _fits(lm: LM, ids: list[int], prompt: str, what: str) -> None:
    limit = max_positions(lm)
    if limit is not None and len(ids) > limit:
        raise checks.ArgumentError(f"the prompt is too long for {lm.name}: {what} is {len(ids)} tokens and the model "
                                   f"reads at most {limit} positions; shorten it (it starts {prompt[:40]!r})")


def answer_ids(lm: LM, left: str, answer: str) -> list[int]:
    """Token ids of `answer` as it follows `left` (a `Continuation` as given, a plain string with the
    separator of `kn.data.templates.continuation`)."""
    checks.text(answer, "answer")
    ids, _ = continuation_ids(lm.tokenizer, left, continuation(left, answer))
    if unknown_tokens(lm.tokenizer, ids):
        raise ValueError(
            f"the tokenizer of {lm.name} cannot represent the answer {answer!r} (tokens: "
            f"{lm.tokenizer.convert_ids_to_tokens(ids)}); pick an answer made of known words"
        )
    return ids


def _split_mask(prompt: str) -> tuple[str, str]:
    n = prompt.count(MASK)
    if n != 1:
        raise ValueError(
            f"a masked-LM prompt needs exactly one {MASK} where the answer goes; found {n} in {prompt!r}"
        )
    left, right = prompt.split(MASK)
    return left, right


def _masked_ids(lm: LM, left: str, right: str, k: int) -> tuple[list[int], int]:
    """Ids of `left [MASK]*k right` with special tokens, and the first mask position."""
    tok = lm.tokenizer
    ids = tok(left + tok.mask_token + right)["input_ids"]
    pos = ids.index(tok.mask_token_id)
    return ids[:pos] + [tok.mask_token_id] * k + ids[pos + 1:], pos


def _causal_prefix(lm: LM, prompt: str) -> list[int]:
    if MASK in prompt:
        raise ValueError(f"{lm.name} is a causal LM: write the prompt up to the answer, without {MASK}")
    ids = lm.tokenizer(prompt.rstrip())["input_ids"]
    if not ids:
        raise ValueError("the prompt is empty")
    return ids


def targets(lm: LM, prompt: str, answer: str) -> list[Target]:
    """The answer tokens of `answer` after `prompt`, each with the context that predicts it."""
    checks.text(prompt, "prompt")
    dev = lm.device
    if lm.masked:
        left, right = _split_mask(prompt)
        gold = answer_ids(lm, left, answer)
        ids, pos = _masked_ids(lm, left, right, len(gold))
        _fits(lm, ids, prompt, "the prompt with its answer's masks")
        out = []
        for j, g in enumerate(gold):
            filled = ids[:pos] + gold[:j] + ids[pos + j:]
            out.append(Target(torch.tensor([filled], device=dev), pos + j, g, (pos, pos + len(gold))))
        return out
    prefix = _causal_prefix(lm, prompt)
    gold = answer_ids(lm, prompt, answer)
    seq = prefix + gold
    _fits(lm, seq[:-1], prompt, "the prompt with its answer but the last token")
    return [
        Target(torch.tensor([seq[: len(prefix) + j]], device=dev), len(prefix) + j - 1, g,
               (len(prefix), len(prefix) + j))
        for j, g in enumerate(gold)
    ]


def query(lm: LM, prompt: str) -> tuple[torch.Tensor, int]:
    """Ids [1, seq] of a prompt and the position whose prediction is the answer."""
    checks.text(prompt, "prompt")
    if lm.masked:
        left, right = _split_mask(prompt)
        ids, pos = _masked_ids(lm, left, right, 1)
    else:
        ids = _causal_prefix(lm, prompt)
        pos = len(ids) - 1
    _fits(lm, ids, prompt, "the prompt")
    return torch.tensor([ids], device=lm.device), pos


def pad_id(lm: LM) -> int:
    """The token id a right-padded batch fills its padding with (never a masked LM's [MASK])."""
    tok = lm.tokenizer
    for i in (tok.pad_token_id, tok.eos_token_id, 0):
        if i is not None and not (lm.masked and i == tok.mask_token_id):
            return int(i)
    raise ValueError(f"{lm.name}: no token id to pad a batch with")


def right_padded(seqs: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of token ids in one batch, row r's in slots [0, len_r): ids [n, width] (padding: `pad`)
    and the attention mask [n, width] (1 on a token, 0 on padding)."""
    n, width = len(seqs), max(len(s) for s in seqs)
    ids = torch.full((n, width), pad, dtype=torch.long, device=device)
    mask = torch.zeros((n, width), dtype=torch.long, device=device)
    for r, s in enumerate(seqs):
        ids[r, :len(s)] = torch.tensor(s, device=device)
        mask[r, :len(s)] = 1
    return ids, mask


def batch_inputs(lm: LM, ts: list[Target]) -> dict:
    """The model keywords of the targets' contexts as one batch: input_ids [n, width], right-padded
    with an attention_mask [n, width] when their lengths differ (row r's tokens in slots [0, len_r))."""
    seqs = [t.ids[0].tolist() for t in ts]
    if len({len(s) for s in seqs}) == 1:
        return dict(input_ids=torch.cat([t.ids for t in ts]))
    ids, mask = right_padded(seqs, pad_id(lm), lm.device)
    return dict(input_ids=ids, attention_mask=mask)
